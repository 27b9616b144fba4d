"""Logging set-up, as in MMF's ``mmf.utils.logger``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_FORMAT = "%(asctime)s | %(levelname)s | %(name)s : %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def setup_very_basic_config(level: int | str = logging.INFO) -> None:
    """Plain stdout logging for the ``minimmf`` loggers, without touching
    handlers a host application (TorchServe, pytest) already installed."""
    logger = logging.getLogger("minimmf")
    logger.setLevel(level)
    if not any(getattr(h, "_minimmf", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
        handler._minimmf = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def add_file_handler(path: str | os.PathLike, level: int | str = logging.INFO) -> logging.Handler:
    """Also write the ``minimmf`` logs to ``path`` (e.g. ``save/train.log``)."""
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
    logging.getLogger("minimmf").addHandler(handler)
    return handler


class MetricsLogger:
    """Training curves you can look at: ``metrics.csv`` (update, name, value)
    appended as training goes, and ``curves.png`` drawn from it."""

    def __init__(self, save_dir: str | os.PathLike):
        self.csv_path = Path(save_dir) / "metrics.csv"
        self.png_path = Path(save_dir) / "curves.png"
        if not self.csv_path.exists():
            self.csv_path.write_text("update,name,value\n")

    def log(self, update: int, values: dict[str, float]) -> None:
        with open(self.csv_path, "a", encoding="utf-8") as handle:
            handle.writelines(f"{update},{name},{value:.6g}\n" for name, value in values.items())

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd

        frame = pd.read_csv(self.csv_path)
        losses = [n for n in frame["name"].unique() if n.endswith("loss")]
        scores = [n for n in frame["name"].unique() if not n.endswith("loss") and not n.endswith("lr")]
        figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4))
        for axis, names, title in ((loss_axis, losses, "loss"), (score_axis, scores, "validation metrics")):
            for name in names:
                series = frame[frame["name"] == name]
                axis.plot(series["update"], series["value"], marker="." if len(series) < 50 else None, label=name)
            axis.set_xlabel("update")
            axis.set_title(title)
            if names:
                axis.legend(fontsize=8)
            axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(self.png_path, dpi=100)
        plt.close(figure)
        return self.png_path
