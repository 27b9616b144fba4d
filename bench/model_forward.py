"""Model forward on this machine, per serving mode: the tiny and the
full-size Charades MMFTransformer at batch 1, 4 and 8 (eval mode,
torch.inference_mode), as built in fp32 and in each of the handler's modes
(fp32, bf16, int8; eager or compiled by pt2 compile, warmed up first), with
each mode's largest score difference from plain fp32.

Prints the median time per sample and the fraction of the machine's dense
throughput the forward reaches: the model's FLOPs (counted by
torch.utils.flop_counter) over its time, against the peak of the mode's own
precision (the best of a large matmul and a 3-D convolution in fp32, bf16 or
int8, timed in the same run). Writes bench/results/model_forward.json.

    python -m bench.model_forward [--models tiny full] [--batch-sizes 1 4 8] [--repeats 3] [--modes ...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    MODES,
    ROOT,
    machine,
    machine_peaks,
    median_seconds,
    mode_runner,
    own_peak,
    peaks_line,
    save_results,
    tensors,
)
from devtools.samples import random_sample_list
from minimmf.utils.build import build_model
from minimmf.utils.configuration import build_config

CONFIGS = {
    "tiny": ("projects/mmf_transformer/configs/charades/tiny.yaml", 8, 64, 64),
    "full": ("projects/mmf_transformer/configs/charades/direct.yaml", 16, 112, 224),
}


def bench_model(name: str, modes: list[str], batch_sizes: list[int], repeats: int) -> list[dict]:
    config_path, frames, crop, audio = CONFIGS[name]
    base = build_model(build_config(ROOT / config_path)).eval()
    batches = {batch_size: random_sample_list(batch_size, frames=frames, crop=crop, audio=audio)
               for batch_size in batch_sizes}
    flops, reference = {}, {}
    with torch.inference_mode():
        for batch_size, batch in batches.items():
            with FlopCounterMode(display=False) as counter:
                reference[batch_size] = base(batch)["scores"]
            flops[batch_size] = counter.get_total_flops()
    rows = []
    for mode in modes:
        started = time.perf_counter()
        runner = mode_runner(copy.deepcopy(base), mode, lambda size: tensors(random_sample_list(
            size, frames=frames, crop=crop, audio=audio)), max(batch_sizes))
        prepare_seconds = time.perf_counter() - started
        for batch_size, batch in batches.items():
            inputs = tensors(batch)
            with torch.inference_mode():
                scores = runner(inputs)
                seconds = median_seconds(lambda inputs=inputs, runner=runner: runner(inputs), repeats)
            rows.append({"model": name, "variant": mode, "batch": batch_size,
                         "seconds_per_sample": seconds / batch_size,
                         "gflops_per_sample": flops[batch_size] / batch_size / 1e9,
                         "max_score_diff": float((scores - reference[batch_size]).abs().max()),
                         "prepare_seconds": prepare_seconds, "warm_up": runner.warm_up})
    return rows


def print_row(row: dict) -> None:
    print(f"{row['model']:<6}{row['variant']:>20}{row['batch']:>6}{row['seconds_per_sample'] * 1000:>11.1f}"
          f"{row['gflops_per_sample']:>14.1f}{row['gflops_per_second']:>9.0f}{row['fraction_of_peak']:>9.0%}"
          f"{row['max_score_diff']:>10.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["tiny", "full"], choices=list(CONFIGS))
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    line = machine(threads=True)
    peaks = machine_peaks(args.repeats)
    print(f"model forward per serving mode, eval, inference_mode (median of {args.repeats})\nmachine: {line}")
    print(peaks_line(peaks) + "\n")
    print(f"{'model':<6}{'variant':>20}{'batch':>6}{'ms/sample':>11}{'GFLOP/sample':>14}{'GFLOP/s':>9}"
          f"{'of peak':>9}{'max diff':>10}")
    rows = []
    for name in args.models:
        for row in bench_model(name, args.modes, args.batch_sizes, args.repeats):
            row["gflops_per_second"] = row["gflops_per_sample"] / row["seconds_per_sample"]
            row["fraction_of_peak"] = row["gflops_per_second"] / own_peak(peaks, row["variant"])
            rows.append(row)
            print_row(row)
    print(f"saved {save_results('model_forward', {'machine': line, 'peaks': peaks, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
