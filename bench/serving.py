#!/usr/bin/env python
"""End to end through a real TorchServe (token authorization on): latency
p50/p95/p99 and throughput at concurrency 1, 4 and 8, with TorchServe's
batch_size 1 and 4, for the demo model (./save, from `make demo`) and a
full-size Charades model with random weights; against the in-process
handler's own time for the same requests (the serving overhead).

Requests are held-out videos of the demo dataset (./data). Writes
bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.preprocess import make_video  # noqa: E402
from devtools.worker import handle, load_handler  # noqa: E402
from minimmf.datasets.builders.charades.layout import CharadesLayout  # noqa: E402
from minimmf.serving import kserve_v2  # noqa: E402
from minimmf.serving.kserve_v2 import ANSWER_OUTPUT  # noqa: E402
from minimmf.serving.torchserve import TorchServe, archive_model, default_labels  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache"
PROTOCOLS = ("multipart", "v2-json", "v2-binary")


def has_demo_model(save_dir: Path, data_dir: Path) -> bool:
    return (save_dir / "mmf_transformer_final.pth").is_file() and \
        CharadesLayout.default(data_dir).annotations["test"][0].is_file()


def demo_requests(data_dir: Path, count: int) -> list[tuple[bytes, str]]:
    """(video bytes, script) of the first ``count`` held-out videos of the demo data."""
    df = CharadesLayout.default(data_dir).read_split("test")
    return [(Path(row.path).read_bytes(), row.script) for row in df.head(count).itertuples()]


def full_size_model(workdir: Path) -> tuple[Path, Path, Path]:
    """config.yaml (MMF's Charades experiment), random weights, a 157-class labels file."""
    from minimmf.utils.build import build_model
    from minimmf.utils.configuration import build_config

    CACHE.mkdir(parents=True, exist_ok=True)
    weights = CACHE / "mmf_transformer_charades_random.pth"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.save(build_model(build_config(ROOT / "config.yaml")).state_dict(), weights)
    save_dir = workdir / "full_save"
    save_dir.mkdir(exist_ok=True)
    (save_dir / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    labels = save_dir / "charades_action_labels.csv"
    pd.Series([repr([f"Action {i:03d}" for i in range(157)])], name="action_labels").to_csv(labels)
    return save_dir, weights, labels


def protocol_request(serve: TorchServe, name: str, protocol: str, video: bytes, script: str) -> requests.Request:
    """The request request.py's ``--protocol`` sends, for ``video`` and ``script``."""
    headers = serve.headers("inference")
    if protocol == "multipart":
        return requests.Request("POST", serve.url("inference") + f"/predictions/{name}", headers=headers,
                                files={"data": ("v.mp4", video), "script": (None, script)})
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
            latencies = []
            for _ in range(repeats + 1):  # the first is a warm-up
                started = time.perf_counter()
                response = session.send(prepared, timeout=600)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{protocol}: HTTP {response.status_code} {response.text[:200]}")
            rows.append({"protocol": protocol, "video_bytes": len(video), "request_bytes": len(prepared.body),
                         "p50_ms": statistics.median(latencies[1:]), "repeats": repeats})
            print(f"{protocol:<10} {len(prepared.body):>12,} bytes on the wire  p50 {rows[-1]['p50_ms']:6.0f} ms",
                  flush=True)
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load(serve: TorchServe, name: str, requests_: list[tuple[bytes, str]], concurrency: int,
         total: int) -> dict:
    def one(index: int) -> tuple[float, int]:
        video, script = requests_[index % len(requests_)]
        started = time.perf_counter()
        status = serve.predict({"data": ("v.mp4", video), "script": (None, script)}, name=name).status_code
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
    handler, context = load_handler(model_dir)
    times = []
    for index in range(repeats):
        video, script = requests_[index % len(requests_)]
        started = time.perf_counter()
        handle(handler, context, [{"data": bytearray(video), "script": script.encode()}])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


def protocols_on_a_long_video(serve: TorchServe, repeats: int) -> list[dict]:
    """The demo model at batch 1 answering a 30 s 854x480 H.264+AAC video sent with each protocol."""
    response = serve.register("demo", name="demo", batch_size=1, initial_workers=1)
    if response.status_code != 200:
        raise RuntimeError(f"registering demo: {response.text}")
    print("\nprotocols, a 30 s 854x480 video, demo model, batch 1, one request at a time:")
    try:
        return protocol_rows(serve, "demo", make_video(30).read_bytes(),
                             "A person opens the door, then sits down and watches television.", repeats)
    finally:
        serve.unregister("demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--models", nargs="*", default=["demo", "full"], choices=["demo", "full"])
    parser.add_argument("--per-concurrency", type=int, default=3, help="requests per unit of concurrency")
    parser.add_argument("--protocol-repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if not has_demo_model(args.save_dir, args.data_dir):
        print("error: needs the demo model and data; run `make demo` (or scripts/train.sh) first", file=sys.stderr)
        return 2
    requests_ = demo_requests(args.data_dir, 8)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    rows, protocols = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = workdir / "model_store"
        models = {}
        archive = {"model_config": ROOT / "model-config.yaml", "handler": ROOT / "handler.py", "folder": True}
        if "demo" in args.models:
            models["demo"] = archive_model(args.save_dir, store, name="demo", **archive,
                                           labels=default_labels(args.save_dir, ROOT))
        if "full" in args.models:
            save_dir, weights, labels = full_size_model(workdir)
            models["full"] = archive_model(save_dir, store, labels, weights, name="full", **archive)
        serve = TorchServe.private(workdir, store, ROOT / "config.properties")
        serve.start()
        try:
            for name, model_dir in models.items():
                handler_ms = in_process_ms(model_dir, requests_, repeats=6)
                for batch_size in (1, 4):
                    # the benchmark varies the batching: registration parameters override model-config.yaml
                    response = serve.register(name, name=name, batch_size=batch_size, max_batch_delay=50,
                                              initial_workers=1)
                    if response.status_code != 200:
                        raise RuntimeError(f"registering {name}: {response.text}")
                    served_batch = serve.describe(name)[0]["batchSize"]
                    if served_batch != batch_size:
                        raise RuntimeError(f"{name} registered with batch size {served_batch}, not {batch_size}")
                    load(serve, name, requests_, 1, 2)  # warm-up
                    for concurrency in (1, 4, 8):
                        # at least 10 requests, so that p50 at concurrency 1 is not one sample's noise
                        total = max(10, args.per_concurrency * concurrency)
                        row = {"model": name, "batch_size": batch_size, "in_process_ms": handler_ms,
                               **load(serve, name, requests_, concurrency, total)}
                        rows.append(row)
                        print(f"{name:<5} batch {batch_size} conc {concurrency}: p50 {row['p50_ms']:7.0f} ms  "
                              f"p95 {row['p95_ms']:7.0f}  p99 {row['p99_ms']:7.0f}  "
                              f"{row['throughput_rps']:5.2f} req/s  errors {row['errors']}  "
                              f"(in-process handler {handler_ms:.0f} ms)", flush=True)
                    serve.unregister(name)
            if "demo" in models:
                protocols = protocols_on_a_long_video(serve, args.protocol_repeats)
        finally:
            serve.stop()
    print(f"\nmachine: {machine}")
    print(f"{'model':<6}{'batch':>6}{'conc':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}"
          f"{'handler ms':>12}{'overhead':>10}")
    for row in rows:
        overhead = row["p50_ms"] - row["in_process_ms"] if row["concurrency"] == 1 else None
        print(f"{row['model']:<6}{row['batch_size']:>6}{row['concurrency']:>6}{row['p50_ms']:>9.0f}"
              f"{row['p95_ms']:>9.0f}{row['p99_ms']:>9.0f}{row['throughput_rps']:>8.2f}{row['in_process_ms']:>12.0f}"
              + (f"{overhead:>9.0f}ms" if overhead is not None else f"{'':>10}"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps({"machine": machine, "rows": rows, "protocols": protocols},
                                                     indent=1))
    print(f"saved {RESULTS / 'serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
