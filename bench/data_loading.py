#!/usr/bin/env python
"""Training data loading with and without the clip cache: samples/s of the
full-size Charades pipeline (direct.yaml: 16x112x112 clips, 224x224 audio
images, BERT tokens, the training split's random crops and flips) on
synthetic 30 s 854x480 H.264 + AAC videos, through the trainer's DataLoader
settings (``build_dataset`` + ``dataloader_options``), batches of 4.

For each setting, a fresh process runs: a pass without the cache (MMF's
behaviour), a cold pass (empty cache: decodes and fills it), then warm passes
(reads it; the median is reported). Settings:

- one core: ``num_workers=0``, the process pinned to one CPU (FFmpeg's and
  PyTorch's threads included), i.e. the throughput each core adds;
- machine: ``num_workers`` = the machine's cores (persistent workers, PyTorch's
  default prefetch), the process unpinned.

Also the cache's disk size per video (float32 entries, exact; and uint8,
4x smaller, opt-in). The N videos are hard links to one generated video:
each is decoded and cached on its own, under its own path.

Prints a table and writes bench/results/data_loading.json. On a shared or
busy machine the figures are noisy; the cold/warm ratio is the point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
DIRECT_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/direct.yaml"
NUM_CLASSES = 157
BATCH_SIZE = 4
GOAL = 10.0  # warm samples/s at least GOAL x cold


def make_data(root: Path, videos: int, seconds: int) -> Path:
    """A Charades layout under ``root`` with ``videos`` training videos."""
    from bench.preprocess import make_video
    from minimmf.datasets.builders.charades.layout import CHARADES_CSV_COLUMNS, CharadesLayout

    source = make_video(seconds)
    layout = CharadesLayout.default(root)
    for folder in {layout.classes_file.parent, layout.annotations["train"][0].parent,
                   layout.videos["train"][0]}:
        folder.mkdir(parents=True, exist_ok=True)
    layout.classes_file.write_text("".join(f"c{i:03d} Action number {i}\n" for i in range(NUM_CLASSES)))
    rows = []
    for index in range(videos):
        video_id = f"BENCH{index:03d}"
        target = layout.videos["train"][0] / f"{video_id}.mp4"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        rows.append({"id": video_id, "script": f"A person number {index} opens a door, takes a towel and sits down.",
                     "actions": f"c{index % NUM_CLASSES:03d} 0.00 {seconds:.2f};c{(index * 7 + 3) % NUM_CLASSES:03d} "
                                f"2.00 {seconds / 2:.2f}", "length": f"{seconds:.2f}"})
    with open(layout.annotations["train"][0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CHARADES_CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return source


# ------------------------------------------------------------------ workers


def run_setting(data_dir: Path, cache_dir: Path, workers: int, one_core: bool, warm_passes: int,
                dtype: str) -> dict:
    """In this process: the no-cache, cold and warm passes of one setting."""
    if one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch
    from torch.utils.data import DataLoader

    from minimmf.trainers.mmf_trainer import BatchCollator
    from minimmf.utils.build import build_dataset, dataloader_options
    from minimmf.utils.configuration import build_config

    if one_core:
        torch.set_num_threads(1)

    def loader(cache: bool) -> DataLoader:
        config = build_config(DIRECT_CONFIG, [
            "model=mmf_transformer", "dataset=charades", f"env.data_dir={data_dir}",
            f"dataset_config.charades.cache_clips={cache}", f"dataset_config.charades.clip_cache_dir={cache_dir}",
            f"dataset_config.charades.clip_cache_dtype={dtype}", f"training.num_workers={workers}"])
        dataset = build_dataset("charades", config, "train")
        options = dataloader_options(config.dataset_config.charades, config.training, torch.device("cpu"))
        return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, collate_fn=BatchCollator("charades", "train"),
                          **options)

    def one_pass(data: DataLoader) -> float:
        started = time.perf_counter()
        count = 0
        for batch in data:
            assert batch.video.shape[1:] == (3, 16, 112, 112) and batch.audio.shape[1:] == (1, 224, 224)
            count += len(batch.id)
        return count / (time.perf_counter() - started)

    shutil.rmtree(cache_dir, ignore_errors=True)
    result = {"workers": workers, "one_core": one_core, "dtype": dtype}
    if dtype == "float32":
        result["no_cache"] = one_pass(loader(cache=False))
    cached = loader(cache=True)
    result["cold"] = one_pass(cached)
    result["warm_passes"] = [one_pass(cached) for _ in range(warm_passes)]
    result["warm"] = statistics.median(result["warm_passes"])
    entries = list(cache_dir.glob("*.pt"))
    result["entries"] = len(entries)
    result["bytes_per_video"] = sum(entry.stat().st_size for entry in entries) / max(len(entries), 1)
    return result


def measure(data_dir: Path, cache_dir: Path, workers: int, one_core: bool, warm_passes: int, dtype: str) -> dict:
    """One setting in a fresh process."""
    setting = json.dumps({"data_dir": str(data_dir), "cache_dir": str(cache_dir), "workers": workers,
                          "one_core": one_core, "warm_passes": warm_passes, "dtype": dtype})
    result = subprocess.run([sys.executable, __file__, "--worker", setting], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"the {setting} run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, default=16, help="training videos (default 16)")
    parser.add_argument("--seconds", type=int, default=30, help="seconds per video (default 30)")
    parser.add_argument("--warm-passes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="num_workers of the machine setting (default: the machine's cores)")
    args = parser.parse_args(argv)
    if args.worker:
        setting = json.loads(args.worker)
        print(json.dumps(run_setting(Path(setting["data_dir"]), Path(setting["cache_dir"]), setting["workers"],
                                     setting["one_core"], setting["warm_passes"], setting["dtype"])))
        return 0

    import torch

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    with tempfile.TemporaryDirectory(prefix="data_loading_") as temporary:
        data_dir, cache_dir = Path(temporary) / "data", Path(temporary) / "cache"
        source = make_data(data_dir, args.videos, args.seconds)
        settings = [("one core", 0, True, "float32"), (f"{args.workers} workers", args.workers, False, "float32"),
                    ("one core, uint8", 0, True, "uint8")]
        print(f"training data loading, full-size pipeline, {args.videos} videos of {args.seconds} s 854x480 "
              f"H.264+AAC ({source.stat().st_size / 2**20:.1f} MB each), batches of {BATCH_SIZE}\n"
              f"machine: {machine}\n")
        print(f"{'setting':<18}{'no cache':>10}{'cold':>10}{'warm':>10}{'warm/cold':>11}{'MB/video':>10}  samples/s")
        rows = []
        for name, workers, one_core, dtype in settings:
            row = {"setting": name, **measure(data_dir, cache_dir, workers, one_core, args.warm_passes, dtype)}
            row["warm_over_cold"] = row["warm"] / row["cold"]
            rows.append(row)
            no_cache = f"{row['no_cache']:10.2f}" if "no_cache" in row else f"{'-':>10}"
            print(f"{name:<18}{no_cache}{row['cold']:10.2f}{row['warm']:10.2f}{row['warm_over_cold']:10.1f}x"
                  f"{row['bytes_per_video'] / 1e6:10.2f}")
    exact = [row for row in rows if row["dtype"] == "float32"]
    met = all(row["warm_over_cold"] >= GOAL for row in exact)
    print(f"\ngoal (warm >= {GOAL:g}x cold, float32 entries): {'met' if met else 'NOT met'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "data_loading.json"
    path.write_text(json.dumps({"machine": machine, "videos": args.videos, "seconds": args.seconds,
                                "video": "854x480 H.264+AAC, 30 fps, 48 kHz stereo", "batch_size": BATCH_SIZE,
                                "pipeline": "direct.yaml train split: 16x112x112 clip, 224x224 audio image, text",
                                "goal_warm_over_cold": GOAL, "goal_met": met, "rows": rows}, indent=1))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
