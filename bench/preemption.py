"""What a preemption costs a training run, measured with real ``mmf_run``
processes of the tiny config (one process, batches of 4, no DataLoader
workers) on synthetic Charades videos:

- SIGTERM to exit: the seconds from the signal to the process's end (the
  update in flight, its checkpoint: current.ckpt, fsynced, then the
  teardown), and to the log line that says the checkpoint is saved;
- updates lost per SIGKILL: the run killed at a uniformly random moment
  (after its first checkpoint), the updates it had finished minus the update
  of the newest checkpoint that reads back whole (what ``checkpoint.resume``
  continues from), with ``checkpoint_interval`` 1 and 100, and the training
  speed each interval leaves (updates/s);
- fsync per checkpoint: the seconds to write a training checkpoint (model,
  AdamW state, the rest of the training state) as MMF does (``torch.save``
  in place), atomically without fsync, and atomically with fsync (what
  minimmf does), for the tiny model and the full-size one (direct.yaml, built
  without training).

Run from the repository root: ``python -m bench.preemption`` (``--only
fsync``, repeatable, measures one part again and keeps the others' figures).
Prints the figures and writes bench/results/preemption.json. On a busy
machine they are noisy (above all the fsync ones, which depend on the disk's
other writers); rerun them on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DIRECT_CONFIG, ROOT, machine, save_results, saved_results

TINY_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/tiny.yaml"
PROGRESS = re.compile(r"progress: (\d+)/\d+, train/")


def make_data(folder: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_charades.py"), "--out", str(folder),
                    "--num-classes", "8", "--num-train", "12", "--num-test", "4", "--duration", "2", "--width", "96",
                    "--height", "64", "--quiet"], check=True, cwd=ROOT)
    return folder


def mmf_run_args(data_dir: Path, save_dir: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "minimmf.cli.run", f"config={TINY_CONFIG}", "run_type=train", "dataset=charades",
            "model=mmf_transformer", f"env.data_dir={data_dir}", f"env.save_dir={save_dir}", "training.batch_size=4",
            "training.num_workers=0", "training.max_updates=100000", "training.log_interval=1",
            "training.evaluation_interval=100000", "training.seed=1", "training.find_unused_parameters=True",
            "training.device=cpu", "scheduler.params.num_training_steps=100000", *options]


class Run:
    """A training run in the background, its log read as it grows."""

    def __init__(self, data_dir: Path, save_dir: Path, *options: str):
        self.save_dir = save_dir
        self.output = open(f"{save_dir}.out", "w")  # noqa: SIM115 (closed in end())
        self.process = subprocess.Popen(mmf_run_args(data_dir, save_dir, *options), cwd=ROOT, stdout=self.output,
                                        stderr=subprocess.STDOUT)

    def log(self) -> str:
        path = self.save_dir / "train.log"
        return path.read_text() if path.is_file() else ""

    def updates_done(self) -> int:
        found = PROGRESS.findall(self.log())
        return int(found[-1]) if found else 0

    def wait_for_update(self, update: int, timeout_s: float = 1800) -> float:
        """Wait until ``update`` is logged; returns when it was seen (time.monotonic)."""
        deadline = time.monotonic() + timeout_s
        while self.updates_done() < update:
            if self.process.poll() is not None:
                raise SystemExit(f"mmf_run ended early:\n{Path(f'{self.save_dir}.out').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"no update {update} within {timeout_s} s")
            time.sleep(0.02)
        return time.monotonic()

    def end(self) -> int:
        status = self.process.wait()
        self.output.close()
        return status


def sigterm_to_exit(data_dir: Path, folder: Path, trials: int) -> dict:
    rows = []
    for trial in range(trials):
        run = Run(data_dir, folder / f"sigterm_{trial}", "training.checkpoint_interval=100000")
        run.wait_for_update(3)
        sent = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        saved = None
        while run.process.poll() is None:
            if saved is None and "stopped by SIGTERM" in run.log():
                saved = time.monotonic()
            time.sleep(0.01)
        exited = time.monotonic()
        status = run.end()
        rows.append({"status": status, "to_saved_s": (saved or exited) - sent, "to_exit_s": exited - sent})
        print(f"  SIGTERM trial {trial + 1}: saved after {rows[-1]['to_saved_s']:.1f} s, exit after "
              f"{rows[-1]['to_exit_s']:.1f} s (status {status})")
    return {"trials": rows, "median_to_exit_s": statistics.median(row["to_exit_s"] for row in rows),
            "median_to_saved_s": statistics.median(row["to_saved_s"] for row in rows)}


def newest_whole_update(save_dir: Path) -> int:
    """The update ``checkpoint.resume`` would continue from."""
    import logging

    from minimmf.utils.checkpoint import read_newest_whole, resume_candidates

    logging.getLogger("minimmf").setLevel(logging.ERROR)
    candidates = resume_candidates(save_dir, resume_best=False)
    return int(read_newest_whole(candidates, "cpu")[1]["num_updates"]) if candidates else 0


def sigkill_losses(data_dir: Path, folder: Path, interval: int, kills: int) -> dict:
    """Kill at a uniformly random moment of the ``interval`` updates after the first checkpoint."""
    rows = []
    for trial in range(kills):
        save_dir = folder / f"sigkill_{interval}_{trial}"
        run = Run(data_dir, save_dir, f"training.checkpoint_interval={interval}")
        started = run.wait_for_update(2)
        seconds_per_update = (run.wait_for_update(4) - started) / 2  # with interval 1, its writes included
        run.wait_for_update(interval)
        time.sleep(random.uniform(0, interval * seconds_per_update))
        done = run.updates_done()
        run.process.kill()
        run.end()
        done = max(done, run.updates_done())  # a line logged between the read and the kill
        resumable = newest_whole_update(save_dir)
        rows.append({"updates_done": done, "resumes_from": resumable, "lost": done - resumable,
                     "seconds_per_update": seconds_per_update})
        print(f"  SIGKILL, checkpoint_interval {interval}, trial {trial + 1}: {done} updates done, resumes from "
              f"{resumable}: {done - resumable} lost ({seconds_per_update:.2f} s/update)")
        for path in save_dir.rglob("*.ckpt"):
            path.unlink()
    return {"checkpoint_interval": interval, "trials": rows,
            "mean_lost": statistics.mean(row["lost"] for row in rows),
            "updates_per_second": 1 / statistics.median(row["seconds_per_update"] for row in rows)}


def training_state(config_path: Path) -> dict:
    """A real-size training checkpoint: the model, AdamW's state after one step, the rest as Checkpoint.state()."""
    import torch

    from minimmf.models.mmf_transformer import MMFTransformer
    from minimmf.utils.configuration import build_config

    config = build_config(config_path, ["model=mmf_transformer", "dataset=charades"])
    model = MMFTransformer(config.model_config.mmf_transformer)
    model.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "num_updates": 1,
            "current_iteration": 1, "current_epoch": 1, "best_update": 0, "best_iteration": 0,
            "best_metric_value": 0.0, "fp16_scaler": {}, "config": {}}


