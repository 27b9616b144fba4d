"""The Charades metrics on hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch

from minimmf.common.registry import registry
from minimmf.modules.metrics import average_precision, build_metrics
from minimmf.utils.env import setup_imports

setup_imports()
BIG = 10.0  # a logit whose sigmoid is ~1


def logits(probabilities: list[list[float]]) -> torch.Tensor:
    p = torch.tensor(probabilities).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def test_micro_f1():
    targets = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.float)
    scores = torch.tensor([[BIG, BIG, -BIG], [-BIG, BIG, -BIG]])  # TP=2, FP=1, FN=1
    assert registry.get_metric_class("multilabel_micro_f1")(scores, targets) == pytest.approx(4 / 6)
    assert registry.get_metric_class("multilabel_micro_f1")(torch.full((2, 3), -BIG), torch.zeros(2, 3)) == 0.0


def test_macro_f1_counts_empty_classes_as_zero():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.float)
    scores = torch.tensor([[BIG, -BIG, -BIG], [BIG, -BIG, -BIG]])  # class0 F1=1, class1 F1=0, class2 empty=0
    assert registry.get_metric_class("multilabel_macro_f1")(scores, targets) == pytest.approx(1 / 3)


def test_threshold_is_half():
    targets = torch.tensor([[1.0]])
    assert registry.get_metric_class("multilabel_micro_f1")(logits([[0.51]]), targets) == 1.0
    assert registry.get_metric_class("multilabel_micro_f1")(logits([[0.49]]), targets) == 0.0


def test_average_precision_by_hand():
    # ranked: pos, neg, pos, neg -> precisions at positives 1/1 and 2/3
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    assert average_precision(scores, torch.tensor([1.0, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)


def test_a_class_without_positives_makes_map_nan_as_the_devkit():
    scores = logits([[0.9, 0.2, 0.5], [0.1, 0.8, 0.4], [0.6, 0.3, 0.3]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=torch.float)
    # class 0: AP 1; class 1: ranks 0.8(pos), 0.3(pos), 0.2(neg) -> 1; class 2 has no positive
    assert math.isnan(registry.get_metric_class("map")(scores, targets))
    assert registry.get_metric_class("map")(scores, targets, skip_classes_without_positives=True) == 1.0
    # class 0: only 0.6 is positive (rank 2) -> 1/2; class 1: 0.8 (rank 1), 0.2 (rank 3) -> (1 + 2/3)/2
    targets = torch.tensor([[0, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=torch.float)
    class_2 = 1 / 3  # its one positive, 0.3, ranks third
    expected = (0.5 + (1 + 2 / 3) / 2 + class_2) / 3
    assert registry.get_metric_class("map")(scores, targets) == pytest.approx(expected)
    weighted = (0.5 * 1 + (1 + 2 / 3) / 2 * 2 + class_2 * 1) / 4
    assert registry.get_metric_class("wap")(scores, targets) == pytest.approx(weighted)


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="no metric named 'accuracy'"):
        build_metrics(["accuracy"])


def test_metrics_take_mmfs_dict_form():
    metrics = build_metrics(["map", {"type": "multilabel_micro_f1", "key": "f1", "datasets": ["other"]}])
    assert list(metrics) == ["map", "f1"]
    assert metrics["map"].applies_to("charades") and not metrics["f1"].applies_to("charades")
    scores, targets = logits([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]])
    assert metrics["f1"].required_params == ("scores", "targets", "prediction_threshold")
    assert metrics["f1"]({"scores": scores, "targets": targets, "prediction_threshold": 0.5}) == 1.0
    assert metrics["f1"]({"scores": scores, "targets": targets, "prediction_threshold": 0.95}) == 0.0
    with pytest.raises(ValueError, match="metric 'map' does not take params"):
        build_metrics([{"type": "map", "params": {"average": "micro"}}])
    with pytest.raises(ValueError, match="lists 'map' twice"):
        build_metrics(["map", {"type": "map"}])


def test_metrics_name_the_report_entries_they_need():
    metrics = build_metrics(["map", "localization_map", {"type": "multilabel_macro_f1",
                                                         "params": {"prediction_threshold": 0.3}}])
    assert metrics["map"].required_params == ("scores", "targets")
    assert metrics["localization_map"].required_params == ("time_point_scores", "time_point_targets")
    # a threshold set in the metric's params is not taken from the report
    assert metrics["multilabel_macro_f1"].required_params == ("scores", "targets")
    report = {"scores": logits([[0.4, 0.2]]), "targets": torch.tensor([[1.0, 0.0]])}
    assert metrics["multilabel_macro_f1"](report) == 0.5  # 0.4 >= 0.3 is predicted, 0.2 is not
