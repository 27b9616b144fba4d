"""Charades scored as its official devkit scores it (``Charades_v1_classify.m``,
``Charades_v1_localize.m``): the metrics against an independent
implementation written here from the devkit's definition, on a
hand-computable example; videos that are missing or cannot be decoded; one
process and two; and the devkit submission files, which read back to the
metrics' own numbers."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from minimmf.cli.run import run
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.evaluation import ScoredItem
from minimmf.modules.metrics import (
    localization_map,
    localization_weighted_average_precision,
    mean_average_precision,
    weighted_average_precision,
)
from minimmf.utils.configuration import build_config
from tests.conftest import TINY_CONFIG

INF = math.inf


# --------------------------------------- the devkit's definition, independently


def devkit_ap(scores: list[float], labels: list[int]) -> float:
    """THUMOSeventclspr: rank by descending score (stable, NaN last), precision at each positive, over positives."""
    order = sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i] if not
                                                      math.isnan(scores[i]) else 0.0))
    true_positives = false_positives = 0
    total = 0.0
    for i in order:
        if labels[i]:
            true_positives += 1
            total += true_positives / (true_positives + false_positives)
        else:
            false_positives += 1
    positives = sum(labels)
    return total / positives if positives else math.nan


def devkit_scores(rows: list[list[float]], labels: list[list[int]], classify: bool) -> tuple[float, float]:
    """(mAP, wAP) over rows (one per video, or per time point); classify gives videos without actions no scores."""
    if classify:
        rows = [row if any(label) else [-INF] * len(row) for row, label in zip(rows, labels, strict=True)]
    classes = range(len(labels[0]))
    aps = [devkit_ap([row[c] for row in rows], [label[c] for label in labels]) for c in classes]
    positives = [sum(label[c] for label in labels) for c in classes]
    mean = sum(aps) / len(aps)
    weighted = sum(ap * n for ap, n in zip(aps, positives, strict=True)) / sum(positives)
    return mean, weighted


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------- a hand-computable example

# 5 videos x 3 classes, logits. Video 4 is missing (no scores: -inf), video 3 has no action.
SCORES = [[20.0, 0.0, -1.0],
          [17.0, 0.0, -2.0],
          [3.0, 5.0, -3.0],
          [25.0, 9.0, -4.0],  # no action: left out of classification
          [-INF, -INF, -INF]]  # missing
LABELS = [[1, 0, 0],
          [0, 1, 0],
          [1, 1, 0],
          [0, 0, 0],
          [1, 0, 0]]


def test_the_hand_computed_example():
    # Video 3 has no action, so classification gives it no scores (-inf), and ties at -inf keep the file order.
    # class 0: 20 (pos), 17 (neg), 3 (pos), -inf (video 3, neg), -inf (video 4, the missing one, pos):
    #   precisions 1/1, 2/3, 3/5. (As float32 probabilities 20 and 17 both round to 1.0, and the row order
    #   would decide; on the logits the positive is first.)
    class_0 = (1 + 2 / 3 + 3 / 5) / 3
    # class 1: 5 (pos), then 0 and 0 tie: the negative first (file order), so precisions 1/1 and 2/3
    class_1 = (1 + 2 / 3) / 2
    # class 2 has no positive: NaN, so the mean is NaN, as the devkit's
    assert devkit_ap([20.0, 17.0, 3.0, -INF, -INF], [1, 0, 1, 0, 1]) == pytest.approx(class_0)
    scores, targets = torch.tensor(SCORES), torch.tensor(LABELS, dtype=torch.float)
    assert math.isnan(mean_average_precision(scores, targets))
    assert mean_average_precision(scores, targets, skip_classes_without_positives=True) == \
        pytest.approx((class_0 + class_1) / 2, abs=1e-15)
    assert weighted_average_precision(scores, targets, skip_classes_without_positives=True) == \
        pytest.approx((class_0 * 3 + class_1 * 2) / 5, abs=1e-15)
    assert same(mean_average_precision(scores, targets), devkit_scores(SCORES, LABELS, classify=True)[0])
    assert same(weighted_average_precision(scores, targets), devkit_scores(SCORES, LABELS, classify=True)[1])


def test_saturated_scores_keep_their_order():
    # a negative at logit 17 and a positive at 20: AP 1 on the logits (0.5 on saturated float32 probabilities)
    scores, targets = torch.tensor([[17.0], [20.0]]), torch.tensor([[0.0], [1.0]])
    assert torch.sigmoid(scores).tolist() == [[1.0], [1.0]]
    assert mean_average_precision(scores, targets) == devkit_ap([17.0, 20.0], [0, 1]) == 1.0


def test_localization_keeps_every_time_point_and_mean_pooled_clips_create_no_ties():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(50, 4, generator=generator, dtype=torch.float64) * 30
    scores[10:20] = -INF  # a missing video's time points
    targets = (torch.rand(50, 4, generator=generator) > 0.7).float()
    targets[:5] = 0  # time points without actions still count as negatives
    rows, labels = scores.tolist(), targets.int().tolist()
    mean, weighted = devkit_scores(rows, labels, classify=False)
    assert same(localization_map(scores, targets), mean)
    assert same(localization_weighted_average_precision(scores, targets), weighted)
    assert same(mean_average_precision(scores, targets), devkit_scores(rows, labels, classify=True)[0])


# ------------------------------------------- the dataset's side of the scoring


def write_split(data_dir: Path, rows: list[dict]) -> None:
    path = data_dir / "datasets/charades/defaults/Charades/Charades_v1_test.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    pd.DataFrame([*frame.to_dict("records"), *rows]).to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)


@pytest.fixture(scope="module")
def scored_data(synthetic_data_dir, tmp_path_factory) -> Path:
    """The synthetic data with a test video deleted, one that cannot be decoded, and an added video whose
    file is missing with a zero-length action at a sampled time point (0.8 s of 2 s: point 10 of 25)."""
    data = tmp_path_factory.mktemp("scored") / "data"
    shutil.copytree(synthetic_data_dir, data)
    videos = data / "datasets/charades/defaults/Charades_v1_480"
    frame = pd.read_csv(data / "datasets/charades/defaults/Charades/Charades_v1_test.csv", dtype=str)
    (videos / f"{frame.id[0]}.mp4").unlink()
    (videos / f"{frame.id[1]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    write_split(data, [{**frame.iloc[2].to_dict(), "id": "ZEROS", "actions": "c001 0.80 0.80;c002 0.81 0.81",
                        "length": "2.00"}])
    return data


def test_missing_and_broken_videos_are_kept_without_scores(scored_data):
    config = build_config(TINY_CONFIG, ["model=mmf_transformer", "dataset=charades", f"env.data_dir={scored_data}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "test")
    assert len(dataset) == 5
    sets = dataset.evaluation_sets()
    items = [sets["videos"][i] for i in range(len(dataset))]
    assert [bool(item.error) for item in items] == [True, True, False, False, True]
    assert "video file not found" in items[0].error and "not a readable video container" in items[1].error
    scored = [ScoredItem(i.index, torch.zeros(len(i.samples), 8) if i.samples else None, i.info, i.error)
              for i in items]
    entries = sets["videos"].combine(scored)
    assert entries["unreadable_videos"] == 3 and torch.isneginf(entries["scores"][[0, 1, 4]]).all()
    points = sets["time_points"][4]
    assert not points.samples and points.info[1].shape == (25, 8)
    c001, c002 = dataset.class_to_idx[dataset.id_to_name["c001"]], dataset.class_to_idx[dataset.id_to_name["c002"]]
    # a zero-length action counts at a time point it falls on, and never otherwise
    assert points.info[1][:, c001].nonzero().flatten().tolist() == [10]
    assert points.info[1][:, c002].sum() == 0


def evaluate(trained: Path, data: Path, save: Path, *extra: str) -> dict[str, float]:
    metrics = ("[{'type': 'map', 'key': 'map_all', 'params': {'skip_classes_without_positives': True}}, "
               "{'type': 'wap', 'key': 'wap_all', 'params': {'skip_classes_without_positives': True}}, "
               "{'type': 'localization_map', 'key': 'lmap_all', 'params': {'skip_classes_without_positives': True}}, "
               "{'type': 'localization_wap', 'key': 'lwap_all', 'params': {'skip_classes_without_positives': True}}, "
               "'map', 'wap', 'localization_map', 'localization_wap', 'multilabel_micro_f1']")
    # the saved config holds the data folder resolved: point the dataset itself at the changed copy
    run([f"config={trained / 'config.yaml'}", "run_type=test", f"env.save_dir={save}",
         f"dataset_config.charades.data_dir={data / 'datasets'}",
         f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}", f"evaluation.metrics={metrics}",
         "training.num_workers=0", *extra])
    frame = pd.read_csv(save / "metrics.csv")
    return {name.removeprefix("test/charades/"): float(group["value"].iloc[-1])
            for name, group in frame.groupby("name") if name.startswith("test/charades/")}


def read_submission(path: Path, with_frame: bool) -> dict[tuple[str, int], list[float]]:
    rows = {}
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        key = (parts[0], int(parts[1]) if with_frame else 0)
        rows[key] = [float(value) for value in parts[2 if with_frame else 1:]]
    return rows


def ground_truth(data: Path) -> tuple[list[str], list[list[int]], list[list[int]]]:
    """From the annotations, as the devkit reads them: ids, video labels and the 25 time points' labels."""
    folder = data / "datasets/charades/defaults/Charades"
    classes = [line.split(" ", 1)[0] for line in (folder / "Charades_v1_classes.txt").read_text().splitlines()]
    ids, videos, points = [], [], []
    with open(folder / "Charades_v1_test.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            actions = [(a.split()[0], float(a.split()[1]), float(a.split()[2]))
                       for a in row["actions"].split(";") if a.strip()]
            length = float(row["length"])
            ids.append(row["id"])
            videos.append([int(any(a[0] == c for a in actions)) for c in classes])
            for j in range(1, 26):
                t = ((j - 1) / 25) * length
                points.append([int(any(a[0] == c and a[1] <= t <= a[2] for a in actions)) for c in classes])
    return ids, videos, points


