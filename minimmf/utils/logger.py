"""Logging set-up, as in MMF's ``mmf.utils.logger``: the console, the run's
log files, progress lines (``training.log_format``), TensorBoard scalars and
the ``metrics.csv`` / ``curves.png`` training curves."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimmf.utils.file_io import atomic_write

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


@dataclass(frozen=True)
class Curve:
    """One drawn series of ``metrics.csv``: ``final`` is the evaluation after
    training (one point per name, at the update of the weights it scored)."""

    name: str
    updates: list[int]
    values: list[float]
    final: bool = False


class MetricsLogger:
    """Training curves you can look at: ``metrics.csv`` (update, name, value,
    stage) and ``curves.png`` drawn from it.

    The file holds one run: the training rows of an earlier file up to
    ``keep_until`` are kept, the rest is dropped. So a run that trains from
    update 0 starts anew; a resumed one keeps the rows up to the update it
    resumes from (later ones came from updates its checkpoint does not hold);
    an evaluation-only run (``math.inf``) keeps the training curves.
    ``stage`` is ``training`` for the logs and evaluations during training and
    ``final`` for the evaluation that ends a run (``final()``). Every write
    replaces the whole file atomically, so a killed run leaves a complete one.
    """

    COLUMNS = ("update", "name", "value", "stage")

    def __init__(self, save_dir: str | os.PathLike, keep_until: float = 0):
        self.csv_path = Path(save_dir) / "metrics.csv"
        self.png_path = Path(save_dir) / "curves.png"
        self.rows = self._rows_until(keep_until) if keep_until > 0 else []
        self.final_update: int | None = None
        self._write()

    def _rows_until(self, update: float) -> list[tuple[int, str, float, str]]:
        if not self.csv_path.is_file():
            return []
        frame = read_metrics(self.csv_path)
        kept = frame[(frame["update"] <= update) & (frame["stage"] == "training")]
        return list(kept.itertuples(index=False, name=None))

    def final(self, update: int) -> None:
        """Rows logged from now on are the run's final evaluation, of the weights of update ``update``."""
        self.final_update = update

    def log(self, update: int, values: Mapping[str, float]) -> None:
        stage = "training" if self.final_update is None else "final"
        update = update if self.final_update is None else self.final_update
        self.rows += [(update, name, float(value), stage) for name, value in values.items()]
        self._write()

    def _write(self) -> None:
        with atomic_write(self.csv_path, "w", encoding="utf-8") as handle:
            handle.write(",".join(self.COLUMNS) + "\n")
            handle.writelines(f"{update},{name},{value!r},{stage}\n" for update, name, value, stage in self.rows)

    def plot(self, metric_keys: Collection[str]) -> Path:
        """``curves.png``: the total losses on the left, the metrics (the rows
        whose name ends in one of ``metric_keys``) on the right."""
        figure = draw_curves(curve_panels(read_metrics(self.csv_path), metric_keys))
        import matplotlib.pyplot as plt

        with atomic_write(self.png_path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=100)
        plt.close(figure)
        return self.png_path


def read_metrics(path: str | os.PathLike) -> Any:
    """``metrics.csv`` as a DataFrame (a file written before the ``stage`` column: all ``training``)."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "stage" not in frame:
        frame["stage"] = "training"
    return frame


def curve_panels(frame: Any, metric_keys: Collection[str]) -> dict[str, list[Curve]]:
    """What ``curves.png`` draws: a "loss" panel (every ``*total_loss``) and a
    "metrics" panel (every name whose last part is one of ``metric_keys``),
    each name once as a curve over the training updates and once as its
    final point, where the run has them."""
    keys = set(metric_keys)
    panels: dict[str, list[Curve]] = {"loss": [], "metrics": []}
    for name in frame["name"].unique():
        panel = "loss" if name.endswith("total_loss") else "metrics" if name.split("/")[-1] in keys else None
        if panel is None:
            continue
        rows = frame[frame["name"] == name]
        for final in (False, True):
            part = rows[(rows["stage"] == "final") == final]
            if len(part):
                panels[panel].append(Curve(name, [int(u) for u in part["update"]], [float(v) for v in part["value"]],
                                           final))
    return panels


def draw_curves(panels: Mapping[str, list[Curve]]) -> Any:
    """A matplotlib figure of ``panels``: training curves as lines, final
    evaluations as stars labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items(), strict=True):
        colors: dict[str, Any] = {}
        for curve in curves:
            if curve.final:
                axis.plot(curve.updates, curve.values, linestyle="none", marker="*", markersize=11,
                          color=colors.get(curve.name), label=f"{curve.name}, final evaluation (update "
                                                              f"{curve.updates[0]} weights)")
            else:
                line, = axis.plot(curve.updates, curve.values, marker="." if len(curve.updates) < 50 else None,
                                  label=curve.name)
                colors[curve.name] = line.get_color()
        axis.set_xlabel("update")
        axis.set_title(title)
        if curves:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
