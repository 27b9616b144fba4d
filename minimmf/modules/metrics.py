"""Multi-label metrics for Charades, registered under MMF's names.

Each metric takes sigmoid-able ``scores`` (N, C) logits and multi-hot
``targets`` (N, C) and returns a float; it names the report entries it is
computed from in ``required_params`` (MMF's), in the order it takes them, so
that a dataset can provide them (``minimmf.datasets.evaluation``).
``multilabel_micro_f1`` and ``multilabel_macro_f1`` predict a class when its
sigmoid reaches the dataset's ``prediction_threshold`` (0.5, as MMF's rounding,
and the rule of the prediction files and of serving, ``modules.predictions``);
``map``/``wap`` and ``localization_map``/``localization_wap`` are the
numbers the official Charades devkit reports (``Charades_v1_classify.m``,
``Charades_v1_localize.m``): per-class average precision on the scores as
they are (logits: no saturated float32 probabilities, so no ties the model
did not make), ties broken by row order (the split's file order), computed
in float64; their plain mean, and their mean weighted by each class's
positives. Classification scores the videos without actions -inf (the
devkit gives them no scores, so they rank last); localization scores every time point (25 equally
spaced per video, each scored by the timeline window holding it, against
the actions whose start/end hold it), from the dataset's ``time_point_*``
entries. A class without positives has no AP: NaN, which makes the mean NaN,
as in the devkit (``params: {skip_classes_without_positives: true}`` leaves
such classes out instead). MMF's own ``ap`` metrics apply a softmax, which
does not fit multi-label data.

``evaluation.metrics`` lists names or MMF's dict form, ``{type, key, params,
datasets}``: ``key`` renames the report entry, ``params`` go to the metric,
``datasets`` limits it to those datasets.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from minimmf.common.registry import registry
from minimmf.modules.predictions import predicted

Metric = Callable[[Tensor, Tensor], float]


def _binary_predictions(scores: Tensor, threshold: float) -> Tensor:
    return predicted(torch.sigmoid(scores.double()), threshold).float()


def _counts(scores: Tensor, targets: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    predicted = _binary_predictions(scores, threshold)
    targets = targets.float()
    true_positive = (predicted * targets).sum(dim=0)
    false_positive = (predicted * (1 - targets)).sum(dim=0)
    false_negative = ((1 - predicted) * targets).sum(dim=0)
    return true_positive, false_positive, false_negative


def required_params(*names: str) -> Callable[[Metric], Metric]:
    """Declare the report entries a metric is computed from (default: scores, targets)."""
    def declare(function: Metric) -> Metric:
        function.required_params = names
        return function
    return declare


@registry.register_metric("multilabel_micro_f1")
@required_params("scores", "targets", "prediction_threshold")
def multilabel_micro_f1(scores: Tensor, targets: Tensor, prediction_threshold: float = 0.5) -> float:
    tp, fp, fn = (count.sum() for count in _counts(scores, targets, prediction_threshold))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator > 0 else 0.0


@registry.register_metric("multilabel_macro_f1")
@required_params("scores", "targets", "prediction_threshold")
def multilabel_macro_f1(scores: Tensor, targets: Tensor, prediction_threshold: float = 0.5) -> float:
    """Mean of per-class F1; a class never predicted nor present scores 0 (as sklearn)."""
    tp, fp, fn = _counts(scores, targets, prediction_threshold)
    denominator = 2 * tp + fp + fn
    per_class = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    return float(per_class.mean())


def average_precision(class_scores: Tensor, class_targets: Tensor) -> float:
    """One class's average precision as the Charades devkit computes it
    (``THUMOSeventclspr``): the rows ranked by descending score, equal scores
    in row order, NaN last; the precision at each positive's rank, summed in
    that order in float64, over the number of positives; NaN without positives."""
    scores = class_scores.detach().double().cpu().numpy()
    hits = class_targets.detach().cpu().numpy()[np.argsort(-scores, kind="stable")] > 0
    positives = int(hits.sum())
    if positives == 0:
        return math.nan
    ranks = np.flatnonzero(hits) + 1.0
    total = 0.0
    for precision in np.arange(1, positives + 1) / ranks:
        total += float(precision)
    return total / positives


def class_average_precisions(scores: Tensor, targets: Tensor) -> tuple[list[float], list[int]]:
    """Each class's average precision, and its number of positive rows."""
    return ([average_precision(scores[:, c], targets[:, c]) for c in range(targets.size(1))],
            [int((targets[:, c] > 0).sum()) for c in range(targets.size(1))])


def _mean(values: list[float], skip_nan: bool) -> float:
    kept = [value for value in values if not (skip_nan and math.isnan(value))]
    return math.fsum(kept) / len(kept) if kept else math.nan


