"""Logging set-up, as in MMF's ``mmf.utils.logger``: the console, the run's
log files, progress lines (``training.log_format``), TensorBoard scalars and
the ``metrics.csv`` / ``curves.png`` training curves."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_FORMAT = "%(asctime)s | %(levelname)s | %(name)s : %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
FILE_TIME_FORMAT = "%Y_%m_%dT%H_%M_%S"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("simple", "json")


def setup_very_basic_config(level: int | str = logging.INFO) -> None:
    """Plain stdout logging for the ``minimmf`` loggers, without touching
    handlers a host application (TorchServe, pytest) already installed."""
    logger = logging.getLogger("minimmf")
    logger.setLevel(level)
    if _console_handler() is None:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
        logger.addHandler(handler)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (pytest and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _console_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger("minimmf").handlers if isinstance(h, _StdoutHandler)), None)


def add_file_handler(path: str | os.PathLike, level: int | str = logging.INFO) -> logging.Handler:
    """Also write the ``minimmf`` logs to ``path`` (appended)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
    logging.getLogger("minimmf").addHandler(handler)
    return handler


class ColorfulFormatter(logging.Formatter):
    """Warnings and errors in red (``training.colored_logs`` on a terminal)."""

    _COLORS = {logging.WARNING: "\x1b[31m", logging.ERROR: "\x1b[1;31m", logging.CRITICAL: "\x1b[1;31m"}

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = super().formatMessage(record)
        color = self._COLORS.get(record.levelno)
        return f"{color}{message}\x1b[0m" if color else message


def log_folder(config: Any) -> Path:
    """Where a run's logs go: ``env.log_dir``, else ``<save_dir>/logs``."""
    return Path(config.env.log_dir or Path(config.env.save_dir) / "logs")


class RunLogging:
    """The logging of one run, undone by ``close()`` (so that later runs in the
    same process do not write into this run's files).

    The main process logs at ``training.logger_level`` to the console and to
    ``<save_dir>/train.log`` (appended across resumed runs) and
    ``<log folder>/train_<time>.log``, as MMF. Other processes, and
    ``training.should_not_log``, log warnings and errors to the console only.
    """

    def __init__(self, config: Any, is_main: bool):
        training = config.training
        self.logger = logging.getLogger("minimmf")
        self.previous_level = self.logger.level
        self.console = _console_handler()
        self.previous_formatter = self.console.formatter if self.console is not None else None
        self.file_handlers: list[logging.Handler] = []
        if not is_main or training.should_not_log:
            self.logger.setLevel(logging.WARNING)
            return
        level = str(training.logger_level).upper()
        self.logger.setLevel(level)
        if self.console is not None and training.colored_logs and self.console.stream.isatty():
            self.console.setFormatter(ColorfulFormatter(_FORMAT, _DATE_FORMAT))
        run_log = log_folder(config) / f"train_{time.strftime(FILE_TIME_FORMAT)}.log"
        self.file_handlers = [add_file_handler(Path(config.env.save_dir) / "train.log", level),
                              add_file_handler(run_log, level)]

    def close(self) -> None:
        for handler in self.file_handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.file_handlers = []
        self.logger.setLevel(self.previous_level)
        if self.console is not None:
            self.console.setFormatter(self.previous_formatter)


def log_progress(logger: logging.Logger, info: Mapping[str, Any], log_format: str) -> None:
    """One progress line: ``key: value, ...`` (simple) or a JSON object."""
    if log_format == "json":
        logger.info(json.dumps(dict(info)))
    else:
        logger.info(", ".join(f"{key}: {value}" for key, value in info.items()))


class TensorboardLogger:
    """Scalars for TensorBoard in ``<folder>/tensorboard_<time>``, as MMF."""

    def __init__(self, folder: str | os.PathLike):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder) / f"tensorboard_{time.strftime(FILE_TIME_FORMAT)}"
        self.writer = SummaryWriter(str(self.folder))

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MetricsLogger:
    """Training curves you can look at: ``metrics.csv`` (update, name, value)
    appended as training goes, and ``curves.png`` drawn from it."""

    def __init__(self, save_dir: str | os.PathLike):
        self.csv_path = Path(save_dir) / "metrics.csv"
        self.png_path = Path(save_dir) / "curves.png"
        if not self.csv_path.exists():
            self.csv_path.write_text("update,name,value\n")

    def log(self, update: int, values: Mapping[str, float]) -> None:
        with open(self.csv_path, "a", encoding="utf-8") as handle:
            handle.writelines(f"{update},{name},{float(value)!r}\n" for name, value in values.items())

    def plot(self, score_names: Iterable[str]) -> Path:
        """The total losses on the left, ``score_names`` (the metrics) on the right."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd

        frame = pd.read_csv(self.csv_path)
        names = list(frame["name"].unique())
        losses = [n for n in names if n.endswith("total_loss")]
        scores = [n for n in names if n in set(score_names)]
        figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4))
        for axis, panel, title in ((loss_axis, losses, "loss"), (score_axis, scores, "metrics")):
            for name in panel:
                series = frame[frame["name"] == name]
                axis.plot(series["update"], series["value"], marker="." if len(series) < 50 else None, label=name)
            axis.set_xlabel("update")
            axis.set_title(title)
            if panel:
                axis.legend(fontsize=8)
            axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(self.png_path, dpi=100)
        plt.close(figure)
        return self.png_path
