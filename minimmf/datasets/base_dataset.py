"""``BaseDataset``: what a minimmf dataset gives the trainer besides its
samples: how evaluation scores it (``evaluation_sets``, see
``minimmf.datasets.evaluation``) and the prediction files it writes
(MMF's ``format_for_prediction``, and files of the dataset's own forms, such
as an official devkit's submission files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from minimmf.datasets.evaluation import EvaluationSet


class BaseDataset(Dataset):
    dataset_name = ""

    def evaluation_sets(self) -> dict[str, EvaluationSet]:
        """The ways evaluation scores this split, by name."""
        raise NotImplementedError

    def format_for_prediction(self, ids: list[Any], scores: torch.Tensor) -> list[dict[str, Any]]:
        """MMF's prediction records, one per item."""
        raise NotImplementedError

    def prediction_entries(self) -> set[str]:
        """The report entries the prediction files are made from."""
        return {"ids", "scores"}

    def write_prediction_files(self, entries: dict[str, Any], folder: Path, stem: str) -> list[Path]:
        """Files of the dataset's own forms beside MMF's prediction file (none by default)."""
        return []
