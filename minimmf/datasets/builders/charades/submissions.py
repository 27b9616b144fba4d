"""The official Charades devkit's submission files, which its
``Charades_v1_classify.m`` and ``Charades_v1_localize.m`` (and the Charades
leaderboard) score:

- classification, ``<stem>_classify.txt``: one line per video, ``<id>`` then
  its 157 (or the class file's count) scores, space-separated;
- localization, ``<stem>_localize.txt``: 25 lines per video (the
  ``time_points``), ``<id> <frame 1..25>`` then the scores at that time point.

Columns follow the class ids (``c000``, ``c001``, ...) whatever order the
model's outputs are in. The scores are the logits, written so that they read
back to the same ranking (a float32 value as its shortest float32 text, a
float64 one, from pooling, in full). A video that could not be read has no
lines: the devkit then scores it as it scores any missing video, so it
matches this project's own metrics. ``<stem>_submission.json`` records what
produced the files (clip pooling, timeline settings, the time points).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minimmf.utils.file_io import atomic_write

logger = logging.getLogger(__name__)

FORMS = ("classify", "localize")


def score_text(value: float) -> str:
    """A score as text that reads back to the same value (float32 values as their shortest text)."""
    single = np.float32(value)
    if math.isfinite(value) and float(single) == value:
        return str(single)
    return repr(float(value))


def class_columns(id_to_name: dict[str, str], class_to_idx: dict[str, int]) -> list[int]:
    """The model's output column of each class, in class-id order (c000, c001, ...)."""
    return [class_to_idx[id_to_name[class_id]] for class_id in sorted(id_to_name)]


def _lines(rows: Iterable[tuple[str, torch.Tensor]], columns: Sequence[int]) -> Iterable[str]:
    for prefix, scores in rows:
        values = scores[list(columns)].tolist()
        yield prefix + " " + " ".join(score_text(value) for value in values) + "\n"


def _readable(scores: torch.Tensor) -> bool:
    return not bool(torch.isneginf(scores).all())


def write_classify(path: Path, ids: Sequence[str], scores: torch.Tensor, columns: Sequence[int]) -> Path:
    rows = ((str(video), row) for video, row in zip(ids, scores, strict=True) if _readable(row))
    with atomic_write(path) as handle:
        handle.writelines(_lines(rows, columns))
    return path


def write_localize(path: Path, ids: Sequence[str], time_point_scores: torch.Tensor, time_points: int,
                   columns: Sequence[int]) -> Path:
    per_video = time_point_scores.view(len(ids), time_points, -1)
    rows = ((f"{video} {frame + 1}", point) for video, points in zip(ids, per_video, strict=True)
            if _readable(points) for frame, point in enumerate(points))
    with atomic_write(path) as handle:
        handle.writelines(_lines(rows, columns))
    return path


def write_submissions(folder: Path, stem: str, forms: Sequence[str], entries: dict[str, Any],
                      columns: Sequence[int], settings: dict[str, Any]) -> list[Path]:
    """The devkit files of ``forms`` from a split's report entries, and what produced them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    if "classify" in forms:
        written["classify"] = write_classify(folder / f"{stem}_classify.txt", entries["ids"], entries["scores"],
                                             columns)
    if "localize" in forms:
        written["localize"] = write_localize(folder / f"{stem}_localize.txt", entries["ids"],
                                             entries["time_point_scores"], settings["time_points"], columns)
    unreadable = [str(video) for video, row in zip(entries["ids"], entries["scores"], strict=True)
                  if not _readable(row)]
    record = {**{form: path.name for form, path in written.items()}, "scores": "logits",
              "columns": "class ids in order (c000, c001, ...)", **settings, "videos_without_lines": unreadable}
    with atomic_write(folder / f"{stem}_submission.json") as handle:
        json.dump(record, handle, indent=2)
    for form, path in written.items():
        logger.info("wrote the Charades devkit %s submission %s", form, path.resolve())
    return [*written.values(), folder / f"{stem}_submission.json"]
