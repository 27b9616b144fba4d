"""Load and soak against a real TorchServe (loopback only, bounded in count
and time): ``--requests`` requests at concurrency ``--concurrency`` with
batch_size 4, a mix of good videos, bad inputs and hostile ones (huge
frames, frame bombs, sample-table bombs, concat lists, deep JSON, ...: see
devtools/hostile_inputs.py), each expected to get its documented
status within 30 s; the worker's resident memory (with its children)
sampled all along, its peak against idle (goal: at most idle + 1.5 GB), and
after the run against after warm-up; then the worker is killed mid-run and
TorchServe must restart it and serve later requests.

Needs the demo model and data (`make demo`). Prints the counts and writes
bench/results/soak.json; exits 1 when an expectation fails.

    python -m bench.soak [--requests 1000] [--concurrency 8] [--kill-run 120]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from bench.common import (
    add_demo_arguments,
    archive,
    demo_requests,
    edited_model_config,
    multipart,
    register,
    require_demo_model,
    save_results,
    torchserve,
)
from devtools.hostile_inputs import gray_frames, hostile_requests
from minimmf.serving.torchserve import TorchServe
from minimmf.utils.video_writer import tone, write_video

MAX_VIDEO_BYTES = 8_000_000  # the soak's handler.max_video_bytes, so that "huge" uploads stay small
MAX_SECONDS = 30  # every answer, 200 or 4xx, within this
MAX_PEAK_OVER_IDLE_MB = 1536
MAX_GROWTH = 0.10  # worker memory after the run against after warm-up
RESTART_SECONDS = 120  # for TorchServe to bring back a killed worker

Mix = list[tuple[str, dict, int]]


def request_mix(data_dir: Path, workdir: Path) -> Mix:
    """(kind, multipart files, expected status) for every kind of input."""
    good = demo_requests(data_dir, 6)
    video, script = good[0]
    frames = gray_frames(20, 64, 48)
    silent = write_video(workdir / "silent.mp4", frames, fps=10).read_bytes()
    one_frame = write_video(workdir / "one.mp4", frames[:1], fps=10, audio=tone(0.5)).read_bytes()
    mix = [("good", multipart(v, s), 200) for v, s in good]
    mix += [
        ("no_audio", multipart(silent, script, "s.mp4"), 200),
        ("one_frame", multipart(one_frame, script, "o.mp4"), 200),
        ("corrupt", multipart(video[: len(video) // 3], script, "c.mp4"), 400),
        ("empty", multipart(b"", script, "e.mp4"), 400),
        ("text", multipart(b"this is not a video\n" * 200, script, "t.txt"), 400),
        ("huge", multipart(b"\0" * (MAX_VIDEO_BYTES + 1), script, "h.mp4"), 400),
    ]
    hostile = hostile_requests(workdir, video, script, MAX_VIDEO_BYTES)
    mix += [(name, request.files, request.status) for name, request in hostile.items()]
    return mix


# ----------------------------------------------------------------- worker


def worker_pid(serve: TorchServe) -> int:
    return int(serve.describe()[0]["workers"][0]["pid"])


def worker_rss_mb(pid: int) -> float:
    """Resident memory of the worker and its child processes."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


