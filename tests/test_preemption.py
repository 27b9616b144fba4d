"""Training that survives: real ``mmf_run`` processes stopped by real signals
and resumed, killed with SIGKILL in the middle of a checkpoint write, given a
torn checkpoint, refused a checkpoint write by the file system (a file size
limit), or pointed at another run's save_dir; and the stop-signal handling
of a process on its own.

"Equal" below means bit for bit: the losses the runs log and every weight of
the final model."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from minimmf.cli.run import run
from minimmf.trainers.core.exact_resume import ResumableSampler
from minimmf.utils.checkpoint import load_checkpoint_file, read_newest_whole, resume_candidates
from minimmf.utils.distributed import find_free_port
from tests.conftest import ROOT, run_args
from tests.test_checkpoint import link_checkpoints, loaded_trainer

# 12 training videos in batches of 4: 3 updates per epoch, so update 4 or 5 is in the middle of epoch 2
SHORT_RUN = ("training.max_updates=6", "scheduler.params.num_training_steps=6", "training.evaluation_interval=100",
             "training.checkpoint_interval=100", "run_type=train")
WAIT_S = 600


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or it takes WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"mmf_run ended (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {WAIT_S} s")
        time.sleep(poll_s)


def logged(save_dir: Path, text: str) -> Callable[[], bool]:
    log = save_dir / "train.log"
    return lambda: log.is_file() and text in log.read_text()


def start_mmf_run(save_dir: Path, *options: str, data_dir: Path, prefix: tuple[str, ...] = ("-m", "minimmf.cli.run"),
                  **popen: object) -> subprocess.Popen:
    """``mmf_run`` (or ``prefix``, e.g. torchrun) in its own session, its output appended to ``<save_dir>.out``."""
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{save_dir}.out", "a") as output:
        return subprocess.Popen([sys.executable, *prefix, *run_args(data_dir, save_dir, *options)], cwd=ROOT,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def output_of(save_dir: Path) -> str:
    return Path(f"{save_dir}.out").read_text()


def finish(process: subprocess.Popen, save_dir: Path) -> int:
    try:
        return process.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"mmf_run did not end:\n{output_of(save_dir)[-3000:]}")


def run_to_the_end(save_dir: Path, *options: str, data_dir: Path, prefix: tuple[str, ...] = ("-m", "minimmf.cli.run"),
                   ) -> None:
    status = finish(start_mmf_run(save_dir, *options, data_dir=data_dir, prefix=prefix), save_dir)
    assert status == 0, output_of(save_dir)[-3000:]


def losses(save_dir: Path) -> pd.DataFrame:
    """Every training loss logged (log_interval 1: one per update), by update."""
    metrics = pd.read_csv(save_dir / "metrics.csv", dtype={"value": str})
    train = metrics[metrics["name"].str.startswith("train/")]
    return train.sort_values(["update", "name"]).reset_index(drop=True)


def assert_same_run(save_dir: Path, reference: Path) -> None:
    """Bit-equal losses, update for update, and bit-equal final weights."""
    pd.testing.assert_frame_equal(losses(save_dir), losses(reference))
    ours, theirs = (load_checkpoint_file(path / "current.ckpt") for path in (save_dir, reference))
    assert ours["num_updates"] == theirs["num_updates"]
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    for key, value in load_checkpoint_file(reference / "mmf_transformer_final.pth").items():
        assert torch.equal(load_checkpoint_file(save_dir / "mmf_transformer_final.pth")[key], value), key


@pytest.fixture(scope="module")
def uninterrupted(synthetic_data_dir, tmp_path_factory) -> Path:
    """Six updates of the tiny config, one process, no DataLoader workers, never stopped."""
    save_dir = tmp_path_factory.mktemp("uninterrupted") / "save"
    run_to_the_end(save_dir, *SHORT_RUN, data_dir=synthetic_data_dir)
    return save_dir


@pytest.mark.slow
def test_stopped_mid_epoch_then_resumed_equals_the_uninterrupted_run(uninterrupted, synthetic_data_dir, tmp_path):
    """SIGTERM to the whole process group, as a launcher or Ctrl-C (SIGINT,
    the same handler: tests below) sends it, the DataLoader workers too: the
    run finishes the update in flight, saves it and exits with 128 + the
    signal, in one line; resumed, it logs the same losses and ends with the
    same weights as the run never stopped, which had no workers (the
    augmentations do not depend on them). One case, as each takes minutes."""
    save_dir, signum = tmp_path / "save", signal.SIGTERM
    options = (*SHORT_RUN, "training.num_workers=2")
    process = start_mmf_run(save_dir, *options, data_dir=synthetic_data_dir)
    wait_for(logged(save_dir, "progress: 4/6"), process, "update 4")
    os.killpg(process.pid, signum)
    assert finish(process, save_dir) == 128 + signum
    stopped = load_checkpoint_file(save_dir / "current.ckpt")
    assert stopped["num_updates"] in (4, 5) and stopped["current_epoch"] == 2
    assert 0 < stopped["train_position"]["samples_done"] < 12  # in the middle of the epoch
    output = output_of(save_dir)
    assert "Traceback" not in output
    last_line = output.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signum).name} after update {stopped['num_updates']}/6" in last_line
    assert "checkpoint.resume=True" in last_line

    run_to_the_end(save_dir, *options, "checkpoint.resume=True", data_dir=synthetic_data_dir)
    assert_same_run(save_dir, uninterrupted)
    assert f"epoch 2 goes on after {stopped['train_position']['samples_done']} of its 12 samples" in \
        (save_dir / "train.log").read_text()


@pytest.mark.slow
def test_sigkill_while_writing_current_ckpt(synthetic_data_dir, tmp_path):
    """The issue's case: SIGKILL while current.ckpt is being written (seen from
    its temporary file), past the first checkpoint. current.ckpt keeps the
    previous update, the kill leaves only a temporary, and the next run
    removes it and resumes from the newest whole checkpoint
    (models/model_<n>.ckpt, written just before)."""
    save_dir = tmp_path / "save"
    options = (*SHORT_RUN, "training.checkpoint_interval=1")
    process = start_mmf_run(save_dir, *options, data_dir=synthetic_data_dir)
    wait_for(lambda: (save_dir / "current.ckpt").is_file() and any(save_dir.glob(".current.ckpt.*.tmp")),
             process, "a write of current.ckpt after the first", poll_s=0.002)
    process.kill()
    process.wait()
    [torn] = save_dir.glob(".current.ckpt.*.tmp")
    newest = max(int(path.stem.split("_")[1]) for path in (save_dir / "models").glob("model_*.ckpt"))
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == newest - 1
    assert load_checkpoint_file(save_dir / "models" / f"model_{newest}.ckpt")["num_updates"] == newest

    run_to_the_end(save_dir, *options, f"training.max_updates={newest + 1}", "checkpoint.resume=True",
                   data_dir=synthetic_data_dir)
    log = (save_dir / "train.log").read_text()
    assert f"removed {torn}, left by a run killed while it wrote" in log
    assert f"resumed from {save_dir / 'models' / f'model_{newest}.ckpt'} at update {newest}" in log
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == newest + 1
    assert not list(save_dir.rglob("*.tmp"))


def test_a_torn_current_ckpt_falls_back_to_the_newest_whole_checkpoint(trained, synthetic_data_dir, tmp_path):
    (tmp_path / "models").mkdir(parents=True)
    link_checkpoints(trained, tmp_path, "models/model_4.ckpt")
    (tmp_path / "current.ckpt").write_bytes((trained / "current.ckpt").read_bytes()[:100_000])  # torn
    with loaded_trainer(synthetic_data_dir, tmp_path, "checkpoint.resume=true") as trainer:
        assert trainer.num_updates == 4 and trainer.resume_position["samples_done"] == 4
    log = (tmp_path / "train.log").read_text()
    assert f"{tmp_path / 'current.ckpt'} does not read back whole, skipped" in log
    assert f"resuming from {tmp_path / 'models' / 'model_4.ckpt'}, the newest checkpoint that reads back whole" in log


def test_the_newest_whole_checkpoint_wins(tmp_path):
    """current.ckpt is tried first, but a periodic checkpoint of a later update
    (written just before a write of current.ckpt failed) wins; torn files are skipped."""
    (tmp_path / "models").mkdir()
    for path, update in (("current.ckpt", 3), ("models/model_3.ckpt", 3), ("models/model_4.ckpt", 4)):
        torch.save({"model": {}, "num_updates": update}, tmp_path / path)

    def newest() -> str:
        return str(read_newest_whole(resume_candidates(tmp_path, resume_best=False), "cpu")[0].relative_to(tmp_path))

    assert newest() == "models/model_4.ckpt"
    (tmp_path / "models" / "model_4.ckpt").write_bytes(b"torn")
    assert newest() == "current.ckpt"
    (tmp_path / "current.ckpt").write_bytes(b"torn")
    assert newest() == "models/model_3.ckpt"


def test_checkpoints_that_all_fail_to_read_stop_the_run(trained, synthetic_data_dir, tmp_path, capsys):
    (tmp_path / "current.ckpt").write_bytes((trained / "current.ckpt").read_bytes()[:100_000])
    with pytest.raises(SystemExit) as exit_info:
        run(run_args(synthetic_data_dir, tmp_path, "checkpoint.resume=true"))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert "no checkpoint in the save_dir reads back whole" in error and str(tmp_path / "current.ckpt") in error
    assert not (tmp_path / "models").exists()  # it did not start over


def test_a_training_run_refuses_the_checkpoints_of_an_earlier_run(trained, synthetic_data_dir, tmp_path, capsys):
    link_checkpoints(trained, tmp_path, "current.ckpt", "best.ckpt")
    shutil.copy(trained / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(SystemExit) as exit_info:
        run(run_args(synthetic_data_dir, tmp_path, "training.max_updates=6"))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"env.save_dir={tmp_path} already holds the checkpoints of an earlier run (current.ckpt, best.ckpt)" \
        in error
    assert "training.max_updates (4 -> 6)" in error and "add checkpoint.resume=True" in error
    assert (tmp_path / "current.ckpt").resolve() == (trained / "current.ckpt").resolve()  # left as it was


@pytest.mark.slow
def test_a_failing_checkpoint_write_keeps_the_previous_one_and_stops(trained, synthetic_data_dir, tmp_path):
    """A real failing write: the process may write no file over 64 MB (RLIMIT_FSIZE;
    Python ignores SIGXFSZ, so the write fails with EFBIG). Resumed from update 4,
    the checkpoint of update 5 cannot be written: the run says where and how
    much, keeps current.ckpt of update 4 whole, stops before update 6 and exits 74."""
    save_dir = tmp_path / "save"
    link_checkpoints(trained, save_dir, "current.ckpt")
    shutil.copy(trained / "config.yaml", save_dir / "config.yaml")
    limit = 64 * 2**20

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = start_mmf_run(save_dir, *SHORT_RUN, "training.checkpoint_interval=1", "checkpoint.resume=True",
                            data_dir=synthetic_data_dir, preexec_fn=limit_file_size)
    assert finish(process, save_dir) == 74
    output = output_of(save_dir)
    assert f"cannot write {save_dir / 'models' / 'model_5.ckpt'}: File too large (it needs about " in output
    assert f"the newest checkpoint on disk, {save_dir / 'current.ckpt'} (update 4), is intact" in output
    assert "training stopped after update 5" in output and "Traceback" not in output
    assert "progress: 5/6" in output and "progress: 6/6" not in output
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 4
    assert not list(save_dir.rglob("*.tmp"))


def test_the_sampler_goes_on_where_the_epoch_stopped():
    """The order is DistributedSampler's; resumed part-way, each process goes on
    with its own share; with another number of processes, the rest of the
    epoch is taken once (padded to an even share, as DistributedSampler pads)."""
    def shares(world_size: int, start: int = 0) -> list[list[int]]:
        samplers = [ResumableSampler(11, seed=3, rank=rank, world_size=world_size) for rank in range(world_size)]
        for sampler in samplers:
            sampler.set_epoch(5, start)
        return [[index for index, epoch in sampler if epoch == 5] for sampler in samplers]

    expected = torch.utils.data.DistributedSampler(range(11), num_replicas=2, rank=1, shuffle=True, seed=3)
    expected.set_epoch(5)
    assert shares(2)[1] == list(expected)
    assert shares(2, start=4) == [share[2:] for share in shares(2)]
    order = shares(1)[0]
    rest = [index for share in shares(3, start=8) for index in share]
    assert sorted(rest) == sorted(order[8:]) and len(rest) == 3


def test_ctrl_c_outside_training_ends_in_one_line(trained, synthetic_data_dir, tmp_path):
    """An evaluation-only run (nothing to save) interrupted while it loads or evaluates."""
    save_dir = tmp_path / "eval"
    process = start_mmf_run(save_dir, "run_type=val", f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}",
                            data_dir=synthetic_data_dir)
    wait_for(logged(save_dir, "val split: 4 videos"), process, "the data loaded")
    os.killpg(process.pid, signal.SIGINT)
    assert finish(process, save_dir) == 130
    output = output_of(save_dir)
    assert "Traceback" not in output and output.strip().splitlines()[-1] == "mmf_run: interrupted"


SIGNAL_SCRIPT = """
import logging, signal, sys, time
from minimmf.utils.signals import StopSignals
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
with StopSignals("noted") as signals:
    print("ready", flush=True)
    time.sleep(float(sys.argv[1]))  # the main thread in C code, as in a long collective
    print("slept; requested", signals.requested, flush=True)
