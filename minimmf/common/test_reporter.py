"""MMF's prediction files (``evaluation.predict``): one file per evaluated
split, ``<dataset>_<experiment_name>_<split>_<time>.json`` (or ``.csv`` with
``predict_file_format: csv``), in ``env.report_dir`` or else
``<save_dir>/<datasets>_<model>_<seed>/reports``, as MMF's file reporter.
Each file appears whole or not at all (written atomically)."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from minimmf.utils.file_io import atomic_write

REPORT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# what the Charades predictions are made of; MMF's default candidate fields include both
REQUIRED_CANDIDATE_FIELDS = ("id", "scores")


def report_folder(config: Any) -> Path:
    if config.env.report_dir:
        return Path(config.env.report_dir)
    name = f"{config.datasets}_{config.model}"
    if config.training.seed is not None:
        name += f"_{config.training.seed}"
    return Path(config.env.save_dir) / name / "reports"


def predict_file_format(config: Any) -> str:
    """csv when either MMF key asks for it, else json."""
    reporter_params = config.evaluation.reporter.get("params", None) or {}
    formats = (config.evaluation.predict_file_format, reporter_params.get("predict_file_format", "json"))
    return "csv" if "csv" in formats else "json"


def prediction_stem(config: Any, dataset_name: str, split: str) -> str:
    """``<dataset>_<experiment_name>_<split>_<time>``: the name of a split's prediction files."""
    parts = [dataset_name, config.training.experiment_name, split, time.strftime(REPORT_TIME_FORMAT)]
    return "_".join(part for part in parts if part)


def write_predictions(config: Any, predictions: Sequence[Mapping[str, Any]], stem: str) -> Path:
    folder = report_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    file_format = predict_file_format(config)
    path = folder / f"{stem}.{file_format}"
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        if file_format == "csv":
            writer = csv.DictWriter(handle, list(predictions[0]) if predictions else ["id"])
            writer.writeheader()
            writer.writerows(predictions)
        else:
            json.dump(list(predictions), handle)
    return path
