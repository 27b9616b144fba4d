"""Stopping training early and cleanly, in every process of the run at once.

While training runs, each process catches the stop signals
(``minimmf.utils.signals``: SIGTERM, SIGUSR1, SIGINT). At the end of every
update the processes agree whether to stop, taking the largest of their
flags (one small all_reduce per update): a signal any of them got, or a
checkpoint the main process could not write. They then stop after the same
update; the trainer saves that update's checkpoint (unless it has just been
saved) and every process raises ``TrainingStopped``, whose ``exit_status``
``mmf_run`` exits with:

- 128 + the signal's number after a stop signal, the checkpoint saved: 143
  for SIGTERM, 138 for SIGUSR1, 130 for SIGINT (non-zero, so that a
  scheduler or ``torchrun --max-restarts`` runs it again);
- ``EXIT_CHECKPOINT_WRITE_FAILED`` (74, EX_IOERR in sysexits.h) when a
  checkpoint could not be written; the previous one is intact.
"""

from __future__ import annotations

import torch

from minimmf.utils import distributed
from minimmf.utils.signals import StopSignals

EXIT_CHECKPOINT_WRITE_FAILED = 74


class TrainingStopped(Exception):
    """Training ended before ``max_updates``: ``reason`` says why and where to go on from."""

    def __init__(self, reason: str, exit_status: int):
        super().__init__(reason)
        self.reason, self.exit_status = reason, exit_status


class Preemption:
    """The stop signals caught for the duration of a ``with`` block, and the
    processes' agreement to stop (``agreed``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.signals = StopSignals("finishing the update in flight, then saving a checkpoint and exiting")

    def __enter__(self) -> Preemption:
        self.signals.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.signals.__exit__(*exc_info)

    def agreed(self, write_failed: bool) -> tuple[int, bool]:
        """(the stop signal any process got, 0 if none; whether any failed to write a checkpoint)."""
        signum, failed = distributed.all_reduce_max([self.signals.requested, int(write_failed)], self.device)
        return signum, bool(failed)
