"""MMF's early stopping: track one key of the validation report
(``training.early_stop.criteria``), remember the best value and when it was
reached, and say when ``patience`` updates went by without improvement."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from minimmf.utils.configuration import ConfigError


def monitored_key(criteria: str) -> str:
    """MMF's rule: a criteria without ``val`` in it is a key of ``val/``."""
    return criteria if "val" in criteria else f"val/{criteria}"


def check_criteria(criteria: str, known_keys: Iterable[str]) -> None:
    """Raise, listing the known keys, when the criteria is not one of them."""
    known = list(known_keys)
    if monitored_key(criteria) not in known:
        shown = ", ".join(key.removeprefix("val/") for key in known)
        raise ConfigError(f"training.early_stop.criteria={criteria!r} is not in the validation report; "
                          f"use one of: {shown}")


class EarlyStopping:
    def __init__(self, early_stop_config: Any):
        self.criteria = str(early_stop_config.criteria)
        self.key = monitored_key(self.criteria)
        self.minimize = bool(early_stop_config.minimize)
        self.patience = int(early_stop_config.patience)
        self.enabled = bool(early_stop_config.enabled)
        # as MMF: start from the worst value, so that the first evaluation is the best so far
        self.best_value = math.inf if self.minimize else -math.inf
        self.best_update = 0
        self.best_iteration = 0

    def update(self, report: Mapping[str, float], num_updates: int, iteration: int) -> bool:
        """Record the report's value; True when it is the best so far."""
        check_criteria(self.criteria, report)
        value = float(report[self.key])
        improved = value < self.best_value if self.minimize else value > self.best_value
        if improved:
            self.best_value, self.best_update, self.best_iteration = value, num_updates, iteration
        return improved

    def should_stop(self, num_updates: int) -> bool:
        return self.enabled and self.best_update + self.patience < num_updates

    def info(self) -> dict[str, Any]:
        return {"best_update": self.best_update, "best_iteration": self.best_iteration,
                f"best_{self.key}": f"{self.best_value:.6f}"}
