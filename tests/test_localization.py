"""Charades' localization score as the trainer computes it: each video's
time points, the window that scores each and the actions annotated at each,
and ``localization_map`` over them, the same with the DataLoader's workers
decoding the timelines as without."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from minimmf.cli.run import run
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.layout import parse_action_intervals
from minimmf.modules.metrics import localization_map
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config
from tests.conftest import TINY_CONFIG, build_model_from

METRIC = "val/charades/localization_map"


@pytest.fixture(scope="module")
def val_split(synthetic_data_dir):
    config = build_config(TINY_CONFIG, ["model=mmf_transformer", "dataset=charades",
                                        f"env.data_dir={synthetic_data_dir}"])
    return CharadesBuilder().load(config.dataset_config.charades, "val")


def test_time_points_follow_the_annotated_intervals(val_split):
    seconds = val_split.timeline_plan.segment_seconds
    changes_over_time = False
    for idx, row in enumerate(val_split.df.itertuples()):
        windows, window_of, targets = val_split.timeline_item(idx)
        length = float(row.length)
        times = [j / val_split.time_points * length for j in range(val_split.time_points)]
        assert window_of == [min(int(t // seconds), len(windows) - 1) for t in times]
        actions = parse_action_intervals(row.actions, val_split.id_to_name)
        expected = [[any(name == label and start <= t <= end for label, start, end in actions)
                     for name in val_split.classes] for t in times]
        assert targets.tolist() == [[float(hit) for hit in point] for point in expected]
        changes_over_time |= len({tuple(point) for point in expected}) > 1
    assert changes_over_time, "no held-out video has actions that start or end inside it: the test shows nothing"


# this small split may lack a class (then the devkit's mean is NaN): score the classes it has
SCORED = "evaluation.metrics=[{'type': 'localization_map', 'params': {'skip_classes_without_positives': True}}]"


def evaluated_localization_map(trained, data_dir, save_dir, *extra: str) -> float:
    run([f"config={trained / 'config.yaml'}", "run_type=val", f"env.save_dir={save_dir}", f"env.data_dir={data_dir}",
         f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}", SCORED, *extra])
    metrics = pd.read_csv(save_dir / "metrics.csv")
    return float(metrics[metrics["name"] == METRIC]["value"].iloc[-1])


@torch.inference_mode()
def test_localization_map_scores_each_time_point_by_its_window(trained, synthetic_data_dir, val_split, tmp_path):
    model = build_model_from(TINY_CONFIG)
    model.load_state_dict(load_checkpoint_file(trained / "mmf_transformer_final.pth"))
    model.eval()
    scores, targets = [], []
    for idx in range(len(val_split)):
        windows, window_of, point_targets = val_split.timeline_item(idx)
        scores.append(model(SampleList(windows))["scores"][window_of])
        targets.append(point_targets)
    expected = localization_map(torch.cat(scores), torch.cat(targets), skip_classes_without_positives=True)
    in_process = evaluated_localization_map(trained, synthetic_data_dir, tmp_path / "no_workers",
                                            "training.num_workers=0")
    with_workers = evaluated_localization_map(trained, synthetic_data_dir, tmp_path / "workers",
                                              "training.num_workers=2", "training.batch_size=3")
    assert not math.isnan(expected)
    assert in_process == pytest.approx(expected, abs=1e-5)
    assert with_workers == pytest.approx(expected, abs=1e-5)
