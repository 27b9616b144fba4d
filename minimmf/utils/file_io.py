"""Writing files that a later step or another process reads: whole or not at
all. ``atomic_write`` writes into a temporary file beside the target (same
folder, so the same file system), flushes it, optionally fsyncs it, and
renames it over the target with ``os.replace``, which POSIX makes atomic:
a reader, or a run killed mid-write, sees the old file or the new one, never
a torn one. The temporaries are named ``.<name>.<pid>.<random>.tmp``, so
``remove_stale_temporaries`` can tell those of dead processes."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` that only this process uses."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", fsync: bool = True, **open_args: Any) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only once the block ends
    without an error; on an error the temporary file is removed and ``path``
    keeps its previous content. ``fsync`` makes the content durable before
    the rename (what survives a power loss, not only a killed process)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, mode.replace("w", "x"), **open_args) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if fsync:
        fsync_directory(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike, fsync: bool = True) -> None:
    """``torch.save(obj, path)``, atomically (see ``atomic_write``)."""
    import torch

    with atomic_write(path, "wb", fsync=fsync) as handle:
        torch.save(obj, handle)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike, fsync: bool = True) -> None:
    """``shutil.copyfile(source, target)``, atomically (see ``atomic_write``)."""
    with open(source, "rb") as reader, atomic_write(target, "wb", fsync=fsync) as writer:
        shutil.copyfileobj(reader, writer)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False,
                              ours_too: bool = False) -> list[Path]:
    """Remove the temporary files that processes which no longer run left in
    ``folder`` (a run killed mid-write); those of live processes are kept.
    ``ours_too``: this process's own count as stale as well, for a process
    that has not started writing there yet (a restarted container gives its
    process the pid the killed one had)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        match = _TEMPORARY.match(candidate.name)
        if not (match and candidate.is_file()):
            continue
        pid = int(match.group("pid"))
        if (ours_too and pid == os.getpid()) or not _process_alive(pid):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
