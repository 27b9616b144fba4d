#!/usr/bin/env python
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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared" / "data"
METHODS = ("ours", "reference", "floor")
# the reference approach holds every frame as float32: skip it where that cannot fit in memory
REFERENCE_MAX_SECONDS = 60


def make_video(seconds: int, width: int = 854, height: int = 480, fps: int = 30) -> Path:
    """An H.264 + AAC video with motion and sound, cached between runs."""
    import numpy as np

    from minimmf.utils.video_writer import tone, write_video

    path = CACHE / f"h264_aac_{seconds}s_{height}p.mp4"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(seconds).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    frames = (np.roll(base, shift=index * 4, axis=1) for index in range(seconds * fps))
    write_video(path, frames, fps=fps, audio=tone(seconds, 48000, amplitude=0.3, channels=2), audio_rate=48000,
                video_options={"preset": "ultrafast", "crf": "28"})
    return path


# ------------------------------------------------------------------ workers

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_worker(method: str, video: Path, repeats: int) -> dict:
    import av
    import numpy as np
    import torch

    from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker
    from minimmf.utils.build import build_processors
    from minimmf.utils.configuration import build_config

    config = build_config(ROOT / "projects/mmf_transformer/configs/charades/direct.yaml")
    processors = build_processors(config.dataset_config.charades.processors)
    maker = CharadesSampleMaker(processors, "test", 16)
    data = video.read_bytes()
    script = "A person opens the door, then sits down on the sofa and watches television."

    def ours():
        sample = maker(data, script)
        return sample.video.shape

    def reference():
        import io

        with av.open(io.BytesIO(data)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        with av.open(io.BytesIO(data)) as container:
            audio = [f.to_ndarray() for f in container.decode(audio=0)] if container.streams.audio else []
        video_tensor = torch.from_numpy(np.stack(frames))
        audio_tensor = torch.from_numpy(np.concatenate(audio, axis=1)) if audio else torch.zeros(1, 0)
        processed = processors["video_test_processor"](video_tensor)
        processors["audio_processor"](audio_tensor)
        processors["text_processor"]({"text": script})
        return processed.shape

    def floor():
        import io

        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))

    function = {"ours": ours, "reference": reference, "floor": floor}[method]
    function()  # warm-up (first-call costs), then reset the peak
    baseline = _current_rss_mb()
    peak_before = _peak_rss_mb()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    peak = max(_peak_rss_mb(), peak_before)
    return {"median_s": statistics.median(times), "peak_mb": peak - baseline, "repeats": repeats}


def measure(method: str, video: Path, repeats: int) -> dict:
    """Run one method on one video in a fresh process (clean peak memory)."""
    result = subprocess.run([sys.executable, __file__, "--worker", method, str(video), "--repeats", str(repeats)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cell(value: float | None, decimals: int) -> str:
    return f"{value:13.{decimals}f}" if value is not None else f"{'-':>13}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, nargs="*", default=[10, 30, 120])
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], Path(args.worker[1]), args.repeats)))
        return 0

    videos = {f"{s} s 854x480 H.264+AAC": (make_video(s), s) for s in args.seconds}
    for name in ("flipping_a_pancake.mkv", "video_90.mov"):
        if (SHARED / name).is_file():
            videos[name] = (SHARED / name, 0)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"preprocessing one request (median of {args.repeats}; peak = memory added by the run)\nmachine: {machine}\n")
    columns = "".join(f"{m + ' s':>13}{m + ' MB':>13}" for m in METHODS)
    print(f"{'video':<28}{columns}{'vs floor':>10}{'vs ref':>9}")
    rows = []
    for name, (path, seconds) in videos.items():
        row = {"video": name}
        for method in METHODS:
            if method == "reference" and seconds > REFERENCE_MAX_SECONDS:
                row[method] = {"skipped": f"needs every frame as float32 (> {REFERENCE_MAX_SECONDS} s of 480p)"}
                continue
            row[method] = measure(method, path, args.repeats)
        rows.append(row)

        ours_s, floor_s = row["ours"].get("median_s"), row["floor"].get("median_s")
        ref_s = row["reference"].get("median_s")
        vs_floor = f"{ours_s / floor_s:9.2f}x" if ours_s and floor_s else f"{'-':>10}"
        vs_ref = f"{ref_s / ours_s:8.1f}x" if ours_s and ref_s else f"{'-':>9}"
        cells = "".join(_cell(row[m].get("median_s"), 3) + _cell(row[m].get("peak_mb"), 0) for m in METHODS)
        print(f"{name:<28}{cells}{vs_floor}{vs_ref}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "preprocess.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    by_seconds = {r["video"].split(" ")[0]: r for r in rows if " s " in r["video"]}
    if "30" in by_seconds and "120" in by_seconds:
        ratio = by_seconds["120"]["ours"]["peak_mb"] / max(by_seconds["30"]["ours"]["peak_mb"], 1e-9)
        print(f"\nours: peak memory of 120 s / 30 s = {ratio:.2f}")
    print(f"saved {RESULTS / 'preprocess.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
