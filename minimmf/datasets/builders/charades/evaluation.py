"""How a Charades split is scored (``CharadesDataset.evaluation_sets``):

- ``VideoScores``: each video by its clip (or its ``clips`` clips, pooled by
  ``clip_pooling``), for the video-level metrics, the losses and the
  prediction files: ``scores`` (logits, one row per video), ``targets``, ``ids``;
- ``TimePointScores``: each video's ``time_points`` localization time points,
  each scored by the timeline window that holds it, for ``localization_map``:
  ``time_point_scores`` and ``time_point_targets``.

A video that is missing or cannot be decoded is logged and kept, as the
official devkit keeps a video missing from a submission: its rows score
``-inf`` for every class, so its positives still count against the model.
Both report how many there were (``unreadable_videos``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from minimmf.datasets.evaluation import EvaluationItem, EvaluationSet, ScoredItem
from minimmf.datasets.video_clips import VideoDecodeError
from minimmf.modules.predictions import pool_clip_logits

logger = logging.getLogger(__name__)


def _no_scores(rows: int, classes: int) -> torch.Tensor:
    return torch.full((rows, classes), -math.inf, dtype=torch.float64)


def _unreadable(items: list[ScoredItem], split: str) -> int:
    failed = [item for item in items if item.error is not None]
    for item in failed:
        logger.warning("%s: scored without predictions (as a video missing from a submission): %s", split,
                       item.error)
    return len(failed)


def _warn_classes_without_positives(targets: torch.Tensor, classes: list[str], split: str, where: str) -> None:
    """Name the classes whose average precision is NaN (the devkit's mAP is then NaN too)."""
    absent = [name for name, count in zip(classes, targets.sum(dim=0).tolist(), strict=True) if count == 0]
    if absent and len(targets):
        logger.warning("%s: %d class(es) have no positive %s, so their AP and the mean AP are NaN as in the "
                       "Charades devkit (params: {skip_classes_without_positives: true} leaves them out): %s",
                       split, len(absent), where, ", ".join(absent))


class VideoScores(EvaluationSet):
    name = "videos"
    provides = ("scores", "targets", "ids", "prediction_threshold", "unreadable_videos")
    with_losses = True

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> EvaluationItem:
        row = self.dataset.df.iloc[position]
        info = (row["id"], self.dataset.targets_for(row["action_labels"]))
        try:
            samples, _ = self.dataset._samples(position, self.dataset.item_plan)
        except VideoDecodeError as error:
            return EvaluationItem(position, [], info, str(error))
        return EvaluationItem(position, samples, info)

    def combine(self, items: list[ScoredItem]) -> dict[str, Any]:
        classes = len(self.dataset.classes)
        pooling = self.dataset.clip_pooling
        scores = [pool_clip_logits(item.scores, pooling).double() if item.scores is not None
                  else _no_scores(1, classes)[0] for item in items]
        targets = torch.stack([item.info[1] for item in items]) if items else torch.zeros(0, classes)
        _warn_classes_without_positives(targets, self.dataset.classes, self.dataset.dataset_type, "video")
        return {
            "ids": [item.info[0] for item in items],
            "scores": torch.stack(scores) if scores else torch.zeros(0, classes, dtype=torch.float64),
            "targets": targets,
            "prediction_threshold": self.dataset.prediction_threshold,
            "unreadable_videos": _unreadable(items, self.dataset.dataset_type),
        }


class TimePointScores(EvaluationSet):
    name = "time points"
    provides = ("time_point_scores", "time_point_targets", "unreadable_videos")

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> EvaluationItem:
        try:
            windows, window_of, targets = self.dataset.timeline_item(position)
        except VideoDecodeError as error:
            length = self.dataset.video_length(position)
            if length is None:  # no length in the annotations: its time points cannot be placed
                raise VideoDecodeError(f"{error} (and its annotations give no length to score it without "
                                       "decoding)") from error
            targets = self.dataset.time_point_targets(position, self.dataset.time_points_of(position, length))
            return EvaluationItem(position, [], (None, targets), str(error))
        return EvaluationItem(position, windows, (window_of, targets))

    def combine(self, items: list[ScoredItem]) -> dict[str, Any]:
        classes = len(self.dataset.classes)
        scores = [item.scores[item.info[0]].double() if item.scores is not None
                  else _no_scores(len(item.info[1]), classes) for item in items]
        targets = torch.cat([item.info[1] for item in items]) if items else torch.zeros(0, classes)
        _warn_classes_without_positives(targets, self.dataset.classes, self.dataset.dataset_type, "time point")
        return {
            "time_point_scores": torch.cat(scores) if scores else torch.zeros(0, classes, dtype=torch.float64),
            "time_point_targets": targets,
            "unreadable_videos": _unreadable(items, self.dataset.dataset_type),
        }
