"""What each hostile upload costs the worker's preprocessing, bounded (the
handler's path with model-config.yaml's limits) against unbounded (no
limits, the whole clip stacked at full size before the transforms, as the
handler worked before the limits), for the full-size Charades pipeline.

Each measurement runs in a fresh process: wall time, the peak resident
memory it added over the process after imports, and the outcome (a clip, or
the error the client gets). Unbounded runs stop after ``--timeout`` seconds.
Prints a table and writes bench/results/hostile.json.

    python -m bench.hostile [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import DIRECT_CONFIG, MODEL_CONFIG, last_json_line, machine, peak_rss_mb, run_module, save_results
from devtools import hostile_inputs
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.video_clips import UNBOUNDED, DecodeLimits, VideoDecodeError, decode_clip
from minimmf.serving.settings import HandlerSettings
from minimmf.utils.configuration import build_config

MODES = ("bounded", "unbounded")


def make_inputs(folder: Path) -> dict[str, Path]:
    return {
        "4096x4096 frame (mp4)": hostile_inputs.huge_frame_video(folder / "huge.mp4"),
        "100,000 static 1080p frames (mp4)": hostile_inputs.many_frames_video(folder / "many.mp4"),
        "20,000 static 1080p frames (mpeg-ts)": hostile_inputs.many_frames_video(folder / "many.ts", frames=20_000),
        "sample tables claim 40 M frames": hostile_inputs.sample_table_bomb(folder / "bomb.mp4"),
        "resolution change (mpeg-ts)": hostile_inputs.resolution_change_video(folder / "switch.ts"),
    }


def handler_limits() -> DecodeLimits:
    """The decode limits model-config.yaml gives the handler."""
    settings = HandlerSettings.from_model_yaml(yaml.safe_load(MODEL_CONFIG.read_text()))
    return DecodeLimits(settings.max_frame_pixels, settings.max_frames, settings.max_decode_seconds,
                        setting_prefix="handler.")


def run_worker(mode: str, video: Path) -> dict:
    """In this process: one upload through the bounded or the unbounded preprocessing."""
    limits = handler_limits() if mode == "bounded" else UNBOUNDED
    maker = CharadesBuilder.inference_sample_maker(build_config(DIRECT_CONFIG).dataset_config.charades, limits)
    data = video.read_bytes()
    baseline = peak_rss_mb()
    started = time.perf_counter()
    try:
        if mode == "bounded":
            shape = maker(data, "a script").video.shape
        else:
            shape = maker.video_processor(decode_clip(data, 16, 1000, UNBOUNDED).video).shape
        outcome = f"clip {tuple(shape)}"
    except VideoDecodeError as error:
        outcome = f"400: {error}"
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_added_mb": peak_rss_mb() - baseline, "outcome": outcome}


def measure(mode: str, video: Path, timeout: float) -> dict:
    try:
        result = run_module("bench.hostile", "--worker", mode, str(video), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "peak_added_mb": None, "outcome": f"still decoding after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"seconds": None, "peak_added_mb": None, "outcome": f"crashed: {result.stderr.strip()[-200:]}"}
    return last_json_line(result.stdout)


def print_result(name: str, size: int, mode: str, result: dict) -> None:
    seconds = f"{result['seconds']:7.2f} s" if result["seconds"] is not None else "      - "
    memory = f"{result['peak_added_mb']:7.0f} MB" if result["peak_added_mb"] is not None else "      - "
    print(f"{name:<38}{size:>11,} B  {mode:<10}{seconds}{memory}  {result['outcome'][:90]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], Path(args.worker[1]))))
        return 0
    line = machine("python")
    print(f"hostile uploads through the full-size preprocessing, bounded vs unbounded\nmachine: {line}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_inputs(Path(tmp)).items():
            row = {"input": name, "bytes": path.stat().st_size}
            for mode in MODES:
                row[mode] = measure(mode, path, args.timeout)
                print_result(name, row["bytes"], mode, row[mode])
            rows.append(row)
    print(f"saved {save_results('hostile', {'machine': line, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
