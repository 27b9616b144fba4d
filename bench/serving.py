"""End to end through a real TorchServe (token authorization on), for the
demo model (./save, from `make demo`) and a full-size Charades model with
random weights (the published model's shapes), in three parts:

- load: latency p50/p95/p99 and throughput at concurrency 1, 4 and 8, with
  TorchServe's batch_size 1 and 4, as shipped (fp32), against the in-process
  handler's own time for the same requests (the serving overhead);
- protocols: one 30 s video sent with each protocol request.py speaks;
- modes: each serving mode (bench.common.MODES: handler.precision and pt2
  compile) at batch 1, one request at a time: the cold start (registration to
  the first answer) on an empty compile cache and again on the cache the
  first start filled, p50 of the held-out videos, and p50 of a 2 s timeline
  of a 30 s video (15 windows and the clip: 16 forward passes).

Requests are held-out videos of the demo dataset (./data). Writes
bench/results/serving.json.

    python -m bench.serving [--models demo full] [--parts load protocols modes] [--modes ...]
        [--per-concurrency 3] [--protocol-repeats 10] [--mode-repeats 10]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import (
    MODES,
    SCRIPT,
    add_demo_arguments,
    archive,
    demo_requests,
    edited_model_config,
    full_size_model,
    machine,
    make_video,
    median_seconds,
    multipart,
    register,
    require_demo_model,
    save_results,
    saved_results,
    torchserve,
)
from devtools.worker import handle, load_handler
from minimmf.serving import kserve_v2
from minimmf.serving.kserve_v2 import ANSWER_OUTPUT
from minimmf.serving.torchserve import TorchServe

PROTOCOLS = ("multipart", "v2-json", "v2-binary")
CONCURRENCIES = (1, 4, 8)
BATCH_SIZES = (1, 4)
PROTOCOL_SCRIPT = "A person opens the door, then sits down and watches television."


# -------------------------------------------------------------- protocols


def protocol_request(serve: TorchServe, name: str, protocol: str, video: bytes, script: str) -> requests.Request:
    """The request request.py's ``--protocol`` sends, for ``video`` and ``script``."""
    headers = serve.headers("inference")
    if protocol == "multipart":
        return requests.Request("POST", serve.url("inference") + f"/predictions/{name}", headers=headers,
                                files=multipart(video, script))
    url = serve.url("inference") + f"/v2/models/{name}/infer"
    inputs = kserve_v2.handler_inputs(video, script)
    if protocol == "v2-json":
        return requests.Request("POST", url, headers=headers, json=kserve_v2.encode_json_request(inputs))
    body, header_length = kserve_v2.encode_request(inputs, [ANSWER_OUTPUT])
    return requests.Request("POST", url, data=body, headers={**headers, kserve_v2.HEADER_LENGTH: str(header_length)})


def protocol_rows(serve: TorchServe, name: str, video: bytes, script: str, repeats: int) -> list[dict]:
    """p50 latency and bytes on the wire of one video sent with each protocol, one at a time."""
    rows = []
    with requests.Session() as session:
        for protocol in PROTOCOLS:
            prepared = session.prepare_request(protocol_request(serve, name, protocol, video, script))

            def send(prepared=prepared, protocol=protocol) -> None:
                response = session.send(prepared, timeout=600)
                if response.status_code != 200:
                    raise RuntimeError(f"{protocol}: HTTP {response.status_code} {response.text[:200]}")

            rows.append({"protocol": protocol, "video_bytes": len(video), "request_bytes": len(prepared.body),
                         "p50_ms": median_seconds(send, repeats) * 1000, "repeats": repeats})
            print(f"{protocol:<10} {len(prepared.body):>12,} bytes on the wire  p50 {rows[-1]['p50_ms']:6.0f} ms",
                  flush=True)
    return rows


def protocols_on_a_long_video(serve: TorchServe, repeats: int) -> list[dict]:
    """The demo model at batch 1 answering a 30 s 854x480 H.264+AAC video sent with each protocol."""
    register(serve, "demo", name="demo", batch_size=1, initial_workers=1)
    print("\nprotocols, a 30 s 854x480 video, demo model, batch 1, one request at a time:")
    try:
        return protocol_rows(serve, "demo", make_video(30).read_bytes(), PROTOCOL_SCRIPT, repeats)
    finally:
        serve.unregister("demo")