class PeakMemory:
    """Samples ``worker_rss_mb`` every 50 ms in the background; ``peak`` is the largest seen."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, worker_rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, worker_rss_mb(self.pid))
            except psutil.Error:
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_for_new_worker(serve: TorchServe, old_pid: int, timeout: float = RESTART_SECONDS) -> int:
    """The pid of the worker TorchServe started in place of ``old_pid`` once it is READY (or after ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if serve.describe()[0]["workers"][0]["status"] == "READY" and worker_pid(serve) != old_pid:
                break
        except (requests.RequestException, KeyError, IndexError, ValueError):
            pass
        time.sleep(1)
    return worker_pid(serve)


# --------------------------------------------------------------- requests


def send_all(serve: TorchServe, mix: Mix, count: int, concurrency: int,
             on_request: Callable[[int], None] | None = None) -> tuple[collections.Counter, dict[str, float]]:
    """Send ``count`` requests of ``mix`` in turn: the (kind, status, verdict)
    counts and each kind's slowest answer in seconds."""
    def one(index: int) -> tuple[str, int, int, float]:
        if on_request is not None:
            on_request(index)
        kind, files, expected = mix[index % len(mix)]
        started = time.perf_counter()
        try:
            status = serve.predict(files).status_code
        except requests.RequestException:
            status = -1  # timeout or connection error
        return kind, status, expected, time.perf_counter() - started

    counts: collections.Counter = collections.Counter()
    slowest: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for kind, status, expected, seconds in pool.map(one, range(count)):
            counts[(kind, status, "ok" if status == expected else "UNEXPECTED")] += 1
            slowest[kind] = max(slowest.get(kind, 0.0), seconds)
    return counts, slowest


# ----------------------------------------------------------------- phases


def soak_failures(counts: collections.Counter, slowest: dict[str, float], idle_rss: float, peak_rss: float,
                  after_rss: float, restarted: bool) -> list[str]:
    checks = [
        (any(v == "UNEXPECTED" for _, _, v in counts), "some requests got an unexpected status"),
        (any(s >= 500 or s < 0 for _, s, _ in counts), "5xx or timeouts during the soak"),
        (max(slowest.values()) > MAX_SECONDS, f"an answer took more than {MAX_SECONDS} s"),
        (peak_rss > idle_rss + MAX_PEAK_OVER_IDLE_MB, f"peak worker memory over idle + {MAX_PEAK_OVER_IDLE_MB} MB"),
        (after_rss > idle_rss * (1 + MAX_GROWTH), f"worker memory grew by more than {MAX_GROWTH:.0%}"),
        (restarted, "the worker restarted during the soak"),
    ]
    return [failure for failed, failure in checks if failed]


def soak(serve: TorchServe, mix: Mix, pid: int, count: int, concurrency: int) -> tuple[dict, list[str]]:
    """``count`` requests of the mix with the worker's memory sampled all along: the report and what failed."""
    idle_rss = worker_rss_mb(pid)
    started = time.time()
    with PeakMemory(pid) as memory:
        counts, slowest = send_all(serve, mix, count, concurrency)
    seconds = time.time() - started
    after_rss = worker_rss_mb(pid)
    restarted = worker_pid(serve) != pid
    report = {"requests": count, "concurrency": concurrency, "seconds": seconds,
              "counts": {f"{k} {s} {v}": n for (k, s, v), n in sorted(counts.items())},
              "slowest_seconds": {kind: round(seconds, 3) for kind, seconds in sorted(slowest.items())},
              "worker_rss_mb_idle_after_warmup": idle_rss, "worker_rss_mb_peak": memory.peak,
              "worker_rss_mb_after_run": after_rss, "worker_restarted": restarted}
    print(f"soak: {count} requests at concurrency {concurrency} in {seconds:.0f} s")
    for (kind, status, verdict), number in sorted(counts.items()):
        print(f"  {kind:<24} HTTP {status:>4}  x{number:<4} slowest {slowest[kind]:6.2f} s  {verdict}")
    print(f"  worker memory (with children): {idle_rss:.0f} MB idle after warm-up, peak {memory.peak:.0f} MB "
          f"(+{memory.peak - idle_rss:.0f} MB), {after_rss:.0f} MB after the run "
          f"({after_rss / idle_rss - 1:+.1%}); worker restarted: {restarted}")
    return report, soak_failures(counts, slowest, idle_rss, memory.peak, after_rss, restarted)


def worker_kill(serve: TorchServe, mix: Mix, pid: int, count: int, concurrency: int) -> tuple[dict, list[str]]:
    """Kill the worker a quarter into ``count`` requests, then send the whole
    mix once more: TorchServe must have brought back a worker that answers as documented."""
    kill_at = count // 4

    def kill_once(index: int) -> None:
        if index == kill_at:
            os.kill(pid, signal.SIGKILL)

    kill_counts, _ = send_all(serve, mix, count, concurrency, on_request=kill_once)
    new_pid = wait_for_new_worker(serve, pid)
    after, _ = send_all(serve, mix, len(mix), concurrency)
    later_ok = all(v == "ok" for _, _, v in after)
    report = {"killed_pid": pid, "new_pid": new_pid,
              "counts": {f"{k} {s}": n for (k, s, _), n in sorted(kill_counts.items())},
              "later_requests_as_documented": later_ok}
    statuses: collections.Counter = collections.Counter()
    for (_, status, _), number in kill_counts.items():
        statuses[status] += number
    print(f"worker kill: killed pid {pid} after {kill_at} of {count} requests; new worker pid {new_pid}; statuses "
          f"during the kill run: {', '.join(f'{s}x{n}' for s, n in statuses.items())}; {len(mix)} later requests "
          f"as documented: {later_ok}")
    failed = new_pid == pid or not later_ok
    return report, ["TorchServe did not bring back a working worker"] if failed else []


# -------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-run", type=int, default=120, help="requests in the worker-kill phase")
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_config = edited_model_config(workdir / "model-config.yaml", {"handler.max_video_bytes": MAX_VIDEO_BYTES})
        archive(args.save_dir, workdir / "store", model_config=model_config)
        mix = request_mix(args.data_dir, workdir)
        with torchserve(workdir, workdir / "store") as serve:
            # batch_size 4 from model-config.yaml; a shorter delay than its 100 ms keeps the soak quick
            register(serve, "MMF_model.mar", max_batch_delay=50)
            send_all(serve, mix, 2 * len(mix), args.concurrency)  # warm-up: every kind twice
            pid = worker_pid(serve)
            soak_report, soak_failed = soak(serve, mix, pid, args.requests, args.concurrency)
            kill_report, kill_failed = worker_kill(serve, mix, pid, args.kill_run, args.concurrency)
    failures = soak_failed + kill_failed
    save_results("soak", {"soak": soak_report, "worker_kill": kill_report, "failures": failures})
    print("\n" + ("PASSED" if not failures else "FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
