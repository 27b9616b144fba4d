#!/usr/bin/env python
"""Model forward on this machine: the tiny and the full-size Charades
MMFTransformer at batch 1, 4 and 8 (eval mode, torch.inference_mode, fp32).

Prints the median time per sample and the fraction of the machine's measured
dense throughput the forward reaches: the model's FLOPs (counted by
torch.utils.flop_counter) over its time, against the best of a large fp32
matmul and a 3-D convolution timed here. Writes bench/results/model_forward.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
CONFIGS = {
    "tiny": ("projects/mmf_transformer/configs/charades/tiny.yaml", 8, 64, 64),
    "full": ("projects/mmf_transformer/configs/charades/direct.yaml", 16, 112, 224),
}


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine_gflops(repeats: int) -> dict[str, float]:
    """Measured fp32 throughput of a large matmul and a 3-D convolution."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = 2 * 2048**3 / timed(lambda: a @ b, repeats) / 1e9
    conv = torch.nn.Conv3d(64, 64, kernel_size=(1, 3, 3), padding=(0, 1, 1)).eval()
    x = torch.randn(4, 64, 8, 56, 56)
    with torch.inference_mode():
        conv_seconds = timed(lambda: conv(x), repeats)
    conv_flops = 2 * 64 * 64 * 9 * 4 * 8 * 56 * 56
    return {"matmul_gflops": matmul, "conv3d_gflops": conv_flops / conv_seconds / 1e9}


def bench_model(name: str, batch_sizes: list[int], repeats: int) -> list[dict]:
    from tests.conftest import build_model_from, random_batch

    config_path, frames, crop, audio = CONFIGS[name]
    model = build_model_from(ROOT / config_path).eval()
    num_labels = model.heads[0].num_labels
    rows = []
    for batch_size in batch_sizes:
        batch = random_batch(batch_size, num_labels, frames=frames, crop=crop, audio=audio)
        del batch["targets"]
        with torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                model(batch)
            seconds = timed(lambda inputs=batch: model(inputs), repeats)
        rows.append({"model": name, "batch": batch_size, "seconds_per_sample": seconds / batch_size,
                     "gflops_per_sample": counter.get_total_flops() / batch_size / 1e9})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["tiny", "full"], choices=list(CONFIGS))
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    peak = machine_gflops(args.repeats)
    best = max(peak.values())
    print(f"model forward, fp32, eval, inference_mode (median of {args.repeats})\nmachine: {machine}")
    print(f"measured: matmul {peak['matmul_gflops']:.0f} GFLOP/s, conv3d {peak['conv3d_gflops']:.0f} GFLOP/s\n")
    print(f"{'model':<6}{'batch':>6}{'ms/sample':>11}{'GFLOP/sample':>14}{'GFLOP/s':>9}{'of peak':>9}")
    rows = []
    for name in args.models:
        for row in bench_model(name, args.batch_sizes, args.repeats):
            row["gflops_per_second"] = row["gflops_per_sample"] / row["seconds_per_sample"]
            row["fraction_of_peak"] = row["gflops_per_second"] / best
            rows.append(row)
            print(f"{row['model']:<6}{row['batch']:>6}{row['seconds_per_sample'] * 1000:>11.1f}"
                  f"{row['gflops_per_sample']:>14.1f}{row['gflops_per_second']:>9.0f}{row['fraction_of_peak']:>9.0%}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model_forward.json").write_text(json.dumps({"machine": machine, "peak": peak, "rows": rows},
                                                           indent=1))
    print(f"saved {RESULTS / 'model_forward.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
