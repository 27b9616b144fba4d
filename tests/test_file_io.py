"""Atomic writes: a file is replaced whole or keeps its old content."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from minimmf.utils.file_io import atomic_copy, atomic_save, atomic_write, remove_stale_temporaries, temporary_path


def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old")
    with atomic_write(target) as handle:
        handle.write("new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_an_error_keeps_the_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "current.ckpt"
    atomic_save({"step": 1}, target)
    with pytest.raises(RuntimeError), atomic_write(target, "wb") as handle:
        handle.write(b"torn")
        raise RuntimeError("killed mid-write")
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["current.ckpt"]


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="whole file"), atomic_write(tmp_path / "x", "a"):
        pass


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f".current.ckpt.{dead.stdout.strip()}.0badc0de.tmp"
    stale.write_bytes(b"torn")
    mine = temporary_path(tmp_path / "best.ckpt")
    mine.write_bytes(b"being written")
    unrelated = tmp_path / ".hidden.tmp"
    unrelated.write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, unrelated.name])
    assert str(os.getpid()) in mine.name


def test_own_temporaries_count_as_stale_for_a_process_that_has_not_written_yet(tmp_path):
    """A restarted container gives the new process the pid the killed one had."""
    mine = temporary_path(tmp_path / "models" / "model_3.ckpt")
    mine.parent.mkdir()
    mine.write_bytes(b"left by the killed process of the same pid")
    assert remove_stale_temporaries(tmp_path, recursive=True) == []
    assert remove_stale_temporaries(tmp_path, recursive=True, ours_too=True) == [mine]


def test_atomic_copy(tmp_path):
    source, target = tmp_path / "vocab.txt", tmp_path / "save" / "vocab.txt"
    source.write_text("[PAD]\n[UNK]\n")
    target.parent.mkdir()
    target.write_text("old")
    atomic_copy(source, target)
    assert target.read_text() == "[PAD]\n[UNK]\n" and [p.name for p in target.parent.iterdir()] == ["vocab.txt"]
