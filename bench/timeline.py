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
   point; and the video-level ``map`` with ``clips`` 1 and 3, as
   ``mmf_run run_type=test dataset_config.charades.clips=N`` reports them.

Needs the demo model and data (`make demo`). Writes bench/results/timeline.json
and an example of request.py's timeline plot, bench/results/timeline_example.png.

    python -m bench.timeline [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from bench.common import (
    FULL_CONFIG,
    RESULTS,
    ROOT,
    SCRIPT,
    add_demo_arguments,
    archive,
    edited_model_config,
    machine,
    make_video,
    median_seconds,
    multipart,
    register,
    require_demo_model,
    run_checked,
    run_file,
    save_results,
    torchserve,
)
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.layout import parse_action_intervals, takes_turns
from minimmf.modules.metrics import localization_map
from minimmf.serving.predictor import Predictor, inference_config
from minimmf.serving.settings import HandlerSettings
from minimmf.serving.torchserve import TorchServe
from minimmf.utils.build import build_model
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config

ANSWERS = {"one clip": {}, "timeline 2 s": {"segment_seconds": 2.0}, "3 clips": {"clips": 3}}


# ---------------------------------------------------------- preprocessing


def predictor_for(config_yaml: Path, vocabulary: Path | None, settings: dict) -> Predictor:
    """A predictor with random weights (preprocessing does not depend on them),
    its config edited for serving as the handler's is."""
    config = inference_config(build_config(config_yaml), vocabulary)
    model = build_model(config)
    classes = [f"class {i}" for i in range(model.num_labels)]
    return Predictor(config, classes, model.state_dict(), torch.device("cpu"), HandlerSettings(**settings))


def preprocessing(config_yaml: Path, vocabulary: Path | None, video: bytes, repeats: int) -> dict[str, float]:
    """Median seconds of the handler's preprocessing of ``video`` for each answer."""
    predictors = {clips: predictor_for(config_yaml, vocabulary, {"clips": clips})
                  for clips in {settings.get("clips", 1) for settings in ANSWERS.values()}}
    seconds = {}
    for name, settings in ANSWERS.items():
        predictor = predictors[settings.get("clips", 1)]
        segment_seconds = settings.get("segment_seconds", 0.0)
        seconds[name] = median_seconds(lambda p=predictor, s=segment_seconds: p.samples(video, SCRIPT, s), repeats)
    return seconds


# --------------------------------------------------------------- serving


def answer_ms(serve: TorchServe, model: str, files: dict, repeats: int) -> float:
    """Median milliseconds of one request, after a warm-up."""
    def send() -> None:
        response = serve.predict(files, name=model)
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code} {response.text[:200]}")

    return median_seconds(send, repeats) * 1000


