"""``mmf_run``: train and/or evaluate a model the MMF way.

    mmf_run config=projects/mmf_transformer/configs/charades/direct.yaml \\
        run_type=train_val dataset=charades model=mmf_transformer \\
        env.data_dir=./data training.batch_size=4 training.max_updates=5000

Every argument is ``key=value``: ``config`` (the experiment file), ``model``,
``dataset``, ``run_type`` (train, val, test or an _-joined combination) and
any config key in dot notation. Under ``torchrun`` it trains with
DistributedDataParallel.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from minimmf.trainers.mmf_trainer import MMFTrainer, parse_run_type
from minimmf.utils.configuration import ConfigError, build_config
from minimmf.utils.logger import setup_very_basic_config

logger = logging.getLogger("minimmf.cli.run")

_POSITIVE_INTS = ("training.batch_size", "training.max_updates", "training.log_interval",
                  "training.evaluation_interval", "training.checkpoint_interval")
_NON_NEGATIVE_INTS = ("training.num_workers", "training.early_stop.patience")


def _lookup(config: DictConfig, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if node is not None else None
    return node


def check_config(config: DictConfig) -> None:
    """Reject values the trainer cannot use, naming the key."""
    try:
        parse_run_type(config.run_type)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for key in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value = _lookup(config, key)
        minimum = 1 if key in _POSITIVE_INTS else 0
        if key == "training.max_updates" and value is None and config.training.get("max_epochs") is not None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    lr = _lookup(config, "optimizer.params.lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError(f"optimizer.params.lr={lr!r}: expected a positive number")
    if not config.get("config"):
        raise ConfigError("config=<experiment yaml> is required, e.g. "
                          "config=projects/mmf_transformer/configs/charades/direct.yaml")


def run(opts: Sequence[str] | None = None) -> None:
    """Entry point of ``mmf_run`` and ``python -m minimmf.cli.run``."""
    opts = list(sys.argv[1:] if opts is None else opts)
    if any(arg in ("-h", "--help") for arg in opts):
        print(__doc__)
        return
    setup_very_basic_config()
    try:
        config = build_config(None, opts)
        check_config(config)
    except (ConfigError, FileNotFoundError) as error:
        print(f"mmf_run: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    MMFTrainer(config).run()


if __name__ == "__main__":
    run()
