"""Logging set-up, as in MMF's ``mmf.utils.logger``."""

from __future__ import annotations

import logging
import os
import sys

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
