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

    python -m bench.data_loading [--videos 16] [--seconds 30] [--warm-passes 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DIRECT_CONFIG, last_json_line, machine, make_video, run_module, save_results

NUM_CLASSES = 157
BATCH_SIZE = 4
GOAL = 10.0  # warm samples/s at least GOAL x cold


def make_data(root: Path, videos: int, seconds: int) -> Path:
    """A Charades layout under ``root`` with ``videos`` training videos."""
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


def training_loader(setting: dict, cache: bool):
    """The trainer's DataLoader of the training split, with or without the clip cache."""
    import torch
    from torch.utils.data import DataLoader

    from minimmf.trainers.mmf_trainer import BatchCollator
    from minimmf.utils.build import build_dataset, dataloader_options
    from minimmf.utils.configuration import build_config

    charades = "dataset_config.charades"
    config = build_config(DIRECT_CONFIG, [
        "model=mmf_transformer", "dataset=charades", f"env.data_dir={setting['data_dir']}",
        f"{charades}.cache_clips={cache}", f"{charades}.clip_cache_dir={setting['cache_dir']}",
        f"{charades}.clip_cache_dtype={setting['dtype']}", f"training.num_workers={setting['workers']}"])
    dataset = build_dataset("charades", config, "train")
    options = dataloader_options(config.dataset_config.charades, config.training, torch.device("cpu"))
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, collate_fn=BatchCollator("charades", "train"),
                      **options)


def samples_per_second(data) -> float:
    """One pass over ``data``."""
    started = time.perf_counter()
    count = 0
    for batch in data:
        assert batch.video.shape[1:] == (3, 16, 112, 112) and batch.audio.shape[1:] == (1, 224, 224)
        count += len(batch.id)
    return count / (time.perf_counter() - started)


def run_setting(setting: dict) -> dict:
    """In this process: the no-cache, cold and warm passes of one setting."""
    if setting["one_core"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # before torch starts its threads
    import torch

    if setting["one_core"]:
        torch.set_num_threads(1)
    cache_dir = Path(setting["cache_dir"])
    shutil.rmtree(cache_dir, ignore_errors=True)
    result = {key: setting[key] for key in ("workers", "one_core", "dtype")}
    if setting["dtype"] == "float32":
        result["no_cache"] = samples_per_second(training_loader(setting, cache=False))
    cached = training_loader(setting, cache=True)
    result["cold"] = samples_per_second(cached)
    result["warm_passes"] = [samples_per_second(cached) for _ in range(setting["warm_passes"])]
    result["warm"] = statistics.median(result["warm_passes"])
    entries = list(cache_dir.glob("*.pt"))
    result["entries"] = len(entries)
    result["bytes_per_video"] = sum(entry.stat().st_size for entry in entries) / max(len(entries), 1)
    return result


def measure(setting: dict) -> dict:
    """One setting in a fresh process."""
    result = run_module("bench.data_loading", "--worker", json.dumps(setting))
    if result.returncode != 0:
        raise SystemExit(f"the {json.dumps(setting)} run failed:\n{result.stderr}")
    return last_json_line(result.stdout)


# -------------------------------------------------------------------- main


def print_row(row: dict) -> None:
    no_cache = f"{row['no_cache']:10.2f}" if "no_cache" in row else f"{'-':>10}"
    print(f"{row['setting']:<18}{no_cache}{row['cold']:10.2f}{row['warm']:10.2f}{row['warm_over_cold']:10.1f}x"
          f"{row['bytes_per_video'] / 1e6:10.2f}")


def measure_settings(data_dir: Path, cache_dir: Path, workers: int, warm_passes: int) -> list[dict]:
    """The one-core, machine and one-core uint8 settings, each printed as it ends."""
    settings = [("one core", 0, True, "float32"), (f"{workers} workers", workers, False, "float32"),
                ("one core, uint8", 0, True, "uint8")]
    rows = []
    for name, setting_workers, one_core, dtype in settings:
        setting = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), "workers": setting_workers,
                   "one_core": one_core, "warm_passes": warm_passes, "dtype": dtype}
        row = {"setting": name, **measure(setting)}
        row["warm_over_cold"] = row["warm"] / row["cold"]
        rows.append(row)
        print_row(row)
    return rows


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
        print(json.dumps(run_setting(json.loads(args.worker))))
        return 0

    line = machine()
    with tempfile.TemporaryDirectory(prefix="data_loading_") as temporary:
        data_dir, cache_dir = Path(temporary) / "data", Path(temporary) / "cache"
        source = make_data(data_dir, args.videos, args.seconds)
        print(f"training data loading, full-size pipeline, {args.videos} videos of {args.seconds} s 854x480 "
              f"H.264+AAC ({source.stat().st_size / 2**20:.1f} MB each), batches of {BATCH_SIZE}\n"
              f"machine: {line}\n")
        print(f"{'setting':<18}{'no cache':>10}{'cold':>10}{'warm':>10}{'warm/cold':>11}{'MB/video':>10}  samples/s")
        rows = measure_settings(data_dir, cache_dir, args.workers, args.warm_passes)
    met = all(row["warm_over_cold"] >= GOAL for row in rows if row["dtype"] == "float32")
    print(f"\ngoal (warm >= {GOAL:g}x cold, float32 entries): {'met' if met else 'NOT met'}")
    path = save_results("data_loading", {
        "machine": line, "videos": args.videos, "seconds": args.seconds,
        "video": "854x480 H.264+AAC, 30 fps, 48 kHz stereo", "batch_size": BATCH_SIZE,
        "pipeline": "direct.yaml train split: 16x112x112 clip, 224x224 audio image, text",
        "goal_warm_over_cold": GOAL, "goal_met": met, "rows": rows})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