# ------------------------------------------------------------------- load


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load(serve: TorchServe, name: str, requests_: list[tuple[bytes, str]], concurrency: int,
         total: int) -> dict:
    """``total`` requests at ``concurrency``: latency percentiles and throughput."""
    def one(index: int) -> tuple[float, int]:
        video, script = requests_[index % len(requests_)]
        started = time.perf_counter()
        status = serve.predict(multipart(video, script), name=name).status_code
        return time.perf_counter() - started, status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(total)))
    wall = time.perf_counter() - started
    latencies = [seconds * 1000 for seconds, _ in results]
    return {"concurrency": concurrency, "requests": total, "errors": sum(s != 200 for _, s in results),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "throughput_rps": total / wall}


def in_process_ms(model_dir: Path, requests_: list[tuple[bytes, str]], repeats: int) -> float:
    """The handler's own median time per request, run in this process as TorchServe's worker runs it."""
    handler, context = load_handler(model_dir)
    pending = itertools.cycle(requests_)

    def one() -> None:
        video, script = next(pending)
        handle(handler, context, [{"data": bytearray(video), "script": script.encode()}])

    return median_seconds(one, repeats) * 1000


def register_batched(serve: TorchServe, name: str, batch_size: int) -> None:
    # the benchmark varies the batching: registration parameters override model-config.yaml
    register(serve, name, name=name, batch_size=batch_size, max_batch_delay=50, initial_workers=1)
    served_batch = serve.describe(name)[0]["batchSize"]
    if served_batch != batch_size:
        raise RuntimeError(f"{name} registered with batch size {served_batch}, not {batch_size}")


def load_rows(serve: TorchServe, name: str, model_dir: Path, requests_: list[tuple[bytes, str]],
              per_concurrency: int) -> list[dict]:
    """The model at each batch size and concurrency, beside the in-process handler's time."""
    handler_ms = in_process_ms(model_dir, requests_, repeats=5)
    rows = []
    for batch_size in BATCH_SIZES:
        register_batched(serve, name, batch_size)
        load(serve, name, requests_, 1, 2)  # warm-up
        for concurrency in CONCURRENCIES:
            # at least 10 requests, so that p50 at concurrency 1 is not one sample's noise
            total = max(10, per_concurrency * concurrency)
            row = {"model": name, "batch_size": batch_size, "in_process_ms": handler_ms,
                   **load(serve, name, requests_, concurrency, total)}
            rows.append(row)
            print(f"{name:<5} batch {batch_size} conc {concurrency}: p50 {row['p50_ms']:7.0f} ms  "
                  f"p95 {row['p95_ms']:7.0f}  p99 {row['p99_ms']:7.0f}  "
                  f"{row['throughput_rps']:5.2f} req/s  errors {row['errors']}  "
                  f"(in-process handler {handler_ms:.0f} ms)", flush=True)
        serve.unregister(name)
    return rows


# ------------------------------------------------------------------ modes


def answer_seconds(serve: TorchServe, name: str, files: dict) -> float:
    """Seconds of one request, which must succeed."""
    started = time.perf_counter()
    response = serve.predict(files, name=name)
    if response.status_code != 200:
        raise RuntimeError(f"{name}: HTTP {response.status_code} {response.text[:200]}")
    return time.perf_counter() - started


def cold_start(serve: TorchServe, name: str, files: dict) -> dict[str, float]:
    """Seconds from registering ``name`` (one worker, batch 1) to its first answer."""
    started = time.perf_counter()
    register(serve, name, name=name, batch_size=1, initial_workers=1)
    registered = time.perf_counter() - started
    first = answer_seconds(serve, name, files)
    return {"registration_s": registered, "first_answer_s": first, "total_s": registered + first}


