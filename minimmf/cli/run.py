"""``mmf_run``: train and/or evaluate a model the MMF way.

    mmf_run config=projects/mmf_transformer/configs/charades/direct.yaml \\
        run_type=train_val dataset=charades model=mmf_transformer \\
        env.data_dir=./data training.batch_size=4 training.max_updates=5000

Every argument is ``key=value``: ``config`` (the experiment file, also found
from the repository root, so the command works from any directory),
``model``, ``dataset``, ``run_type`` (train, val, test or an _-joined
combination) and any key of MMF's config in dot notation.

As MMF's ``mmf_run``, it starts one process per visible GPU
(``distributed.world_size``; set it to run several CPU processes), or none
with ``distributed.no_spawn=true``; under ``torchrun`` it uses torchrun's.
A mistake in the command or the config ends in ``mmf_run: error: ...`` and
exit status 2, before any work starts where it can be known then.

Exit status: 0 when the run is done; 2 for a mistake in the command or the
config (among them, a training run that does not resume in an
``env.save_dir`` holding an earlier run's checkpoints); 128 + N when stopped
by signal N (SIGTERM, SIGUSR1, SIGINT) during training, after saving a
checkpoint, or by a second signal at once; 74 when a checkpoint could not be
written (disk full, I/O error; the previous one is intact); 1 for anything
else. Under ``torchrun --max-restarts``, a restarted run resumes from its
checkpoints by itself, as with ``checkpoint.resume=True``.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from omegaconf import DictConfig
from torch.multiprocessing import ProcessExitedException

from minimmf.trainers.config_checks import check_config, check_data
from minimmf.trainers.core.preemption import EXIT_CHECKPOINT_WRITE_FAILED, TrainingStopped
from minimmf.trainers.mmf_trainer import MMFTrainer
from minimmf.utils import distributed
from minimmf.utils.checkpoint import CheckpointMismatchError, CheckpointWriteError, check_save_dir
from minimmf.utils.configuration import ConfigError, build_config, parse_run_type
from minimmf.utils.env import import_user_dir, pick_seed, setup_imports
from minimmf.utils.logger import setup_very_basic_config
from minimmf.utils.signals import exit_status

logger = logging.getLogger("minimmf.cli.run")  # by name: under `python -m` this module is __main__
# what a user can fix from the message alone; anything else is a bug worth its traceback
USER_ERRORS = (ConfigError, CheckpointMismatchError, FileNotFoundError)


def _fail(error: BaseException) -> None:
    print(f"mmf_run: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def _interrupted() -> None:
    """Ctrl-C outside training (while starting, loading, evaluating): nothing to save."""
    print("mmf_run: interrupted", file=sys.stderr)
    raise SystemExit(exit_status(signal.SIGINT)) from None


def train_in_this_process(config: DictConfig) -> None:
    """One process of the run (also the target of the processes mmf_run starts)."""
    setup_very_basic_config()
    # a started process has imported nothing yet
    setup_imports()
    import_user_dir(config.env.user_dir)
    try:
        MMFTrainer(config).run()
    except USER_ERRORS as error:
        _fail(error)
    except TrainingStopped as stopped:
        # the trainer has logged why, in one line
        raise SystemExit(stopped.exit_status) from None
    except CheckpointWriteError as error:
        print(f"mmf_run: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CHECKPOINT_WRITE_FAILED) from None
    except KeyboardInterrupt:
        _interrupted()


def resume_after_torchrun_restart(config: DictConfig) -> None:
    """A run torchrun restarts (``--max-restarts``) goes on from its checkpoints."""
    restarts = distributed.torchrun_restarts()
    if restarts and not config.checkpoint.resume:
        logger.info("torchrun restart %d: resuming from the run's checkpoints (checkpoint.resume=True)", restarts)
        config.checkpoint.resume = True


def run(opts: Sequence[str] | None = None) -> None:
    """Entry point of ``mmf_run`` and ``python -m minimmf.cli.run``."""
    opts = list(sys.argv[1:] if opts is None else opts)
    if any(arg in ("-h", "--help") for arg in opts):
        print(__doc__)
        return
    try:
        _run(opts)
    except KeyboardInterrupt:
        _interrupted()


def _run(opts: list[str]) -> None:
    setup_very_basic_config()
    try:
        config = build_config(None, opts)
        resume_after_torchrun_restart(config)
        check_config(config)
        check_data(config)
        check_save_dir(config, trains="train" in parse_run_type(config.run_type))
    except USER_ERRORS as error:
        _fail(error)
    if not distributed.should_spawn(config):
        train_in_this_process(config)
        return
    # every process must start from the same seed
    config.training.seed = pick_seed(config.training.seed)
    try:
        distributed.spawn(train_in_this_process, config)
    except ProcessExitedException as error:
        # the process said why (mmf_run: error: ...) or printed its traceback; one a signal killed: 128 + N
        code = error.exit_code or 1
        raise SystemExit(exit_status(-code) if code < 0 else code) from None


if __name__ == "__main__":
    run()
