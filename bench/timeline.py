#!/usr/bin/env python
"""When, not only what: the timeline and multi-clip answers against MMF's
single-clip answer, on this machine.

1. Preprocessing one 30 s 854x480 H.264+AAC video (the handler's
   ``Predictor.samples``): one clip, a timeline of 15 windows of 2 s (plus
   the clip), and 3 clips; for the demo config and the full-size config.
   Aimed at: the timeline and 3 clips at most 1.3x one clip (the decode is shared).
2. End to end through TorchServe (demo model, batch 1, one request at a
   time), the same three answers. Aimed at: at most 3x one clip.
3. On the synthetic test set (demo model and data): Charades' localization
   score (``localization_map``: 25 time points per video) of the timeline
   against the baseline that repeats the video-level answer at every time
   point; and the video-level ``map`` with ``eval_clips`` 1 and 3, as
   ``mmf_run run_type=test dataset_config.charades.eval_clips=N`` reports them.

Needs the demo model and data (`make demo`). Writes bench/results/timeline.json
and an example of request.py's timeline plot, bench/results/timeline_example.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.preprocess import make_video  # noqa: E402
from bench.serving import has_demo_model  # noqa: E402
from minimmf.common.sample import SampleList  # noqa: E402
from minimmf.datasets.builders.charades.builder import CharadesBuilder  # noqa: E402
from minimmf.datasets.builders.charades.layout import parse_action_intervals, takes_turns  # noqa: E402
from minimmf.modules.metrics import localization_map  # noqa: E402
from minimmf.serving.predictor import Predictor  # noqa: E402
from minimmf.serving.settings import HandlerSettings  # noqa: E402
from minimmf.serving.torchserve import TorchServe, archive_model, default_labels  # noqa: E402
from minimmf.utils.build import build_model  # noqa: E402
from minimmf.utils.checkpoint import load_checkpoint_file  # noqa: E402
from minimmf.utils.configuration import build_config  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SCRIPT = "A person opens the door, then sits down on the sofa and watches television."
ANSWERS = {"one clip": {}, "timeline 2 s": {"segment_seconds": 2.0}, "3 clips": {"clips": 3}}


def predictor_for(config_yaml: Path, settings: dict) -> Predictor:
    """A predictor with random weights: preprocessing does not depend on them."""
    config = build_config(config_yaml)
    config.dataset_config.charades.processors.text_processor.params.tokenizer_config.type = "bert-base-uncased"
    state = build_model(config).state_dict()
    classes = [f"class {i}" for i in range(config.model_config.mmf_transformer.heads[0].num_labels)]
    return Predictor(config, classes, state, torch.device("cpu"), HandlerSettings(**settings))


def preprocessing(config_yaml: Path, video: bytes, repeats: int) -> dict[str, float]:
    """Median seconds of the handler's preprocessing of ``video`` for each answer."""
    seconds = {}
    predictors = {clips: predictor_for(config_yaml, {"clips": clips})
                  for clips in {settings.get("clips", 1) for settings in ANSWERS.values()}}
    for name, settings in ANSWERS.items():
        predictor = predictors[settings.get("clips", 1)]
        predictor.samples(video, SCRIPT, settings.get("segment_seconds", 0.0))  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.samples(video, SCRIPT, settings.get("segment_seconds", 0.0))
            times.append(time.perf_counter() - started)
        seconds[name] = statistics.median(times)
    return seconds


def served_latency(save_dir: Path, video: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds through TorchServe of each answer (demo model, batch 1)."""
    latency = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = workdir / "store"
        shipped = yaml.safe_load((ROOT / "model-config.yaml").read_text())
        for name, clips in (("demo", 1), ("demo3", 3)):
            config = {**shipped, "handler": {**shipped["handler"], "clips": clips}}
            (workdir / f"{name}.yaml").write_text(yaml.safe_dump(config))
            archive_model(save_dir, store, default_labels(save_dir, ROOT), model_config=workdir / f"{name}.yaml",
                          handler=ROOT / "handler.py", name=name, folder=True)
        serve = TorchServe.private(workdir, store, ROOT / "config.properties")
        serve.start()
        try:
            for name in ("demo", "demo3"):
                if serve.register(name, name=name, batch_size=1, initial_workers=1).status_code != 200:
                    raise RuntimeError(f"registering {name} failed")
            for answer, settings in ANSWERS.items():
                model = "demo3" if settings.get("clips") == 3 else "demo"
                files = {"data": ("v.mp4", video), "script": (None, SCRIPT)}
                if "segment_seconds" in settings:
                    files["segment_seconds"] = (None, str(settings["segment_seconds"]))
                times = []
                for _ in range(repeats + 1):  # the first is a warm-up
                    started = time.perf_counter()
                    response = serve.predict(files, name=model)
                    times.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{answer}: HTTP {response.status_code} {response.text[:200]}")
                latency[answer] = statistics.median(times[1:])
        finally:
            serve.stop()
    return latency


def mmf_run_test(save_dir: Path, data_dir: Path, eval_clips: int) -> dict[str, float]:
    """The test report of ``mmf_run run_type=test`` with the demo model's weights."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "minimmf.cli.run", f"config={save_dir / 'config.yaml'}", "run_type=test",
                        f"env.data_dir={data_dir}", f"env.save_dir={out}", "training.num_workers=0",
                        f"checkpoint.resume_file={save_dir / 'mmf_transformer_final.pth'}",
                        f"dataset_config.charades.eval_clips={eval_clips}"],
                       check=True, cwd=ROOT, capture_output=True, text=True)
        metrics = pd.read_csv(Path(out) / "metrics.csv")
    return {row.name: float(row.value) for row in metrics.itertuples() if row.name.startswith("test/")}


