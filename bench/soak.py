#!/usr/bin/env python
"""Load and soak against a real TorchServe (loopback only, bounded in count
and time): ``--requests`` requests at concurrency ``--concurrency`` with
batch_size 4, a mix of good videos, bad inputs and hostile ones (huge
frames, frame bombs, sample-table bombs, concat lists, deep JSON, ...: see
minimmf/serving/hostile_inputs.py), each expected to get its documented
status within 30 s; the worker's resident memory (with its children)
sampled all along, its peak against idle (goal: at most idle + 1.5 GB), and
after the run against after warm-up; then the worker is killed mid-run and
TorchServe must restart it and serve later requests.

Needs the demo model and data (`make demo`). Prints the counts and writes
bench/results/soak.json; exits 1 when an expectation fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import demo_requests  # noqa: E402
from devtools.hostile_inputs import gray_frames, hostile_requests  # noqa: E402
from minimmf.serving.torchserve import TorchServe, archive_model, default_labels  # noqa: E402
from minimmf.utils.video_writer import tone, write_video  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MAX_VIDEO_BYTES = 8_000_000
MAX_SECONDS = 30  # every answer, 200 or 4xx, within this
MAX_PEAK_OVER_IDLE_MB = 1536


def request_mix(data_dir: Path, workdir: Path) -> list[tuple[str, dict, int]]:
    """(kind, multipart files, expected status) for every kind of input."""
    good = demo_requests(data_dir, 6)
    video, script = good[0]
    frames = gray_frames(20, 64, 48)
    silent = write_video(workdir / "silent.mp4", frames, fps=10).read_bytes()
    one_frame = write_video(workdir / "one.mp4", frames[:1], fps=10, audio=tone(0.5)).read_bytes()
    mix = [("good", {"data": ("v.mp4", v), "script": (None, s)}, 200) for v, s in good]
    mix += [
        ("no_audio", {"data": ("s.mp4", silent), "script": (None, script)}, 200),
        ("one_frame", {"data": ("o.mp4", one_frame), "script": (None, script)}, 200),
        ("corrupt", {"data": ("c.mp4", video[: len(video) // 3]), "script": (None, script)}, 400),
        ("empty", {"data": ("e.mp4", b""), "script": (None, script)}, 400),
        ("text", {"data": ("t.txt", b"this is not a video\n" * 200), "script": (None, script)}, 400),
        ("huge", {"data": ("h.mp4", b"\0" * (MAX_VIDEO_BYTES + 1)), "script": (None, script)}, 400),
    ]
    hostile = hostile_requests(workdir, video, script, MAX_VIDEO_BYTES)
    mix += [(name, request.files, request.status) for name, request in hostile.items()]
    return mix


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


def send_all(serve: TorchServe, mix: list, count: int, concurrency: int,
             on_request=None) -> tuple[collections.Counter, dict[str, float]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-run", type=int, default=120, help="requests in the worker-kill phase")
    args = parser.parse_args(argv)
    if not (args.save_dir / "mmf_transformer_final.pth").is_file():
        print("error: needs the demo model and data; run `make demo` first", file=sys.stderr)
        return 2
    report: dict = {}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_config = workdir / "model-config.yaml"
        model_config.write_text((ROOT / "model-config.yaml").read_text().replace(
            "max_video_bytes: 200000000", f"max_video_bytes: {MAX_VIDEO_BYTES}"))
        archive_model(args.save_dir, workdir / "store", default_labels(args.save_dir, ROOT), model_config=model_config,
                      handler=ROOT / "handler.py")
        mix = request_mix(args.data_dir, workdir)
        serve = TorchServe.private(workdir, workdir / "store", ROOT / "config.properties")
        serve.start()
        try:
            # batch_size 4 from model-config.yaml; a shorter delay than its 100 ms keeps the soak quick
            if serve.register("MMF_model.mar", max_batch_delay=50).status_code != 200:
                raise RuntimeError("registration failed")
            send_all(serve, mix, 2 * len(mix), args.concurrency)  # warm-up: every kind twice
            pid = worker_pid(serve)
            idle_rss = worker_rss_mb(pid)
            started = time.time()
            with PeakMemory(pid) as memory:
                counts, slowest = send_all(serve, mix, args.requests, args.concurrency)
            soak_seconds = time.time() - started
            after_rss = worker_rss_mb(pid)
            restarted = worker_pid(serve) != pid
            report["soak"] = {"requests": args.requests, "concurrency": args.concurrency, "seconds": soak_seconds,
                              "counts": {f"{k} {s} {v}": n for (k, s, v), n in sorted(counts.items())},
                              "slowest_seconds": {kind: round(seconds, 3) for kind, seconds in sorted(slowest.items())},
                              "worker_rss_mb_idle_after_warmup": idle_rss, "worker_rss_mb_peak": memory.peak,
                              "worker_rss_mb_after_run": after_rss, "worker_restarted": restarted}
            print(f"soak: {args.requests} requests at concurrency {args.concurrency} in {soak_seconds:.0f} s")
            for (kind, status, verdict), number in sorted(counts.items()):
                print(f"  {kind:<24} HTTP {status:>4}  x{number:<4} slowest {slowest[kind]:6.2f} s  {verdict}")
            print(f"  worker memory (with children): {idle_rss:.0f} MB idle after warm-up, peak {memory.peak:.0f} MB "
                  f"(+{memory.peak - idle_rss:.0f} MB), {after_rss:.0f} MB after the run "
                  f"({after_rss / idle_rss - 1:+.1%}); worker restarted: {restarted}")
            if any(v == "UNEXPECTED" for _, _, v in counts):
                failures.append("some requests got an unexpected status")
            if any(s >= 500 or s < 0 for _, s, _ in counts):
                failures.append("5xx or timeouts during the soak")
            if max(slowest.values()) > MAX_SECONDS:
                failures.append(f"an answer took more than {MAX_SECONDS} s")
            if memory.peak > idle_rss + MAX_PEAK_OVER_IDLE_MB:
                failures.append(f"peak worker memory over idle + {MAX_PEAK_OVER_IDLE_MB} MB")
            if after_rss > idle_rss * 1.10:
                failures.append("worker memory grew by more than 10%")
            if restarted:
                failures.append("the worker restarted during the soak")

            kill_at = args.kill_run // 4

            def kill_once(index: int) -> None:
                if index == kill_at:
                    os.kill(pid, signal.SIGKILL)

            kill_counts, _ = send_all(serve, mix, args.kill_run, args.concurrency, on_request=kill_once)
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if serve.describe()[0]["workers"][0]["status"] == "READY" and worker_pid(serve) != pid:
                        break
                except (requests.RequestException, KeyError, IndexError, ValueError):
                    pass
                time.sleep(1)
            new_pid = worker_pid(serve)
            after, _ = send_all(serve, mix, len(mix), args.concurrency)
            later_ok = all(v == "ok" for _, _, v in after)
            report["worker_kill"] = {"killed_pid": pid, "new_pid": new_pid,
                                     "counts": {f"{k} {s}": n for (k, s, _), n in sorted(kill_counts.items())},
                                     "later_requests_as_documented": later_ok}
            print(f"worker kill: killed pid {pid} after {kill_at} of {args.kill_run} requests; new worker pid "
                  f"{new_pid}; statuses during the kill run: "
                  + ", ".join(f"{s}x{n}" for s, n in collections.Counter(
                      s for (_, s, _), n in kill_counts.items() for _ in range(n)).items())
                  + f"; {len(mix)} later requests as documented: {later_ok}")
            if new_pid == pid or not later_ok:
                failures.append("TorchServe did not bring back a working worker")
        finally:
            serve.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({**report, "failures": failures}, indent=1))
    print("\n" + ("PASSED" if not failures else "FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
