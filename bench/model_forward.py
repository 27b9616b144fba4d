"""Model forward on this machine: the tiny and the full-size Charades
MMFTransformer at batch 1, 4 and 8 (eval mode, torch.inference_mode, fp32),
as built, and with the serving fast path (channels-last convolution weights,
the handler's default), whose largest score difference from the plain model
is reported.

Prints the median time per sample and the fraction of the machine's measured
dense throughput the forward reaches: the model's FLOPs (counted by
torch.utils.flop_counter) over its time, against the best of a large fp32
matmul and a 3-D convolution timed here. Writes bench/results/model_forward.json.

    python -m bench.model_forward [--models tiny full] [--batch-sizes 1 4 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import ROOT, machine, median_seconds, save_results
from devtools.samples import random_sample_list
from minimmf.utils.build import build_model
from minimmf.utils.configuration import build_config

CONFIGS = {
    "tiny": ("projects/mmf_transformer/configs/charades/tiny.yaml", 8, 64, 64),
    "full": ("projects/mmf_transformer/configs/charades/direct.yaml", 16, 112, 224),
}


def machine_gflops(repeats: int) -> dict[str, float]:
    """Measured fp32 throughput: the best of large matmuls and of channels-last 3-D convolutions."""
    matmul = 0.0
    for size in (2048, 4096):
        a, b = torch.randn(size, size), torch.randn(size, size)
        matmul = max(matmul, 2 * size**3 / median_seconds(lambda a=a, b=b: a @ b, repeats) / 1e9)
    conv3d = 0.0
    for channels, kernel, shape in ((64, (1, 3, 3), (4, 64, 8, 56, 56)), (128, (3, 3, 3), (2, 128, 8, 28, 28))):
        conv = torch.nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel)).eval()
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last_3d)
        flops = 2 * channels * channels * kernel[0] * kernel[1] * kernel[2] * x.numel() / channels
        with torch.inference_mode():
            conv3d = max(conv3d, flops / median_seconds(lambda conv=conv, x=x: conv(x), repeats) / 1e9)
    return {"matmul_gflops": matmul, "conv3d_gflops": conv3d}


def bench_model(name: str, batch_sizes: list[int], repeats: int) -> list[dict]:
    config_path, frames, crop, audio = CONFIGS[name]
    model = build_model(build_config(ROOT / config_path)).eval()
    batches = {batch_size: random_sample_list(batch_size, frames=frames, crop=crop, audio=audio)
               for batch_size in batch_sizes}
    rows, reference = [], {}
    for variant in ("fp32", "fp32 channels_last"):
        if variant.endswith("channels_last"):
            model.prepare_for_inference(channels_last=True)
        for batch_size, batch in batches.items():
            with torch.inference_mode():
                with FlopCounterMode(display=False) as counter:
                    scores = model(batch)["scores"]
                seconds = median_seconds(lambda inputs=batch: model(inputs), repeats)
            reference.setdefault(batch_size, scores)
            rows.append({"model": name, "variant": variant, "batch": batch_size,
                         "seconds_per_sample": seconds / batch_size,
                         "gflops_per_sample": counter.get_total_flops() / batch_size / 1e9,
                         "max_score_diff": float((scores - reference[batch_size]).abs().max())})
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
    args = parser.parse_args(argv)
    line = machine(threads=True)
    peak = machine_gflops(args.repeats)
    best = max(peak.values())
    print(f"model forward, fp32, eval, inference_mode (median of {args.repeats})\nmachine: {line}")
    print(f"measured: matmul {peak['matmul_gflops']:.0f} GFLOP/s, conv3d {peak['conv3d_gflops']:.0f} GFLOP/s\n")
    print(f"{'model':<6}{'variant':>20}{'batch':>6}{'ms/sample':>11}{'GFLOP/sample':>14}{'GFLOP/s':>9}"
          f"{'of peak':>9}{'max diff':>10}")
    rows = []
    for name in args.models:
        for row in bench_model(name, args.batch_sizes, args.repeats):
            row["gflops_per_second"] = row["gflops_per_sample"] / row["seconds_per_sample"]
            row["fraction_of_peak"] = row["gflops_per_second"] / best
            rows.append(row)
            print_row(row)
    print(f"saved {save_results('model_forward', {'machine': line, 'peak': peak, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
