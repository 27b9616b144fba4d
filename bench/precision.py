"""Faster inference modes against fp32, on the synthetic validation set.

For the demo model (./save) and a full-size Charades model with random
weights, every held-out video of ./data is preprocessed once, then scored in
batches of 4 by each mode: plain fp32, the shipped fp32 fast path
(channels-last encoders), and the handler's opt-in modes (bf16 autocast,
int8 dynamic quantization of the BERT linears). Reported: time per
sample, speed-up over plain fp32, label agreement with fp32 (same label set
at the dataset's prediction_threshold) and the largest probability difference. Writes
bench/results/precision.json.

    python -m bench.precision [--save-dir save] [--data-dir data] [--models demo full] [--videos N]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import add_demo_arguments, full_size_model, machine, require_demo_model, run_file, save_results
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.layout import CharadesLayout
from minimmf.datasets.video_clips import UNBOUNDED
from minimmf.serving.predictor import autocast_for
from minimmf.utils.build import build_model
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config

MODES = {
    "fp32": {},
    "fp32 channels_last (shipped)": {"channels_last": True},
    "bf16": {"channels_last": True, "precision": "bf16"},
    "int8 BERT": {"channels_last": True, "quantize": True},
}


def validation_batches(config, data_dir: Path, videos: int | None, batch_size: int = 4) -> list[SampleList]:
    """The first ``videos`` held-out videos (None: all), preprocessed once, in batches."""
    df = CharadesLayout.default(data_dir).read_split("test").head(videos)
    maker = CharadesBuilder.inference_sample_maker(config.dataset_config.charades, UNBOUNDED)
    samples = [maker(row.path, row.script) for row in df.itertuples()]
    return [SampleList(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]


def score(model, batches: list[SampleList], precision: str) -> tuple[torch.Tensor, float]:
    device = torch.device("cpu")
    with torch.inference_mode(), autocast_for(device, precision):
        model(batches[0])  # warm-up
        started = time.perf_counter()
        scores = torch.cat([model(batch)["scores"].float() for batch in batches])
    return torch.sigmoid(scores), time.perf_counter() - started


def print_row(row: dict) -> None:
    print(f"{row['model']:<5}{row['mode']:>30}{row['ms_per_sample']:>10.0f}{row['speedup']:>9.2f}x"
          f"{row['label_agreement']:>11.1%}{row['max_probability_diff']:>11.4f}", flush=True)


def compare(name: str, config, weights: Path, data_dir: Path, videos: int | None) -> list[dict]:
    """Each mode of MODES against the first (plain fp32), on the same batches."""
    base = build_model(config)
    base.load_state_dict(load_checkpoint_file(weights))
    base.eval()
    batches = validation_batches(config, data_dir, videos)
    count = sum(batch.get_batch_size() for batch in batches)
    threshold = float(config.dataset_config.charades.get("prediction_threshold", 0.5))  # the handler's default
    rows, reference, reference_seconds = [], None, None
    for mode, options in MODES.items():
        model = copy.deepcopy(base).prepare_for_inference(channels_last=options.get("channels_last", False),
                                                          quantize=options.get("quantize", False))
        probabilities, seconds = score(model, batches, options.get("precision", "fp32"))
        if reference is None:
            reference, reference_seconds = probabilities, seconds
        same_labels = ((probabilities >= threshold) == (reference >= threshold)).all(dim=1)
        rows.append({"model": name, "mode": mode, "videos": count, "ms_per_sample": seconds / count * 1000,
                     "speedup": reference_seconds / seconds, "label_agreement": float(same_labels.float().mean()),
                     "max_probability_diff": float((probabilities - reference).abs().max())})
        print_row(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--models", nargs="*", default=["demo", "full"], choices=["demo", "full"])
    parser.add_argument("--videos", type=int, help="the first N held-out videos only (default: all)")
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    line = machine()
    print(f"inference modes against fp32 on the synthetic validation set (batches of 4)\nmachine: {line}\n")
    print(f"{'model':<5}{'mode':>30}{'ms/sample':>10}{'speed-up':>10}{'agreement':>11}{'max diff':>11}")
    rows = []
    if "demo" in args.models:
        rows += compare("demo", build_config(run_file(args.save_dir, "config")), run_file(args.save_dir, "weights"),
                        args.data_dir, args.videos)
    if "full" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            save_dir, weights = full_size_model(Path(tmp))
            rows += compare("full", build_config(save_dir / "config.yaml"), weights, args.data_dir, args.videos)
    path = save_results("precision", {"machine": line, "rows": rows})
    print(f"saved {path}\n(the full-size model has random weights: its agreement measures "
          "numerical drift, not accuracy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
