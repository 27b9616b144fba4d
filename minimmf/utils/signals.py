"""Stop requests by signal, as schedulers send them: SIGTERM (a preemption
notice, ``kubectl delete``, torchrun passing its own on), SIGUSR1 (SLURM's
``--signal``) and SIGINT (Ctrl-C).

While a ``StopSignals`` is installed, the first of these signals only
records a request, which the program acts on at a point of its choosing (the
trainer: after the update in flight, with a checkpoint). A second one ends
the process at once, with exit status 128 + its number (what a shell reports
for a process the signal killed). Repeats within ``DUPLICATE_WINDOW_S`` of the
first count as the same request: a Ctrl-C reaches every process of the
terminal's foreground group, and torchrun or ``mmf_run``'s own parent process
pass the signal on as well, so a process often gets the same signal twice in
a few milliseconds.

The signals are read by a thread from Python's wakeup file descriptor, so
that a second one ends the process even while the main thread is blocked in
C code (a collective waiting for a dead peer, a long write), where a Python
signal handler would not run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
DUPLICATE_WINDOW_S = 1.0
_WAKE_THREAD = 0  # not a signal number: tells the thread to end


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_status(signum: int) -> int:
    """The exit status for a process that ends because of ``signum``."""
    return 128 + signum


def exit_at_once(signum: int) -> None:
    """End the process now, without cleaning up (the default second-signal action)."""
    os.write(2, f"{signal_name(signum)} again: exiting at once (status {exit_status(signum)})\n".encode())
    os._exit(exit_status(signum))


def ignore_stop_signals() -> None:
    """In a helper process (a DataLoader worker): leave the stop signals to the
    main process, which stops the workers when it is done with them."""
    signal.set_wakeup_fd(-1)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _no_op(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the thread does the work."""


class StopSignals:
    """Catch the stop signals while installed (a context manager). Python lets
    only the main thread handle signals: elsewhere it catches nothing, and says so.

    ``requested`` is the number of the first signal (0: none yet). ``on_first``
    runs on that signal (in the watching thread), ``on_second`` on a later one
    (by default: ``exit_at_once``). ``reaction`` says in the log what the
    program does about a request.
    """

    def __init__(self, reaction: str, on_first: Callable[[int], None] | None = None,
                 on_second: Callable[[int], None] = exit_at_once):
        self.reaction = reaction
        self.on_first, self.on_second = on_first, on_second
        self.requested = 0
        self._first_at = 0.0
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.info("not in the main thread: stop signals are not caught (%s)", self.reaction)
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # the wakeup fd must not block the signal handler
        self._pipe = (read_end, write_end)
        self._thread = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._thread.start()
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, _no_op) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        read_end, write_end = self._pipe
        os.set_blocking(write_end, True)
        os.write(write_end, bytes([_WAKE_THREAD]))
        self._thread.join()
        os.close(read_end)
        os.close(write_end)
        self._thread = None

    def _watch(self) -> None:
        read_end = self._pipe[0]
        while True:
            for signum in os.read(read_end, 64):
                if signum == _WAKE_THREAD:
                    return
                if signum in STOP_SIGNALS:  # the wakeup fd also carries other handled signals (SIGCHLD)
                    self._receive(signum)

    def _receive(self, signum: int) -> None:
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first_at = signum, now
            logger.warning("%s: %s (a second signal exits at once)", signal_name(signum), self.reaction)
            if self.on_first is not None:
                self.on_first(signum)
        elif now - self._first_at > DUPLICATE_WINDOW_S:
            self.on_second(signum)