@pytest.mark.slow
def test_the_submission_files_score_as_the_metrics(trained, scored_data, tmp_path):
    reported = evaluate(trained, scored_data, tmp_path / "save", "evaluation.predict=true")
    assert reported["unreadable_videos"] == 3
    (record_path,) = (tmp_path / "save").rglob("*_submission.json")
    record = json.loads(record_path.read_text())
    assert record["videos_without_lines"] and record["time_points"] == 25 and record["clip_pooling"] == "max"
    classify = read_submission(record_path.parent / record["classify"], with_frame=False)
    localize = read_submission(record_path.parent / record["localize"], with_frame=True)
    ids, video_labels, point_labels = ground_truth(scored_data)
    missing = [-INF] * len(video_labels[0])
    video_rows = [classify.get((video, 0), missing) for video in ids]
    point_rows = [localize.get((video, frame), missing) for video in ids for frame in range(1, 26)]
    for key, rows, labels, classify_rule in (("map", video_rows, video_labels, True),
                                             ("localization_map", point_rows, point_labels, False)):
        mean, weighted = devkit_scores(rows, labels, classify_rule)
        assert same(reported[key], mean) and same(reported[key.replace("map", "wap")], weighted)
    # the same with the classes that have positives only (a number whatever this small split holds)
    kept = [c for c in range(len(video_labels[0])) if any(label[c] for label in video_labels)]
    sub = [[row[c] for c in kept] for row in video_rows], [[label[c] for c in kept] for label in video_labels]
    assert reported["map_all"] == pytest.approx(devkit_scores(*sub, classify=True)[0], abs=1e-12)
    assert not math.isnan(reported["lmap_all"])


@pytest.mark.slow
def test_two_processes_score_as_one(trained, scored_data, tmp_path):
    # one sample per model batch in both, so that each score is computed alike
    one = evaluate(trained, scored_data, tmp_path / "one", "training.batch_size=1")
    two = evaluate(trained, scored_data, tmp_path / "two", "distributed.world_size=2", "training.device=cpu",
                   "training.batch_size=2")
    assert one.keys() == two.keys()
    losses = {key for key in one if key.endswith(("logit_bce", "total_loss"))}
    assert losses
    for key in one.keys() - losses:  # the scores: gathered in file order, so bit-equal
        assert same(one[key], two[key]), key
    for key in losses:  # float32 sums of per-process sums: equal to rounding
        assert one[key] == pytest.approx(two[key], rel=1e-6), key