def write_seconds(state: dict, folder: Path, repeats: int) -> dict:
    import torch

    from minimmf.utils.checkpoint import state_bytes
    from minimmf.utils.file_io import atomic_save

    target = folder / "current.ckpt"
    ways = {"torch_save_in_place": lambda: torch.save(state, target),
            "atomic_no_fsync": lambda: atomic_save(state, target, fsync=False),
            "atomic_fsync": lambda: atomic_save(state, target, fsync=True)}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, write in ways.items():
            os.sync()  # the previous write's pages out first, so that each starts from a clean page cache
            started = time.perf_counter()
            write()
            seconds[name].append(time.perf_counter() - started)
    target.unlink()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"bytes": state_bytes(state), "seconds": seconds, "median_s": medians,
            "fsync_cost_s": medians["atomic_fsync"] - medians["atomic_no_fsync"]}


def fsync_costs(folder: Path, repeats: int) -> dict:
    import gc

    rows = {}
    for name, config in (("tiny", TINY_CONFIG), ("full", DIRECT_CONFIG)):
        state = training_state(config)
        rows[name] = write_seconds(state, folder, repeats)
        medians = rows[name]["median_s"]
        print(f"  {name} checkpoint ({rows[name]['bytes'] / 1e9:.2f} GB): torch.save in place "
              f"{medians['torch_save_in_place']:.2f} s, atomic {medians['atomic_no_fsync']:.2f} s, atomic + fsync "
              f"{medians['atomic_fsync']:.2f} s (fsync adds {rows[name]['fsync_cost_s']:.2f} s)")
        del state
        gc.collect()
    return rows


PARTS = ("sigterm", "sigkill", "fsync")


def measure(part: str, args: argparse.Namespace, folder: Path, data_dir: Path) -> object:
    if part == "sigterm":
        print("SIGTERM to exit:")
        return sigterm_to_exit(data_dir, folder, args.sigterm_trials)
    if part == "sigkill":
        print("updates lost per SIGKILL:")
        return [sigkill_losses(data_dir, folder, int(interval), args.kills) for interval in args.intervals.split(",")]
    print("writing one training checkpoint:")
    return fsync_costs(folder, args.write_repeats)


def summary(results: dict) -> None:
    sigterm = results.get("sigterm")
    if sigterm:
        print(f"SIGTERM -> exit: {sigterm['median_to_exit_s']:.1f} s (checkpoint saved after "
              f"{sigterm['median_to_saved_s']:.1f} s), median of {len(sigterm['trials'])}")
    for row in results.get("sigkill") or []:
        print(f"SIGKILL, checkpoint_interval {row['checkpoint_interval']}: {row['mean_lost']:.1f} updates lost on "
              f"average ({len(row['trials'])} kills), training at {row['updates_per_second']:.2f} updates/s")
    for name, row in (results.get("fsync") or {}).items():
        print(f"fsync per {name} checkpoint ({row['bytes'] / 1e9:.2f} GB): +{row['fsync_cost_s']:.2f} s "
              f"({row['median_s']['atomic_fsync']:.2f} s vs {row['median_s']['atomic_no_fsync']:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="measure this part alone (repeatable), keeping the others' saved figures")
    parser.add_argument("--sigterm-trials", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per checkpoint_interval (default 3)")
    parser.add_argument("--intervals", default="1,100", help="checkpoint_interval values (default 1,100)")
    parser.add_argument("--write-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="of the random kill moments")
    args = parser.parse_args(argv)
    random.seed(args.seed)

    print(f"preemption costs, tiny config (one process, batches of 4); machine: {machine()}")
    results = saved_results("preemption") if args.only else {}
    with tempfile.TemporaryDirectory(prefix="preemption_") as temporary:
        folder = Path(temporary)
        os.environ["MMF_CACHE_DIR"] = str(folder / "cache")
        data_dir = make_data(folder / "data")
        for part in args.only or PARTS:
            results[part] = measure(part, args, folder, data_dir)
            results.setdefault("load_average", {})[part] = os.getloadavg()
    results["machine"] = machine()
    print()
    summary(results)
    print(f"saved {save_results('preemption', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