@torch.inference_mode()
def repeated_answer_baseline(save_dir: Path, data_dir: Path) -> float:
    """``localization_map`` when every time point gets the video-level answer."""
    config = build_config(save_dir / "config.yaml", [f"env.data_dir={data_dir}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "test")
    model = build_model(config)
    model.load_state_dict(load_checkpoint_file(save_dir / "mmf_transformer_final.pth"))
    model.eval()
    scores, targets = [], []
    for idx in range(len(dataset)):
        _, window_of, point_targets = dataset.timeline_item(idx)
        video = model(SampleList([dataset[idx]]))["scores"][0]
        scores.append(video.expand(len(window_of), -1))
        targets.append(point_targets)
    return localization_map(torch.cat(scores), torch.cat(targets))


def example_plot(save_dir: Path, data_dir: Path) -> str:
    """request.py --segment-seconds --plot on a localized held-out video, through TorchServe."""
    config = build_config(save_dir / "config.yaml", [f"env.data_dir={data_dir}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "test")
    video = next(row for row in dataset.df.itertuples() if takes_turns(parse_action_intervals(row.actions,
                                                                                             dataset.id_to_name)))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        archive_model(save_dir, workdir / "store", default_labels(save_dir, ROOT),
                      model_config=ROOT / "model-config.yaml", handler=ROOT / "handler.py")
        serve = TorchServe.private(workdir, workdir / "store", ROOT / "config.properties")
        serve.start()
        try:
            serve.register("MMF_model.mar")
            info = workdir / "info.json"
            info.write_text(json.dumps({"script": video.script, "action_labels": video.action_labels}))
            result = subprocess.run([sys.executable, str(ROOT / "request.py"), "--video", video.path, "--info",
                                     str(info), "--url", serve.url("inference"), "--key-file", str(serve.key_file),
                                     "--segment-seconds", "0.5",
                                     "--plot", str(RESULTS.relative_to(ROOT) / "timeline_example.png"),
                                     "--output", str(RESULTS.relative_to(ROOT) / "timeline_example.json")],
                                    capture_output=True, text=True, check=True, cwd=ROOT)
        finally:
            serve.stop()
    return f"video {video.id}, actions {video.actions}\n{result.stdout}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not has_demo_model(args.save_dir, args.data_dir):
        print("error: needs the demo model and data; run `make demo` first", file=sys.stderr)
        return 2
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    video = make_video(30).read_bytes()
    report: dict = {"machine": machine, "video": "30 s 854x480 H.264+AAC"}
    print(f"timeline and multi-clip answers\nmachine: {machine}\n")
    for name, config_yaml in (("demo", args.save_dir / "config.yaml"), ("full", ROOT / "config.yaml")):
        seconds = preprocessing(config_yaml, video, args.repeats)
        report[f"preprocess_s_{name}"] = seconds
        print(f"preprocessing, {name} config: " + ", ".join(
            f"{answer} {value:.3f} s ({value / seconds['one clip']:.2f}x)" for answer, value in seconds.items()))
    latency = served_latency(args.save_dir, video, args.repeats)
    report["served_ms_demo"] = latency
    print("through TorchServe, demo model: " + ", ".join(
        f"{answer} {value:.0f} ms ({value / latency['one clip']:.2f}x)" for answer, value in latency.items()))
    one, three = (mmf_run_test(args.save_dir, args.data_dir, clips) for clips in (1, 3))
    baseline = repeated_answer_baseline(args.save_dir, args.data_dir)
    report["test_eval_clips_1"], report["test_eval_clips_3"] = one, three
    report["localization_map_repeated_video_answer"] = baseline
    print(f"synthetic test set: localization_map timeline {one['test/charades/localization_map']:.3f} vs repeated "
          f"video-level answer {baseline:.3f}; video-level map 1 clip {one['test/charades/map']:.3f}, 3 clips "
          f"{three['test/charades/map']:.3f}")
    report["example"] = example_plot(args.save_dir, args.data_dir)
    print("\nexample timeline (request.py --segment-seconds 0.5 --plot):\n" + report["example"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "timeline.json").write_text(json.dumps(report, indent=1))
    print(f"saved {RESULTS / 'timeline.json'} and {RESULTS / 'timeline_example.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