def served_latency(save_dir: Path, video: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds through TorchServe of each answer (demo model, batch 1)."""
    latency = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = workdir / "store"
        for name, clips in (("demo", 1), ("demo3", 3)):
            model_config = edited_model_config(workdir / f"{name}.yaml", {"handler.clips": clips})
            archive(save_dir, store, name=name, model_config=model_config, folder=True)
        with torchserve(workdir, store) as serve:
            for name in ("demo", "demo3"):
                register(serve, name, name=name, batch_size=1, initial_workers=1)
            for answer, settings in ANSWERS.items():
                model = "demo3" if settings.get("clips") == 3 else "demo"
                fields = {"segment_seconds": str(settings["segment_seconds"])} if "segment_seconds" in settings else {}
                latency[answer] = answer_ms(serve, model, multipart(video, SCRIPT, **fields), repeats)
    return latency


# ------------------------------------------------------- the test set


def mmf_run_test(save_dir: Path, data_dir: Path, clips: int) -> dict[str, float]:
    """The test report of ``mmf_run run_type=test`` with the demo model's weights."""
    with tempfile.TemporaryDirectory() as out:
        run_checked([sys.executable, "-m", "minimmf.cli.run", f"config={run_file(save_dir, 'config')}",
                     "run_type=test", f"env.data_dir={data_dir}", f"env.save_dir={out}", "training.num_workers=0",
                     f"checkpoint.resume_file={run_file(save_dir, 'weights')}",
                     f"dataset_config.charades.clips={clips}"])
        metrics = pd.read_csv(Path(out) / "metrics.csv")
    return {row.name: float(row.value) for row in metrics.itertuples() if row.name.startswith("test/")}


def held_out_split(save_dir: Path, data_dir: Path):
    config = build_config(run_file(save_dir, "config"), [f"env.data_dir={data_dir}"])
    return config, CharadesBuilder().load(config.dataset_config.charades, "test")


@torch.inference_mode()
def repeated_answer_baseline(save_dir: Path, data_dir: Path) -> float:
    """``localization_map`` when every time point gets the video-level answer."""
    config, dataset = held_out_split(save_dir, data_dir)
    model = build_model(config)
    model.load_state_dict(load_checkpoint_file(run_file(save_dir, "weights")))
    model.eval()
    scores, targets = [], []
    for idx in range(len(dataset)):
        _, window_of, point_targets = dataset.timeline_item(idx)
        video = model(SampleList([dataset[idx]]))["scores"][0]
        scores.append(video.expand(len(window_of), -1))
        targets.append(point_targets)
    return localization_map(torch.cat(scores), torch.cat(targets))


def synthetic_test_set_scores(save_dir: Path, data_dir: Path) -> dict:
    """The timeline's localization score against the repeated answer's, and 1 against 3 clips."""
    one, three = (mmf_run_test(save_dir, data_dir, clips) for clips in (1, 3))
    baseline = repeated_answer_baseline(save_dir, data_dir)
    print(f"synthetic test set: localization_map timeline {one['test/charades/localization_map']:.3f} vs repeated "
          f"video-level answer {baseline:.3f}; video-level map 1 clip {one['test/charades/map']:.3f}, 3 clips "
          f"{three['test/charades/map']:.3f}")
    # the keys keep the names of the first results (eval_clips, since renamed clips)
    return {"test_eval_clips_1": one, "test_eval_clips_3": three, "localization_map_repeated_video_answer": baseline}


# ---------------------------------------------------------------- example


def example_plot(save_dir: Path, data_dir: Path) -> str:
    """request.py --segment-seconds --plot on a localized held-out video, through TorchServe."""
    _, dataset = held_out_split(save_dir, data_dir)
    video = next(row for row in dataset.df.itertuples() if takes_turns(parse_action_intervals(row.actions,
                                                                                             dataset.id_to_name)))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        archive(save_dir, workdir / "store")
        with torchserve(workdir, workdir / "store") as serve:
            register(serve, "MMF_model.mar")
            info = workdir / "info.json"
            info.write_text(json.dumps({"script": video.script, "action_labels": video.action_labels}))
            result = run_checked([sys.executable, str(ROOT / "request.py"), "--video", video.path, "--info",
                                  str(info), "--url", serve.url("inference"), "--key-file", str(serve.key_file),
                                  "--segment-seconds", "0.5",
                                  "--plot", str(RESULTS.relative_to(ROOT) / "timeline_example.png"),
                                  "--output", str(RESULTS.relative_to(ROOT) / "timeline_example.json")])
    return f"video {video.id}, actions {video.actions}\n{result.stdout}"


# -------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    line = machine()
    video = make_video(30).read_bytes()
    report: dict = {"machine": line, "video": "30 s 854x480 H.264+AAC"}
    print(f"timeline and multi-clip answers\nmachine: {line}\n")
    configs = {"demo": (run_file(args.save_dir, "config"), run_file(args.save_dir, "vocabulary")),
               "full": (FULL_CONFIG, None)}
    for name, (config_yaml, vocabulary) in configs.items():
        seconds = report[f"preprocess_s_{name}"] = preprocessing(config_yaml, vocabulary, video, args.repeats)
        print(f"preprocessing, {name} config: " + ", ".join(
            f"{answer} {value:.3f} s ({value / seconds['one clip']:.2f}x)" for answer, value in seconds.items()))
    latency = report["served_ms_demo"] = served_latency(args.save_dir, video, args.repeats)
    print("through TorchServe, demo model: " + ", ".join(
        f"{answer} {value:.0f} ms ({value / latency['one clip']:.2f}x)" for answer, value in latency.items()))
    report.update(synthetic_test_set_scores(args.save_dir, args.data_dir))
    report["example"] = example_plot(args.save_dir, args.data_dir)
    print("\nexample timeline (request.py --segment-seconds 0.5 --plot):\n" + report["example"])
    path = save_results("timeline", report)
    print(f"saved {path} and {RESULTS / 'timeline_example.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
