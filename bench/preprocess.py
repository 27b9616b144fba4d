"""Preprocessing one request: ours against the reference approach and the
decode-only floor, on generated H.264 + AAC videos (10 s, 30 s, 120 s at
480p) and on the real files in ../shared/data.

- ours: the handler's path (streaming decode of the 16 kept frames and the
  1,000 audio samples the pipeline reads, then the Charades processors);
- reference: every frame decoded to RGB and every frame transformed, as the
  pytorch/serve handler did with torchvision.io.read_video;
- floor: PyAV demux + decode of every video frame, no conversion.

Each measurement runs in a fresh process: the median of ``--repeats`` runs,
and the peak resident memory the run added over the process after imports.
Prints a table and writes bench/results/preprocess.json.

    python -m bench.preprocess [--repeats 3] [--seconds 10 30 120]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from bench.common import (
    DIRECT_CONFIG,
    SCRIPT,
    SHARED_DATA,
    current_rss_mb,
    last_json_line,
    machine,
    make_video,
    peak_rss_mb,
    run_module,
    save_results,
    timings,
)
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker
from minimmf.datasets.video_clips import UNBOUNDED
from minimmf.utils.configuration import build_config

METHODS = ("ours", "reference", "floor")
SHARED_VIDEOS = ("flipping_a_pancake.mkv", "video_90.mov")
# the reference approach holds every frame as float32: skip it where that cannot fit in memory
REFERENCE_MAX_SECONDS = 60


# ------------------------------------------------------------------ workers


def reference(maker: CharadesSampleMaker, data: bytes, script: str) -> torch.Size:
    """pytorch/serve's way: every frame and all the audio decoded, then transformed."""
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(io.BytesIO(data)) as container:
        audio = [f.to_ndarray() for f in container.decode(audio=0)] if container.streams.audio else []
    video_tensor = torch.from_numpy(np.stack(frames))
    audio_tensor = torch.from_numpy(np.concatenate(audio, axis=1)) if audio else torch.zeros(1, 0)
    processed = maker.video_processor(video_tensor)
    maker.audio_processor(audio_tensor)
    maker.text_processor({"text": script})
    return processed.shape


def floor(data: bytes) -> int:
    """Demux and decode every video frame, nothing else."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def method_function(method: str, data: bytes) -> Callable[[], object]:
    """``method`` on ``data``, ready to time."""
    maker = CharadesBuilder.inference_sample_maker(build_config(DIRECT_CONFIG).dataset_config.charades, UNBOUNDED)
    return {"ours": lambda: maker(data, SCRIPT).video.shape,
            "reference": lambda: reference(maker, data, SCRIPT),
            "floor": lambda: floor(data)}[method]


def run_worker(method: str, video: Path, repeats: int) -> dict:
    """In this process: the median time of ``method`` on ``video`` and the peak memory it added."""
    function = method_function(method, video.read_bytes())
    function()  # warm-up (first-call costs), then reset the peak
    baseline = current_rss_mb()
    peak_before = peak_rss_mb()
    times = timings(function, repeats, warm_up=False)
    peak = max(peak_rss_mb(), peak_before)
    return {"median_s": statistics.median(times), "peak_mb": peak - baseline, "repeats": repeats}


def measure(method: str, video: Path, repeats: int) -> dict:
    """Run one method on one video in a fresh process (clean peak memory)."""
    result = run_module("bench.preprocess", "--worker", method, str(video), "--repeats", str(repeats))
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return last_json_line(result.stdout)


# -------------------------------------------------------------------- main


def videos_to_measure(seconds: list[int]) -> dict[str, tuple[Path, int]]:
    """Name -> (path, seconds; 0 for the real files) of every video measured."""
    videos = {f"{s} s 854x480 H.264+AAC": (make_video(s), s) for s in seconds}
    for name in SHARED_VIDEOS:
        if (SHARED_DATA / name).is_file():
            videos[name] = (SHARED_DATA / name, 0)
    return videos


def measure_video(name: str, path: Path, seconds: int, repeats: int) -> dict:
    row = {"video": name}
    for method in METHODS:
        if method == "reference" and seconds > REFERENCE_MAX_SECONDS:
            row[method] = {"skipped": f"needs every frame as float32 (> {REFERENCE_MAX_SECONDS} s of 480p)"}
        else:
            row[method] = measure(method, path, repeats)
    return row


def _cell(value: float | None, decimals: int) -> str:
    return f"{value:13.{decimals}f}" if value is not None else f"{'-':>13}"


def print_row(row: dict) -> None:
    ours_s, floor_s = row["ours"].get("median_s"), row["floor"].get("median_s")
    ref_s = row["reference"].get("median_s")
    vs_floor = f"{ours_s / floor_s:9.2f}x" if ours_s and floor_s else f"{'-':>10}"
    vs_ref = f"{ref_s / ours_s:8.1f}x" if ours_s and ref_s else f"{'-':>9}"
    cells = "".join(_cell(row[m].get("median_s"), 3) + _cell(row[m].get("peak_mb"), 0) for m in METHODS)
    print(f"{row['video']:<28}{cells}{vs_floor}{vs_ref}")


def print_memory_growth(rows: list[dict]) -> None:
    """Peak memory of ours on 120 s against 30 s (flat: the decode streams)."""
    by_seconds = {r["video"].split(" ")[0]: r for r in rows if " s " in r["video"]}
    if "30" in by_seconds and "120" in by_seconds:
        ratio = by_seconds["120"]["ours"]["peak_mb"] / max(by_seconds["30"]["ours"]["peak_mb"], 1e-9)
        print(f"\nours: peak memory of 120 s / 30 s = {ratio:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, nargs="*", default=[10, 30, 120])
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], Path(args.worker[1]), args.repeats)))
        return 0

    videos = videos_to_measure(args.seconds)
    line = machine("python")
    print(f"preprocessing one request (median of {args.repeats}; peak = memory added by the run)\nmachine: {line}\n")
    columns = "".join(f"{m + ' s':>13}{m + ' MB':>13}" for m in METHODS)
    print(f"{'video':<28}{columns}{'vs floor':>10}{'vs ref':>9}")
    rows = []
    for name, (path, seconds) in videos.items():
        rows.append(measure_video(name, path, seconds, args.repeats))
        print_row(rows[-1])
    path = save_results("preprocess", {"machine": line, "rows": rows})
    print_memory_growth(rows)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