"""


def start_signal_script(sleep_s: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(sleep_s)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_second_signal_exits_at_once():
    process = start_signal_script(sleep_s=120)
    process.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # past the window in which a repeat counts as the same request
    process.send_signal(signal.SIGUSR1)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGUSR1
    assert "SIGTERM: noted (a second signal exits at once)" in output
    assert "SIGUSR1 again: exiting at once (status 138)" in output and "slept" not in output


def test_a_repeat_at_once_is_the_same_request():
    """Ctrl-C reaches a process from the terminal and from its launcher within milliseconds."""
    process = start_signal_script(sleep_s=3)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert output.count("SIGINT: noted") == 1 and "slept; requested 2" in output


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes torchrun started (read from /proc)."""
    workers = {}
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            rank = next((item.split(b"=", 1)[1] for item in environment if item.startswith(b"RANK=")), None)
            if rank is not None:
                workers[int(rank)] = int(child)
    return workers


@pytest.fixture(scope="module")
def uninterrupted_two_processes(synthetic_data_dir, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("uninterrupted_ddp") / "save"
    run_to_the_end(save_dir, *SHORT_RUN, "distributed.world_size=2", f"distributed.port={find_free_port()}",
                   data_dir=synthetic_data_dir)
    return save_dir


@pytest.mark.slow
def test_torchrun_restarts_a_preempted_worker_group_which_resumes_exactly(uninterrupted_two_processes,
                                                                          synthetic_data_dir, tmp_path):
    """Two gloo processes under ``torchrun --max-restarts=1``; SIGTERM reaches one
    of them only. Both stop after the same update (rank 0 writes the
    checkpoint) with status 143, torchrun starts them again, they resume by
    themselves (TORCHELASTIC_RESTART_COUNT) and end as the run never stopped."""
    save_dir = tmp_path / "save"
    torchrun = ("-m", "torch.distributed.run", "--nproc-per-node=2", "--max-restarts=1",
                f"--master-port={find_free_port()}", "-m", "minimmf.cli.run")
    process = start_mmf_run(save_dir, *SHORT_RUN, data_dir=synthetic_data_dir, prefix=torchrun)
    wait_for(logged(save_dir, "progress: 4/6"), process, "update 4")
    os.kill(worker_pids(process.pid)[1], signal.SIGTERM)
    assert finish(process, save_dir) == 0, output_of(save_dir)[-3000:]
    log = (save_dir / "train.log").read_text()
    assert "stopped by SIGTERM after update" in log
    assert "torchrun restart 1: resuming from the run's checkpoints" in output_of(save_dir)
    assert "world size 2, batch size 2 per process" in log
    assert_same_run(save_dir, uninterrupted_two_processes)


@pytest.mark.slow
def test_mmf_run_passes_a_stop_signal_on_to_its_processes(synthetic_data_dir, tmp_path):
    """SIGUSR1 (SLURM's warning) to the mmf_run that started two processes: they
    stop after the same update, every process's random states in the checkpoint."""
    save_dir = tmp_path / "save"
    process = start_mmf_run(save_dir, *SHORT_RUN, "distributed.world_size=2", f"distributed.port={find_free_port()}",
                            data_dir=synthetic_data_dir)
    wait_for(logged(save_dir, "progress: 2/6"), process, "update 2")
    process.send_signal(signal.SIGUSR1)
    assert finish(process, save_dir) == 128 + signal.SIGUSR1, output_of(save_dir)[-3000:]
    stopped = load_checkpoint_file(save_dir / "current.ckpt")
    assert stopped["num_updates"] in (2, 3) and len(stopped["rank_states"]) == 2
    assert f"stopped by SIGUSR1 after update {stopped['num_updates']}/6" in output_of(save_dir)
