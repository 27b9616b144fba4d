#!/usr/bin/env python
"""Faster inference modes against fp32, on the synthetic validation set.

For the demo model (./save) and a full-size Charades model with random
weights, every held-out video of ./data is preprocessed once, then scored in
batches of 4 by each mode: plain fp32, the shipped fp32 fast path
(channels-last encoders), and the handler's opt-in modes (bf16 autocast,
int8 dynamic quantization of the BERT linears). Reported: time per
sample, speed-up over plain fp32, label agreement with fp32 (same label set
at the threshold) and the largest probability difference. Writes
bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import full_size_model, has_demo_model  # noqa: E402
from minimmf.common.sample import SampleList  # noqa: E402
from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker  # noqa: E402
from minimmf.datasets.builders.charades.layout import CharadesLayout  # noqa: E402
from minimmf.serving.predictor import autocast_for, quantize_bert, use_channels_last  # noqa: E402
from minimmf.utils.build import build_model, build_processors  # noqa: E402
from minimmf.utils.checkpoint import load_checkpoint_file  # noqa: E402
from minimmf.utils.configuration import build_config  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODES = {
    "fp32": {},
    "fp32 channels_last (shipped)": {"channels_last": True},
    "bf16": {"channels_last": True, "precision": "bf16"},
    "int8 BERT": {"channels_last": True, "quantize": True},
}


def validation_batches(config, data_dir: Path, batch_size: int = 4) -> list[SampleList]:
    df = CharadesLayout.default(data_dir).read_split("test")
    charades = config.dataset_config.charades
    maker = CharadesSampleMaker(build_processors(charades.processors), "test", int(charades.frames_per_clip))
    samples = [maker(row.path, row.script) for row in df.itertuples()]
    return [SampleList(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]


def score(model, batches: list[SampleList], precision: str) -> tuple[torch.Tensor, float]:
    device = torch.device("cpu")
    with torch.inference_mode(), autocast_for(device, precision):
        model(batches[0])  # warm-up
        started = time.perf_counter()
        scores = torch.cat([model(batch)["scores"].float() for batch in batches])
    return torch.sigmoid(scores), time.perf_counter() - started


def compare(name: str, config, weights: Path, data_dir: Path, threshold: float) -> list[dict]:
    base = build_model(config)
    base.load_state_dict(load_checkpoint_file(weights))
    base.eval()
    batches = validation_batches(config, data_dir)
    count = sum(batch.get_batch_size() for batch in batches)
    rows, reference, reference_seconds = [], None, None
    for mode, options in MODES.items():
        model = copy.deepcopy(base)
        if options.get("channels_last"):
            use_channels_last(model)
        if options.get("quantize"):
            quantize_bert(model)
        probabilities, seconds = score(model, batches, options.get("precision", "fp32"))
        if reference is None:
            reference, reference_seconds = probabilities, seconds
        same_labels = ((probabilities >= threshold) == (reference >= threshold)).all(dim=1)
        rows.append({"model": name, "mode": mode, "videos": count, "ms_per_sample": seconds / count * 1000,
                     "speedup": reference_seconds / seconds, "label_agreement": float(same_labels.float().mean()),
                     "max_probability_diff": float((probabilities - reference).abs().max())})
        row = rows[-1]
        print(f"{name:<5}{mode:>30}{row['ms_per_sample']:>10.0f}{row['speedup']:>9.2f}x"
              f"{row['label_agreement']:>11.1%}{row['max_probability_diff']:>11.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    if not has_demo_model(args.save_dir, args.data_dir):
        print("error: needs the demo model and data; run `make demo` (or scripts/train.sh) first", file=sys.stderr)
        return 2
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"inference modes against fp32 on the synthetic validation set (batches of 4)\nmachine: {machine}\n")
    print(f"{'model':<5}{'mode':>30}{'ms/sample':>10}{'speed-up':>10}{'agreement':>11}{'max diff':>11}")
    rows = compare("demo", build_config(args.save_dir / "config.yaml"), args.save_dir / "mmf_transformer_final.pth",
                   args.data_dir, threshold=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        save_dir, weights, _ = full_size_model(Path(tmp))
        rows += compare("full", build_config(save_dir / "config.yaml"), weights, args.data_dir, threshold=0.5)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"saved {RESULTS / 'precision.json'}\n(the full-size model has random weights: its agreement measures "
          "numerical drift, not accuracy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
