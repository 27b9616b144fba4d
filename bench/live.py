#!/usr/bin/env python
"""Live streams through a real TorchServe (the live model, sequence
batching), demo model, on this machine: chunks of 1 s cut from a 30 s 480p
H.264+AAC video (a key frame every second, as a camera writes them), each
stream sending its chunks at real-time pace.

1. Latency from the moment a chunk is complete (its last frame recorded) to
   its answer, p50/p95, for 1, 2, 4 and 8 concurrent streams (each starting
   at its own fraction of a second); the most streams, each answered every
   second, that keep p95 within 1 s (the sweep goes on past 8 while they do);
   and the state one stream holds (the handler's own count, in-process).
2. Against what users do today, re-sending the whole window (the last
   ``window_seconds``, cut at key frames without re-encoding) as a video
   every second to the model for whole videos, per second of stream: bytes
   sent, decoding (every frame to RGB, all the sound), the handler's
   preprocessing (decoding and the per-frame transform of the frames kept)
   and the server's CPU time (worker and frontend).

Needs the demo model (`make demo`, ./save). Run from the repository root:
``python -m bench.live``. Writes bench/results/live.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import psutil
import requests
import yaml

from bench.common import (
    ROOT,
    SCRIPT,
    add_demo_arguments,
    archive,
    machine,
    make_video,
    register,
    require_demo_model,
    save_results,
    torchserve,
)
from devtools.worker import extract, load_handler
from minimmf.datasets.video_clips import decode_chunk
from minimmf.serving.batch import PreparedBatch
from minimmf.serving.chunking import Chunk, cut_chunks, open_source
from minimmf.serving.live import ChunkRequest
from minimmf.serving.torchserve import TorchServe

LIVE_MODEL_CONFIG = ROOT / "model-config-live.yaml"
LIVE, WHOLE = "MMF_model_live", "MMF_model"
TARGET_P95 = 1.0


def window_video(source: Path, start: float, end: float) -> bytes:
    """The source's packets of [start, end) seconds as one Matroska video: what a user cuts today."""
    buffer = io.BytesIO()
    with av.open(str(source)) as inp, av.open(buffer, "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        for packet in inp.demux(inp.streams.video[0], inp.streams.audio[0]):
            if packet.size and packet.pts is not None and start <= float(packet.pts * packet.time_base) < end:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return buffer.getvalue()


def server_cpu_seconds(serve: TorchServe) -> float:
    """CPU seconds the TorchServe frontend and its workers have used."""
    frontend = psutil.Process(int(serve.pid_file.read_text()))
    return sum(sum(p.cpu_times()[:2]) for p in [frontend, *frontend.children(recursive=True)])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_streams(serve: TorchServe, chunks: list[Chunk], streams: int) -> dict:
    """``streams`` clients at once, each sending ``chunks`` at real-time pace
    (starting at its own fraction of a second); every chunk's latency."""
    url = serve.url("inference") + f"/predictions/{LIVE}"
    latencies: list[float] = []
    behind = threading.Event()
    began = time.monotonic() + 0.5

    def client(index: int) -> None:
        start, stream_id, session = began + index / streams, None, requests.Session()
        for chunk in chunks:
            complete = start + chunk.end
            time.sleep(max(0.0, complete - time.monotonic()))
            headers = {**serve.headers("inference"), **({"ts_request_sequence_id": stream_id} if stream_id else {})}
            response = session.post(url, headers=headers, timeout=300,
                                    files={"data": ("c.mkv", chunk.data), "script": (None, SCRIPT),
                                           "chunk": (None, str(chunk.number))})
            response.raise_for_status()
            stream_id = response.headers["ts_request_sequence_id"]
            latencies.append(time.monotonic() - complete)
            if time.monotonic() - complete > 2 * TARGET_P95:
                behind.set()
        session.post(url, headers={**serve.headers("inference"), "ts_request_sequence_id": stream_id,
                                   "ts_request_sequence_end": "true"}, timeout=300)

    cpu = server_cpu_seconds(serve)
    with ThreadPoolExecutor(max_workers=streams) as pool:
        list(pool.map(client, range(streams)))
    cpu = server_cpu_seconds(serve) - cpu
    seconds = chunks[-1].end * streams
    return {"streams": streams, "chunks": len(latencies), "p50_s": percentile(latencies, 50),
            "p95_s": percentile(latencies, 95), "max_s": max(latencies), "fell_behind": behind.is_set(),
            "server_cpu_s_per_stream_second": cpu / seconds}


def today(serve: TorchServe, video: Path, window: float, seconds: int) -> dict:
    """Every second, the last ``window`` seconds sent as a video to the model for whole videos."""
    url = serve.url("inference") + f"/predictions/{WHOLE}"
    windows = [window_video(video, max(0.0, end - window), end) for end in range(1, seconds + 1)]
    cpu, latencies = server_cpu_seconds(serve), []
    for data in windows:
        started = time.monotonic()
        response = requests.post(url, headers=serve.headers("inference"), timeout=300,
                                 files={"data": ("w.mkv", data), "script": (None, SCRIPT)})
        response.raise_for_status()
        latencies.append(time.monotonic() - started)
    cpu = server_cpu_seconds(serve) - cpu
    return {"bytes_per_second": statistics.mean(len(w) for w in windows[int(window):]) if seconds > window
            else statistics.mean(len(w) for w in windows),
            "server_cpu_s_per_stream_second": cpu / seconds, "p50_s": percentile(latencies, 50),
            "windows": windows}


def decoding(model_dir: Path, chunks: list[Chunk], windows: list[bytes], config: dict) -> dict:
    """Per second of stream, in-process: decoding alone (every frame to RGB and
    all the audio, each 1 s chunk once against each window video whole), and the
    preprocessing the handlers do (decoding and the per-frame transform of the
    frames kept: the live stream's windows' frames, the whole video's clip); and
    the most state one stream held."""
    handler, _ = load_handler(model_dir, config, name=LIVE)
    live, maker, states, live_preprocess = handler.live, handler.predictor.sample_maker, [], 0.0
    for chunk in chunks:
        prepared = PreparedBatch(size=1)
        fields = {"data": bytearray(chunk.data), "script": SCRIPT, "chunk": str(chunk.number)}
        batch = live.prepare({0: ChunkRequest("bench", False, False, fields)}, prepared)
        live.answers(batch, handler.predictor.predict(prepared.samples) if prepared.samples else None)
        live_preprocess += batch.decode_seconds
        states.append(live.streams["bench"].state_bytes())

    def seconds_to_decode(videos: list[bytes], transformed: bool) -> float:
        started = time.perf_counter()
        for data in videos:
            if transformed:
                maker.decode_plan(data, handler.predictor.video_clips)
            else:
                decode_chunk(data, lambda info: set(range(info.num_frames)), None, maker.limits)  # all, as RGB
        return time.perf_counter() - started

    seconds, frame = chunks[-1].end, maker.transform_frames(np.zeros((1, 480, 854, 3), np.uint8))[0]
    return {"decode_s_per_second": {"live": seconds_to_decode([c.data for c in chunks], False) / seconds,
                                    "today": seconds_to_decode(windows, False) / seconds},
            "preprocess_s_per_second": {"live": live_preprocess / seconds,
                                        "today": seconds_to_decode(windows, True) / seconds},
            "state_bytes_max": max(states), "state_bytes_bound": live.kept_frames_bound() * frame.nbytes,
            "kept_frame_shape": list(frame.shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser)
    parser.add_argument("--seconds", type=int, default=30, help="length of each stream")
    parser.add_argument("--streams", default="1,2,4,8", help="concurrent streams to measure")
    parser.add_argument("--no-search", action="store_true", help="stop after --streams, even when all keep up")
    args = parser.parse_args(argv)
    if not require_demo_model(args.save_dir, args.data_dir):
        return 2
    video = make_video(args.seconds, key_frame_seconds=1)
    with open_source(str(video)) as container:
        chunks = list(cut_chunks(container, 1.0))
    assert not any(chunk.reencoded for chunk in chunks)
    config = yaml.safe_load(LIVE_MODEL_CONFIG.read_text())
    window = float(config["handler"]["live"]["window_seconds"])
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        store = workdir / "store"
        archive(args.save_dir, store, name=LIVE, model_config=LIVE_MODEL_CONFIG)
        archive(args.save_dir, store, name=WHOLE)
        with torchserve(workdir, store) as serve:
            for name in (LIVE, WHOLE):
                register(serve, f"{name}.mar", name)
            rows, counts = [], [int(n) for n in args.streams.split(",")]
            while counts:
                streams = counts.pop(0)
                rows.append(run_streams(serve, chunks, streams))
                print(json.dumps(rows[-1]), flush=True)
                kept_up = rows[-1]["p95_s"] <= TARGET_P95 and not rows[-1]["fell_behind"]
                if not counts and kept_up and not args.no_search:
                    counts = [streams + max(1, streams // 4)]
            baseline = today(serve, video, window, args.seconds)
        decoded = decoding(extract(store / f"{LIVE}.mar", workdir / "live"), chunks, baseline.pop("windows"), config)
    sustained = max((row["streams"] for row in rows if row["p95_s"] <= TARGET_P95 and not row["fell_behind"]),
                    default=0)
    live_bytes = statistics.mean(len(chunk.data) for chunk in chunks)
    one = next(row for row in rows if row["streams"] == 1) if any(r["streams"] == 1 for r in rows) else rows[0]
    comparison = {
        "bytes_sent_per_second": {"live": live_bytes, "today": baseline["bytes_per_second"]},
        "decode_s_per_second": decoded["decode_s_per_second"],
        "preprocess_s_per_second": decoded["preprocess_s_per_second"],
        "server_cpu_s_per_second": {"live": one["server_cpu_s_per_stream_second"],
                                    "today": baseline["server_cpu_s_per_stream_second"]},
    }
    report = {"machine": machine(), "video": f"{args.seconds} s 854x480 H.264+AAC, 30 fps, a key frame every second",
              "window_seconds": window, "answer_every_seconds": config["handler"]["live"]["answer_every_seconds"],
              "latency": rows, "sustained_streams_p95_within_1s": sustained,
              "state_bytes_per_stream": {"max_measured": decoded["state_bytes_max"],
                                         "bound_480p": decoded["state_bytes_bound"],
                                         "kept_frame_shape": decoded["kept_frame_shape"]},
              "against_resending_the_window": comparison, "today_p50_s": baseline["p50_s"]}
    print(f"\n{'streams':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  server CPU s per stream-second")
    for row in rows:
        print(f"{row['streams']:>7} {row['p50_s']:7.3f} {row['p95_s']:7.3f} {row['max_s']:7.3f}  "
              f"{row['server_cpu_s_per_stream_second']:.3f}{'  (fell behind)' if row['fell_behind'] else ''}")
    print(f"sustained real-time streams with p95 <= {TARGET_P95:g} s: {sustained}")
    print(f"state per stream: {decoded['state_bytes_max']:,} bytes (bound for 480p: "
          f"{decoded['state_bytes_bound']:,})")
    for name, values in comparison.items():
        print(f"{name}: live {values['live']:.4g}, today {values['today']:.4g} "
              f"({values['today'] / values['live']:.1f}x)")
    print(f"saved {save_results('live', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
