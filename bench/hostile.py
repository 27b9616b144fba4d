#!/usr/bin/env python
"""What each hostile upload costs the worker's preprocessing, bounded (the
handler's path with model-config.yaml's limits) against unbounded (no
limits, the whole clip stacked at full size before the transforms, as the
handler worked before the limits), for the full-size Charades pipeline.

Each measurement runs in a fresh process: wall time, the peak resident
memory it added over the process after imports, and the outcome (a clip, or
the error the client gets). Unbounded runs stop after ``--timeout`` seconds.
Prints a table and writes bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONFIG = ROOT / "projects/mmf_transformer/configs/charades/direct.yaml"
MODES = ("bounded", "unbounded")


def make_inputs(folder: Path) -> dict[str, Path]:
    from devtools import hostile_inputs

    return {
        "4096x4096 frame (mp4)": hostile_inputs.huge_frame_video(folder / "huge.mp4"),
        "100,000 static 1080p frames (mp4)": hostile_inputs.many_frames_video(folder / "many.mp4"),
        "20,000 static 1080p frames (mpeg-ts)": hostile_inputs.many_frames_video(folder / "many.ts", frames=20_000),
        "sample tables claim 40 M frames": hostile_inputs.sample_table_bomb(folder / "bomb.mp4"),
        "resolution change (mpeg-ts)": hostile_inputs.resolution_change_video(folder / "switch.ts"),
    }


def run_worker(mode: str, video: Path) -> dict:
    import yaml

    from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker
    from minimmf.datasets.video_clips import UNBOUNDED, DecodeLimits, VideoDecodeError, decode_clip
    from minimmf.serving.settings import HandlerSettings
    from minimmf.utils.build import build_processors
    from minimmf.utils.configuration import build_config

    processors = build_processors(build_config(CONFIG).dataset_config.charades.processors)
    data = video.read_bytes()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        if mode == "bounded":
            settings = HandlerSettings.from_model_yaml(yaml.safe_load((ROOT / "model-config.yaml").read_text()))
            limits = DecodeLimits(settings.max_frame_pixels, settings.max_frames, settings.max_decode_seconds,
                                  setting_prefix="handler.")
            shape = CharadesSampleMaker(processors, "test", 16, limits)(data, "a script").video.shape
        else:
            clip = decode_clip(data, 16, 1000, UNBOUNDED)
            shape = processors["video_test_processor"](clip.video).shape
        outcome = f"clip {tuple(shape)}"
    except VideoDecodeError as error:
        outcome = f"400: {error}"
    seconds = time.perf_counter() - started
    added_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    return {"seconds": seconds, "peak_added_mb": added_mb, "outcome": outcome}


def measure(mode: str, video: Path, timeout: float) -> dict:
    try:
        result = subprocess.run([sys.executable, __file__, "--worker", mode, str(video)], capture_output=True,
                                text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "peak_added_mb": None, "outcome": f"still decoding after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"seconds": None, "peak_added_mb": None, "outcome": f"crashed: {result.stderr.strip()[-200:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], Path(args.worker[1]))))
        return 0
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"hostile uploads through the full-size preprocessing, bounded vs unbounded\nmachine: {machine}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_inputs(Path(tmp)).items():
            row = {"input": name, "bytes": path.stat().st_size}
            for mode in MODES:
                row[mode] = measure(mode, path, args.timeout)
                result = row[mode]
                seconds = f"{result['seconds']:7.2f} s" if result["seconds"] is not None else "      - "
                memory = f"{result['peak_added_mb']:7.0f} MB" if result["peak_added_mb"] is not None else "      - "
                print(f"{name:<38}{row['bytes']:>11,} B  {mode:<10}{seconds}{memory}  {result['outcome'][:90]}",
                      flush=True)
            rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"saved {RESULTS / 'hostile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
