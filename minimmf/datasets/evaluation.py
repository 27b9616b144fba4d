"""What a dataset scores in evaluation, as data (MMF's metrics name the
report entries they need, ``required_params``; a dataset says here how to
make them).

An ``EvaluationSet`` is a Dataset of ``EvaluationItem``s (one video's
samples: its clips, or its timeline's windows), made by the DataLoader's
workers, and it ``provides`` named report entries: once the model has
scored every item, ``combine`` turns their scores, in the split's order,
into those entries (``scores``/``targets`` for the video-level metrics,
``time_point_scores``/``time_point_targets`` for localization, ...). An
item whose video cannot be read has no samples and says why; ``combine``
decides what it counts as (for Charades, as the official devkit: no
scores, so its positives still count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from minimmf.common.sample import Sample


@dataclass
class EvaluationItem:
    index: int  # its position in the split: items are combined in this order (the annotation files')
    samples: list[Sample]  # what the model scores; empty when the video could not be read
    info: Any = None  # what ``combine`` needs besides the scores (ids, targets, ...)
    error: str | None = None  # why there are no samples


@dataclass
class ScoredItem:
    """An item after the model: its scores, one row per sample (None without samples)."""

    index: int
    scores: Tensor | None
    info: Any = None
    error: str | None = None


class EvaluationSet(Dataset):
    """One way of scoring a split (see the module's docstring)."""

    name = ""  # for progress bars and logs
    # the report entries ``combine`` returns
    provides: tuple[str, ...] = ()
    # its samples carry targets, so the model's losses are averaged over them
    with_losses = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, position: int) -> EvaluationItem:
        raise NotImplementedError

    def combine(self, items: list[ScoredItem]) -> dict[str, Any]:
        """The report entries from every item, in the split's order."""
        raise NotImplementedError