def mode_row(serve: TorchServe, model: str, mode: str, workdir: Path, store: Path, run: tuple[Path, Path | None],
             requests_: list[tuple[bytes, str]], repeats: int) -> dict:
    """One serving mode of ``model``: cold starts, p50 of a clip and of a timeline."""
    precision, compiled = MODES[mode]
    name = f"{model}-{mode.replace(' ', '-')}"
    cache = workdir / "inductor" / name  # empty until this mode's first start compiles into it
    model_config = edited_model_config(workdir / f"{name}.yaml", {
        "handler.precision": precision, "pt2.compile.enable": compiled, "handler.compile_cache_dir": str(cache)})
    save_dir, weights = run
    archive(save_dir, store, name=name, model_config=model_config, weights=weights, folder=True)
    first_request = multipart(*requests_[0])
    timeline = multipart(make_video(30).read_bytes(), SCRIPT, segment_seconds="2.0")
    row = {"model": model, "mode": mode, "cold_start": cold_start(serve, name, first_request)}
    clips = load(serve, name, requests_, 1, repeats)
    if clips["errors"]:
        raise RuntimeError(f"{name}: {clips['errors']} of {clips['requests']} requests failed")
    row["p50_ms"] = clips["p50_ms"]
    row["timeline_p50_ms"] = median_seconds(lambda: answer_seconds(serve, name, timeline), repeats) * 1000
    serve.unregister(name)
    row["warm_cache_start"] = warm = None
    if compiled:  # a restarted worker: the same folder, the compile cache now filled
        row["warm_cache_start"] = warm = cold_start(serve, name, first_request)
        serve.unregister(name)
    print(f"{model:<5}{mode:>15}  cold start {row['cold_start']['total_s']:6.1f} s"
          + (f"  warm cache {warm['total_s']:6.1f} s" if warm else f"{'':>19}")
          + f"  p50 {row['p50_ms']:6.0f} ms  timeline p50 {row['timeline_p50_ms']:6.0f} ms", flush=True)
    return row


def mode_rows(serve: TorchServe, workdir: Path, store: Path, runs: dict[str, tuple[Path, Path | None]],
              modes: list[str], requests_: list[tuple[bytes, str]], repeats: int) -> list[dict]:
    print("\nserving modes, batch 1, one request at a time:")
    return [mode_row(serve, model, mode, workdir, store, run, requests_, repeats)
            for model, run in runs.items() for mode in modes]


# -------------------------------------------------------------------- main


def model_runs(models: list[str], save_dir: Path, workdir: Path) -> dict[str, tuple[Path, Path | None]]:
    """Name -> (run folder, weights replacing its own) of the demo run and of the full-size model."""
    runs: dict[str, tuple[Path, Path | None]] = {}
    if "demo" in models:
        runs["demo"] = (save_dir, None)
    if "full" in models:
        runs["full"] = full_size_model(workdir)
    return runs


def print_summary(line: str, rows: list[dict]) -> None:
    print(f"\nmachine: {line}")
    print(f"{'model':<6}{'batch':>6}{'conc':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}"
          f"{'handler ms':>12}{'overhead':>10}")
    for row in rows:
        overhead = row["p50_ms"] - row["in_process_ms"] if row["concurrency"] == 1 else None
        print(f"{row['model']:<6}{row['batch_size']:>6}{row['concurrency']:>6}{row['p50_ms']:>9.0f}"
              f"{row['p95_ms']:>9.0f}{row['p99_ms']:>9.0f}{row['throughput_rps']:>8.2f}{row['in_process_ms']:>12.0f}"
              + (f"{overhead:>9.0f}ms" if overhead is not None else f"{'':>10}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--models", nargs="*", default=["demo", "full"], choices=["demo", "full"])
    parser.add_argument("--parts", nargs="*", default=["load", "protocols", "modes"],
                        choices=["load", "protocols", "modes"])
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--per-concurrency", type=int, default=3, help="requests per unit of concurrency")
    parser.add_argument("--protocol-repeats", type=int, default=10)
    parser.add_argument("--mode-repeats", type=int, default=10, help="requests per mode for each p50")
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    requests_ = demo_requests(args.data_dir, 8)
    line = machine()
    rows, protocols, modes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = workdir / "model_store"
        runs = model_runs(args.models, args.save_dir, workdir)
        with torchserve(workdir, store) as serve:
            if "load" in args.parts:
                for name, (save_dir, weights) in runs.items():
                    model_dir = archive(save_dir, store, name=name, weights=weights, folder=True)
                    rows += load_rows(serve, name, model_dir, requests_, args.per_concurrency)
            if "protocols" in args.parts and "demo" in runs:
                archive(args.save_dir, store, name="demo", folder=True)
                protocols = protocols_on_a_long_video(serve, args.protocol_repeats)
            if "modes" in args.parts:
                modes = mode_rows(serve, workdir, store, runs, args.modes, requests_, args.mode_repeats)
    if rows:
        print_summary(line, rows)
    report = saved_results("serving")  # the parts and modes not run this time keep their last figures
    report["machine"] = line
    for part, key, value in (("load", "rows", rows), ("protocols", "protocols", protocols)):
        if part in args.parts:
            report[key] = value
    if "modes" in args.parts:
        measured = {(row["model"], row["mode"]) for row in modes}
        kept = [row for row in report.get("modes", []) if (row["model"], row["mode"]) not in measured]
        report["modes"] = kept + modes
    print(f"saved {save_results('serving', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
