"""The serving modes against fp32, on the synthetic validation set.

For the demo model (./save) and a full-size Charades model, every held-out
video of ./data is preprocessed once, then scored in batches of 4 by each of the handler's
modes (bench.common.MODES: fp32, bf16, int8; eager or compiled as pt2
compile does it, warmed up first). Reported per mode: time per sample,
speed-up over fp32, the fraction of the mode's own precision's peak (the
model's FLOPs over its time, against matmul and Conv3d peaks measured in the
same run), label agreement with fp32 (the same label set at the dataset's
prediction_threshold), the largest probability difference, whether every
label that changed had an fp32 probability within that difference of the
threshold, and the video-level mAP. Writes bench/results/precision.json.

    python -m bench.precision [--save-dir save] [--data-dir data] [--models demo full] [--videos N]
        [--full-save-dir DIR] [--modes ...]

The full-size model is a run trained on the same data (--full-save-dir), or
else MMF's Charades model with random weights: then its figures measure
speed and numerical drift only (every probability is near 0.5, and it has
no mAP on the synthetic classes).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    MODES,
    add_demo_arguments,
    full_size_model,
    has_demo_model,
    machine,
    machine_peaks,
    mode_runner,
    own_peak,
    peaks_line,
    require_demo_model,
    run_file,
    save_results,
    tensors,
)
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.layout import CharadesLayout
from minimmf.datasets.video_clips import UNBOUNDED
from minimmf.modules.metrics import mean_average_precision
from minimmf.utils.build import build_model
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config


def validation_batches(config, data_dir: Path, labels: Path, videos: int | None,
                       batch_size: int = 4) -> tuple[list[SampleList], torch.Tensor | None]:
    """The first ``videos`` held-out videos (None: all), preprocessed once, in
    batches, and their multi-hot targets (None when the model's classes are
    not the data's)."""
    df = CharadesLayout.default(data_dir).read_split("test").head(videos)
    maker = CharadesBuilder.inference_sample_maker(config.dataset_config.charades, UNBOUNDED)
    samples = [maker(row.path, row.script) for row in df.itertuples()]
    batches = [SampleList(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    classes = CharadesBuilder.read_class_list(labels)
    if not set().union(*df.action_labels) <= set(classes):
        return batches, None
    targets = torch.zeros(len(df), len(classes))
    for row, labels in enumerate(df.action_labels):
        targets[row, [classes.index(label) for label in labels]] = 1
    return batches, targets


def score(runner, batches: list[SampleList]) -> tuple[torch.Tensor, float]:
    with torch.inference_mode():
        runner(tensors(batches[0]))  # first-call costs
        started = time.perf_counter()
        scores = torch.cat([runner(tensors(batch)) for batch in batches])
    return torch.sigmoid(scores), time.perf_counter() - started


def flops_per_sample(model: torch.nn.Module, batch: SampleList) -> float:
    """The model's FLOPs per sample on ``batch`` (torch.utils.flop_counter)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / len(batch["video"])


def print_row(row: dict) -> None:
    print(f"{row['model']:<5}{row['mode']:>15}{row['ms_per_sample']:>10.0f}{row['speedup']:>9.2f}x"
          f"{row['fraction_of_peak']:>9.0%}{row['label_agreement']:>11.1%}{row['max_probability_diff']:>11.4f}"
          f"{str(row['changed_labels_near_threshold']):>8}"
          + (f"{row['map']:>8.4f}" if row["map"] is not None else f"{'-':>8}"), flush=True)


def compare(name: str, save_dir: Path, weights: Path, data_dir: Path, videos: int | None, modes: list[str],
            peaks: dict[str, float]) -> list[dict]:
    """Each of ``modes`` against fp32 (eager, as shipped), on the same batches."""
    config = build_config(run_file(save_dir, "config"))
    base = build_model(config)
    base.load_state_dict(load_checkpoint_file(weights))
    base.eval()
    batches, targets = validation_batches(config, data_dir, run_file(save_dir, "labels"), videos)
    count = sum(len(batch["video"]) for batch in batches)
    gflops = flops_per_sample(base, batches[0]) / 1e9
    threshold = float(config.dataset_config.charades.get("prediction_threshold", 0.5))  # the handler's default
    example = batches[0]
    rows, reference, reference_seconds = [], None, None
    for mode in ["fp32", *[mode for mode in modes if mode != "fp32"]]:
        started = time.perf_counter()
        runner = mode_runner(copy.deepcopy(base), mode, lambda size: repeated(example, size), 4)
        prepare_seconds = time.perf_counter() - started
        probabilities, seconds = score(runner, batches)
        if reference is None:
            reference, reference_seconds = probabilities, seconds
        difference = float((probabilities - reference).abs().max())
        changed = (probabilities >= threshold) != (reference >= threshold)
        rows.append({"model": name, "mode": mode, "videos": count, "ms_per_sample": seconds / count * 1000,
                     "speedup": reference_seconds / seconds, "gflops_per_sample": gflops,
                     "fraction_of_peak": gflops * count / seconds / own_peak(peaks, mode),
                     "label_agreement": float((~changed).all(dim=1).float().mean()),
                     "max_probability_diff": difference,
                     "changed_labels_near_threshold": bool(
                         ((reference[changed] - threshold).abs() <= difference).all()),
                     "map": mean_average_precision(probabilities, targets) if targets is not None else None,
                     "probability_spread": float(reference.std()),
                     "prepare_seconds": prepare_seconds, "warm_up": runner.warm_up})
        print_row(rows[-1])
    return rows


def repeated(batch: SampleList, size: int) -> dict:
    """The batch's first sample ``size`` times (the warm-up's inputs)."""
    return {name: value[:1].repeat(size, *[1] * (value.dim() - 1)) for name, value in tensors(batch).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--models", nargs="*", default=["demo", "full"], choices=["demo", "full"])
    parser.add_argument("--videos", type=int, help="the first N held-out videos only (default: all)")
    parser.add_argument("--full-save-dir", type=Path,
                        help="a full-size run trained on the same data (default: random weights)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the peak measurements")
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    if args.full_save_dir and not has_demo_model(args.full_save_dir, args.data_dir):
        print(f"error: no trained run in {args.full_save_dir} (or no test split in {args.data_dir})",
              file=sys.stderr)
        return 2
    line = machine(threads=True)
    peaks = machine_peaks(args.repeats)
    print(f"inference modes against fp32 on the synthetic validation set (batches of 4)\nmachine: {line}")
    print(peaks_line(peaks) + "\n")
    print(f"{'model':<5}{'mode':>15}{'ms/sample':>10}{'speed-up':>10}{'of peak':>9}{'agreement':>11}"
          f"{'max diff':>11}{'near':>8}{'mAP':>8}")
    rows = []
    if "demo" in args.models:
        rows += compare("demo", args.save_dir, run_file(args.save_dir, "weights"), args.data_dir, args.videos,
                        args.modes, peaks)
    if "full" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            save_dir, weights = ((args.full_save_dir, run_file(args.full_save_dir, "weights")) if args.full_save_dir
                                 else full_size_model(Path(tmp)))
            rows += compare("full", save_dir, weights, args.data_dir, args.videos, args.modes, peaks)
    print(f"saved {save_results('precision', {'machine': line, 'peaks': peaks, 'rows': rows})}")
    if "full" in args.models and not args.full_save_dir:
        print("(the full-size model has random weights: its agreement measures numerical drift, not accuracy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
