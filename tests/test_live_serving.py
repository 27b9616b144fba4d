"""Live streams against a real TorchServe with sequence batching, archived
and registered as a user does it (scripts/archive.sh builds MMF_model_live.mar
beside MMF_model.mar; the serving CLI registers it): interleaved streams of
different videos, a recorded video answering as its timeline does, a bad
chunk, a stream's end freeing its place, idle streams, the stream limit,
request.py --live on a file, and a killed worker's streams after the model is
registered again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from devtools.worker import extract, handle, load_handler
from minimmf.serving.torchserve import TorchServe
from tests.conftest import ROOT
from tests.live_media import chunks_of, recorded_video
from tests.test_live import SCRIPT, largest_difference, spans, stream
from tests.test_serving import serving_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("java_ready")]
MODEL = "MMF_model_live"
# long enough to open every place before the first idles out, even on a busy machine
IDLE_MS, MAX_SEQUENCES = 10_000, 3


@pytest.fixture(scope="module")
def server(trained, labels_csv, tmp_path_factory):
    """(TorchServe serving MMF_model_live, the same archive's handler in-process, the whole-video handler)."""
    workdir = tmp_path_factory.mktemp("live_torchserve")
    config = yaml.safe_load((ROOT / "model-config-live.yaml").read_text())
    config.update(sequenceMaxIdleMSec=IDLE_MS, maxNumSequence=MAX_SEQUENCES)
    config["handler"]["live"].update(window_seconds=2.0, answer_every_seconds=1.0, max_streams=8)
    (workdir / "model-config-live.yaml").write_text(yaml.safe_dump(config))
    store = workdir / "model_store"
    archived = subprocess.run([str(ROOT / "scripts" / "archive.sh"), str(trained), str(labels_csv)],
                              env={**os.environ, "BIN": str(Path(sys.executable).parent), "MODEL_STORE": str(store),
                                   "LIVE_MODEL_CONFIG": str(workdir / "model-config-live.yaml")},
                              capture_output=True, text=True)
    assert archived.returncode == 0, archived.stderr
    assert f"wrote {store / 'MMF_model.mar'}" in archived.stdout and f"wrote {store / (MODEL + '.mar')}" in \
        archived.stdout
    serve = TorchServe.private(workdir, store, ROOT / "config.properties")
    assert serving_cli(serve, "start").returncode == 0
    try:
        registered = serving_cli(serve, "register", "--model-name", MODEL)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        live = load_handler(extract(store / f"{MODEL}.mar", workdir / "live"), config, name=MODEL)
        whole = load_handler(extract(store / "MMF_model.mar", workdir / "whole"),
                             yaml.safe_load((ROOT / "model-config.yaml").read_text()))
        yield serve, live, whole
    finally:
        serving_cli(serve, "stop")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("live_videos")
    return [recorded_video(folder / f"v{seed}.mkv", seed=seed) for seed in (0, 1)]


def post(serve: TorchServe, data: bytes | None, stream_id: str | None = None, number: int | None = None,
         end: bool = False, timeout: float = 300) -> requests.Response:
    headers = {**serve.headers("inference"), **({"ts_request_sequence_id": stream_id} if stream_id else {}),
               **({"ts_request_sequence_end": "true"} if end else {})}
    files = {"data": ("chunk.mkv", data), "script": (None, SCRIPT)} if data is not None else None
    if files is not None and number is not None:
        files["chunk"] = (None, str(number))
    return requests.post(serve.url("inference") + f"/predictions/{MODEL}", files=files, headers=headers,
                         timeout=timeout)


def send_stream(serve: TorchServe, chunks, stream_id: str | None = None) -> tuple[str, list[dict]]:
    """A stream's chunks one after the other (TorchServe names it when ``stream_id`` is None)."""
    answers = []
    for chunk in chunks:
        response = post(serve, chunk.data, stream_id, chunk.number)
        assert response.status_code == 200, response.text
        stream_id = response.headers["ts_request_sequence_id"]
        answers.append(response.json())
    return stream_id, answers


def open_streams(serve: TorchServe, chunk, count: int = MAX_SEQUENCES) -> list[str]:
    """``count`` streams of one chunk each, opened at once."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return [stream_id for stream_id, _ in pool.map(lambda _: send_stream(serve, [chunk]), range(count))]


def end(serve: TorchServe, stream_id: str) -> requests.Response:
    response = post(serve, None, stream_id, end=True)
    assert response.status_code == 200 and response.json()["stream_ended"], response.text
    assert response.headers["ts_request_sequence_end"] == stream_id
    return response


def test_registration_takes_the_live_model_config(server):
    serve, _, _ = server
    described = serve.describe(MODEL)[0]
    assert described["maxNumSequence"] == MAX_SEQUENCES and described["batchSize"] == 4


def test_interleaved_streams_of_two_videos_answer_as_each_alone_and_as_the_timeline(server, videos):
    serve, (live, live_context), (whole, whole_context) = server
    chunk_lists = [chunks_of(video) for video in videos]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two clients at once: their chunks share batches
        results = list(pool.map(lambda chunks: send_stream(serve, chunks), chunk_lists))
    (first_id, first), (second_id, second) = results
    assert first_id.startswith("ts-seq-") and first_id != second_id
    for stream_id in (first_id, second_id):
        end(serve, stream_id)
    for video, chunks, served in zip(videos, chunk_lists, (first, second), strict=True):
        alone = stream(live, live_context, f"alone-{video.stem}", chunks)
        assert spans(served) == spans(alone)
        for mine, theirs in zip(served, alone, strict=True):
            assert largest_difference(mine["window"]["scores"], theirs["window"]["scores"]) < 1e-4
        (status, answer), = handle(whole, whole_context, [{"data": bytearray(video.read_bytes()), "script": SCRIPT,
                                                           "segment_seconds": "2"}])
        timeline = {(w["start"], w["end"]): w["scores"] for w in answer["timeline"]}
        matched = [a for a in served if (a["window"]["start"], a["window"]["end"]) in timeline]
        assert len(matched) == len(timeline) == 3
        for live_answer in matched:
            window = live_answer["window"]
            assert largest_difference(window["scores"], timeline[(window["start"], window["end"])]) < 1e-3
    # the two streams answer differently (a model of 4 updates tells inputs apart by little, more than rounding)
    assert all(largest_difference(a["window"]["scores"], b["window"]["scores"]) > 1e-5
               for a, b in zip(first, second, strict=True))


def test_a_bad_chunk_gets_400_and_its_stream_goes_on(server, videos):
    serve, _, _ = server
    chunks = chunks_of(videos[0])[:3]
    stream_id, answers = send_stream(serve, chunks[:1])
    bad = post(serve, chunks[1].data[:400], stream_id, 1)
    assert bad.status_code == 400 and bad.json()["code"] == 400 and "video" in bad.json()["error"]
    assert bad.headers["ts_request_sequence_id"] == stream_id
    _, rest = send_stream(serve, chunks[1:], stream_id)
    assert [a["stream_seconds"] for a in answers + rest] == [1.0, 2.0, 3.0]
    end(serve, stream_id)


def test_ending_a_stream_frees_its_place_and_more_get_503(server, videos):
    serve, _, _ = server
    chunk = chunks_of(videos[0])[0]
    open_ids = open_streams(serve, chunk)
    refused = post(serve, chunk.data)
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"] == "ServiceUnavailableException"
    end(serve, open_ids.pop())
    open_ids.append(send_stream(serve, [chunk])[0])
    for stream_id in open_ids:
        end(serve, stream_id)


def test_an_idle_stream_is_dropped_and_its_next_chunk_told(server, videos):
    serve, _, _ = server
    chunks = chunks_of(videos[0])
    stream_id, _ = send_stream(serve, chunks[:1])
    time.sleep(IDLE_MS / 1000 + 2)
    response = post(serve, chunks[1].data, stream_id, 1)
    assert response.status_code == 200 and "sequenceMaxIdleMSec" in response.json()["state_lost"]
    assert response.json()["stream_seconds"] == 1.0
    end(serve, stream_id)


def run_client(serve: TorchServe, video: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    info = folder / "clip.info.json"
    info.write_text(json.dumps({"script": SCRIPT}))
    return subprocess.run([sys.executable, str(ROOT / "request.py"), "--live", str(video), "--info", str(info),
                           "--url", serve.url("inference"), "--key-file", str(serve.key_file), *args],
                          cwd=folder, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("pace", ["real time", "as fast as possible"])
def test_request_live_sends_a_file_and_plots_it(server, videos, tmp_path, pace):
    serve, _, _ = server
    output, plot = tmp_path / "answers.jsonl", tmp_path / "live.png"
    started = time.monotonic()
    result = run_client(serve, videos[1], tmp_path, "--output", str(output), "--plot", str(plot),
                        *(["--as-fast-as-possible"] if pace != "real time" else []))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert [a["stream_seconds"] for a in answers] == [float(s) for s in range(1, 7)]
    printed = [line for line in result.stdout.splitlines() if " s  [" in line]
    assert len(printed) == len(answers)
    for line, answer in zip(printed, answers, strict=True):  # stream time, the window, its labels, what changed
        window = answer["window"]
        assert line.split()[:2] == [f"{window['end']:.2f}", "s"]
        assert f"[{window['start']:7.2f} - {window['end']:7.2f}]  {', '.join(window['labels']) or '-'}" in line
        for label in answer["started"]:
            assert f"+{label}" in line
    assert f"timeline plot: {plot}" in result.stdout
    with Image.open(plot) as image:
        assert image.format == "PNG" and len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 50
    if pace == "real time":
        assert elapsed > 5.0  # 6 s of video, each chunk sent when it would have been recorded
    # the client ended its stream: every place is free again
    for stream_id in open_streams(serve, chunks_of(videos[0])[0]):
        end(serve, stream_id)


def test_request_live_over_the_stream_limit_says_which_setting(server, videos, tmp_path):
    serve, _, _ = server
    opened = open_streams(serve, chunks_of(videos[0])[0])
    try:
        result = run_client(serve, videos[1], tmp_path, "--as-fast-as-possible")
    finally:
        for stream_id in opened:
            end(serve, stream_id)
    assert result.returncode == 1 and "HTTP 503" in result.stderr and "maxNumSequence" in result.stderr, \
        result.stderr


def test_after_a_killed_worker_the_registered_again_model_says_the_stream_starts_again(server, videos):
    """TorchServe 0.12 cannot restart a worker of a model with sequence batching
    (README, "Live streams"): registering the model again is the way back, and the
    streams' next chunks are told that their state was lost."""
    serve, _, _ = server
    chunks = chunks_of(videos[0])
    stream_id, _ = send_stream(serve, chunks[:2])
    worker = int(serve.describe(MODEL)[0]["workers"][0]["pid"])
    os.kill(worker, signal.SIGKILL)
    time.sleep(2)
    assert serve.unregister(MODEL).status_code == 200
    registered = serving_cli(serve, "register", "--model-name", MODEL)
    assert registered.returncode == 0, registered.stdout + registered.stderr
    response = post(serve, chunks[2].data, stream_id, 2)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "the worker was restarted" in answer["state_lost"] and answer["stream_seconds"] == 1.0
    end(serve, stream_id)