def _weighted(values: list[float], weights: list[int], skip_nan: bool) -> float:
    pairs = [(value, weight) for value, weight in zip(values, weights, strict=True)
             if not (skip_nan and math.isnan(value))]
    total = sum(weight for _, weight in pairs)
    return math.fsum(value * weight for value, weight in pairs) / total if total else math.nan


def _labelled_rows(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The rows as ``Charades_v1_classify.m`` scores them: a video without any action
    gets no scores (-inf), whatever was submitted, so it ranks last, in row order."""
    scores = scores.double().clone()
    scores[targets.sum(dim=1) == 0] = -math.inf
    return scores, targets


@registry.register_metric("map")
def mean_average_precision(scores: Tensor, targets: Tensor, skip_classes_without_positives: bool = False) -> float:
    """Charades' classification mAP, as ``Charades_v1_classify.m``: the plain
    mean of the classes' average precisions, videos without actions scored
    -inf (NaN when a class has no positive, unless ``skip_classes_without_positives``)."""
    aps, _ = class_average_precisions(*_labelled_rows(scores, targets))
    return _mean(aps, skip_classes_without_positives)


@registry.register_metric("wap")
def weighted_average_precision(scores: Tensor, targets: Tensor,
                               skip_classes_without_positives: bool = False) -> float:
    """Charades' classification wAP: the classes' average precisions weighted by their positives."""
    return _weighted(*class_average_precisions(*_labelled_rows(scores, targets)), skip_classes_without_positives)


@dataclass
class ConfiguredMetric:
    """One entry of ``evaluation.metrics``, reported as ``<split>/<dataset>/<key>``."""

    key: str
    function: Metric
    # the datasets it applies to; empty: every dataset
    datasets: list[str] = field(default_factory=list)

    def applies_to(self, dataset_name: str) -> bool:
        return not self.datasets or dataset_name in self.datasets

    @property
    def arguments(self) -> dict[str, str]:
        """The report entry each argument of the metric comes from (those its
        ``params`` do not set)."""
        function = self.function.func if isinstance(self.function, partial) else self.function
        fixed = self.function.keywords if isinstance(self.function, partial) else {}
        names = list(inspect.signature(function).parameters)
        required = getattr(function, "required_params", ("scores", "targets"))
        return {name: entry for name, entry in zip(names, required, strict=False) if name not in fixed}

    @property
    def required_params(self) -> tuple[str, ...]:
        """The report entries the metric is computed from."""
        return tuple(self.arguments.values())

    def __call__(self, report: Mapping[str, Any]) -> float:
        """The metric of a report that holds its ``required_params``."""
        return self.function(**{name: report[entry] for name, entry in self.arguments.items()})


@registry.register_metric("localization_map")
@required_params("time_point_scores", "time_point_targets")
def localization_map(scores: Tensor, targets: Tensor, skip_classes_without_positives: bool = False) -> float:
    """Charades' localization mAP, as ``Charades_v1_localize.m``: over every
    time point of every video ((videos x points, classes)), those without
    actions included."""
    return _mean(class_average_precisions(scores, targets)[0], skip_classes_without_positives)


@registry.register_metric("localization_wap")
@required_params("time_point_scores", "time_point_targets")
def localization_weighted_average_precision(scores: Tensor, targets: Tensor,
                                            skip_classes_without_positives: bool = False) -> float:
    """Charades' localization wAP: the per-frame APs weighted by their positive time points."""
    return _weighted(*class_average_precisions(scores, targets), skip_classes_without_positives)


def build_metric(entry: Any) -> ConfiguredMetric:
    """A metric name, or MMF's ``{type, key, params, datasets}`` form."""
    if isinstance(entry, str):
        return ConfiguredMetric(entry, registry.require("metric", entry))
    if not isinstance(entry, collections.abc.Mapping) or "type" not in entry:
        raise ValueError(f"evaluation.metrics entry {entry!r} must be a metric name or have a 'type'")
    metric_type = str(entry["type"])
    function = registry.require("metric", metric_type)
    params = dict(entry.get("params", None) or {})
    try:
        signature = inspect.signature(function)
        required = getattr(function, "required_params", ("scores", "targets"))
        from_report = [name for name in list(signature.parameters)[:len(required)] if name not in params]
        signature.bind(**dict.fromkeys(from_report), **params)
    except TypeError as error:
        raise ValueError(f"metric {metric_type!r} does not take params {params}: {error}") from None
    datasets = [str(name) for name in entry.get("datasets", None) or []]
    return ConfiguredMetric(str(entry.get("key", metric_type)), partial(function, **params), datasets)


def build_metrics(metric_list: Sequence[Any]) -> dict[str, ConfiguredMetric]:
    """``evaluation.metrics`` -> {key: metric}; a key may appear once."""
    metrics: dict[str, ConfiguredMetric] = {}
    for entry in metric_list:
        metric = build_metric(entry)
        if metric.key in metrics:
            raise ValueError(f"evaluation.metrics lists {metric.key!r} twice; give one of them another 'key'")
        metrics[metric.key] = metric
    return metrics
