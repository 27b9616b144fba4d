"""request.py, the client: its exit codes and messages for every local
mistake (no server needed), for a server it cannot reach, and against a real
TorchServe with token authorization on (answers, server errors, a wrong key,
a key rotated with TorchServe's token API, the v2 protocols, the timeline
printed and plotted); and its codec for the KServe v2 binary tensor extension."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from PIL import Image

from minimmf.serving.torchserve import TorchServe, archive_model, free_port
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("request_client", ROOT / "request.py")
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)

OK, SERVER_ERROR, INPUT_ERROR, CANNOT_CONNECT = 0, 1, 2, 3


def run_client(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python request.py ARGS`` run as a user runs it, in ``cwd``."""
    return subprocess.run([sys.executable, str(ROOT / "request.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def assert_fails(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder with request.py's default inputs: demo.mp4, demo.info.json and key_file.json."""
    (tmp_path / "demo.mp4").write_bytes(b"not decoded before the server sees it")
    (tmp_path / "demo.info.json").write_text(json.dumps({"script": "A person opens a door.",
                                                         "action_labels": ["Opening a door"]}))
    (tmp_path / "key_file.json").write_text(json.dumps({"inference": {"key": "abc"}, "API": {"key": "def"}}))
    return tmp_path


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ------------------------------------------------------------ local errors


@pytest.mark.parametrize(("file", "content", "phrase"), [
    ("demo.info.json", "{'script': 'single quotes'}", "is not valid JSON"),
    ("demo.info.json", json.dumps(["a list"]), 'needs a "script" string'),
    ("demo.info.json", json.dumps({"action_labels": ["Opening a door"]}), 'needs a "script" string'),
    ("demo.info.json", json.dumps({"script": 7}), 'needs a "script" string'),
    ("demo.info.json", json.dumps({"script": "ok", "action_labels": "Opening a door"}),
     '"action_labels" must be a list of strings'),
    ("key_file.json", "", "is not valid JSON"),
    ("key_file.json", json.dumps({"management": {"key": "abc"}}), 'has no "inference" key'),
    ("key_file.json", json.dumps({"inference": "abc"}), 'has no "inference" key'),
])
def test_malformed_info_or_key_file_is_an_input_error(inputs, file, content, phrase):
    (inputs / file).write_text(content)
    assert_fails(run_client("--url", closed_port_url(), cwd=inputs), INPUT_ERROR, f"{file} {phrase}")


@pytest.mark.parametrize(("missing", "phrase"), [
    ("demo.mp4", "video demo.mp4 not found"),
    ("demo.info.json", "info file demo.info.json not found"),
    ("key_file.json", "key file key_file.json not found"),
])
def test_missing_file_is_an_input_error(inputs, missing, phrase):
    (inputs / missing).unlink()
    assert_fails(run_client("--url", closed_port_url(), cwd=inputs), INPUT_ERROR, phrase)


def test_a_missing_key_file_says_how_to_get_one(inputs):
    (inputs / "key_file.json").unlink()
    assert_fails(run_client("--url", closed_port_url(), cwd=inputs), INPUT_ERROR,
                 "scripts/serve.sh start", "--key-file", "--no-token")


@pytest.mark.parametrize("args", [
    ["--token", "abc", "--no-token"],
    ["--protocol", "grpc"],
    ["--output", "no/such/folder/response.txt"],
    ["--url", "127.0.0.1:8080"],
])
def test_usage_errors(inputs, args):
    assert_fails(run_client(*args, cwd=inputs), INPUT_ERROR)


def test_a_plot_without_a_timeline_fails_before_uploading(inputs):
    """--plot without --segment-seconds is refused at once: nothing is sent (the port is closed,
    so an upload attempt would end in exit 3), no answer or plot is written."""
    result = run_client("--url", closed_port_url(), "--plot", "timeline.png", cwd=inputs)
    assert_fails(result, INPUT_ERROR, "--plot draws the timeline", "pass --segment-seconds")
    assert not (inputs / "response.txt").exists() and not (inputs / "timeline.png").exists()
    unwritable = run_client("--url", closed_port_url(), "--segment-seconds", "1", "--plot", "no/such/t.png",
                            cwd=inputs)
    assert_fails(unwritable, INPUT_ERROR, "cannot write the plot to no/such/t.png")


def test_without_url_the_address_comes_from_config_properties(inputs):
    """No --url: the inference_address of ./config.properties, --ts-config's or TS_CONFIG_FILE's."""
    url = closed_port_url()
    (inputs / "config.properties").write_text(f"inference_address={url}\nmanagement_address=http://127.0.0.1:1\n"
                                              "metrics_address=http://127.0.0.1:2\n")
    assert_fails(run_client(cwd=inputs), CANNOT_CONNECT, f"cannot connect to TorchServe at {url}")
    (inputs / "config.properties").rename(inputs / "other.properties")
    assert_fails(run_client("--ts-config", "other.properties", cwd=inputs), CANNOT_CONNECT, url)
    from_env = subprocess.run([sys.executable, str(ROOT / "request.py")], cwd=inputs, capture_output=True, text=True,
                              env={**os.environ, "TS_CONFIG_FILE": str(inputs / "other.properties")}, timeout=600)
    assert_fails(from_env, CANNOT_CONNECT, url)
    no_config = subprocess.run([sys.executable, str(ROOT / "request.py")], cwd=inputs, capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != "TS_CONFIG_FILE"}, timeout=600)
    assert_fails(no_config, INPUT_ERROR, "no --url and no config.properties", "pass --url")


# --------------------------------------------------------- cannot connect


@pytest.mark.parametrize("protocol", client.PROTOCOLS)
def test_a_closed_port_is_cannot_connect(inputs, protocol):
    result = run_client("--url", closed_port_url(), "--protocol", protocol, cwd=inputs)
    assert_fails(result, CANNOT_CONNECT, "cannot connect to TorchServe", "scripts/serve.sh status")


def test_no_token_needs_no_key_file(inputs):
    (inputs / "key_file.json").unlink()
    assert_fails(run_client("--no-token", "--url", closed_port_url(), cwd=inputs), CANNOT_CONNECT)


# ------------------------------------------------------- a real TorchServe


@pytest.fixture(scope="module")
def server(trained, labels_csv, tmp_path_factory, java_ready):
    """TorchServe with the shipped config.properties (token authorization on) serving the tiny model."""
    workdir = tmp_path_factory.mktemp("request_client")
    store = workdir / "model_store"
    archive_model(trained, store, labels=labels_csv, model_config=ROOT / "model-config.yaml",
                  handler=ROOT / "handler.py")
    serve = TorchServe.private(workdir, store, ROOT / "config.properties")
    serve.start()
    try:
        registered = serve.register("MMF_model.mar")
        assert registered.status_code == 200, registered.text
        yield serve
    finally:
        serve.stop()


@pytest.fixture
def clip(test_split, tmp_path) -> tuple[Path, Path]:
    """A held-out synthetic video and its info.json."""
    video, script = test_split[0]
    info = tmp_path / "clip.info.json"
    info.write_text(json.dumps({"script": script, "action_labels": ["Holding a book"]}))
    return video, info


@pytest.mark.slow
def test_the_served_address_comes_from_the_servers_config(server, clip, tmp_path):
    """Without --url, request.py reaches the server on the port its config.properties names."""
    output = tmp_path / "response.txt"
    result = run_client("--video", str(clip[0]), "--info", str(clip[1]), "--ts-config", str(server.ts_config),
                        "--key-file", str(server.key_file), "--output", str(output), cwd=tmp_path)
    assert result.returncode == OK, result.stderr
    assert json.loads(output.read_text())["expected_labels"] == ["Holding a book"]


def request_to(serve: TorchServe, video: Path, info: Path, output: Path, *args: str) -> subprocess.CompletedProcess:
    return run_client("--video", str(video), "--info", str(info), "--url", serve.url("inference"),
                      "--output", str(output), *args, cwd=output.parent)


@pytest.mark.slow
def test_keys_last_token_expiration_min(server):
    """The shipped token_expiration_min reaches TorchServe: keys outlive its 60-minute default."""
    minutes = int(re.search(r"^token_expiration_min=(\d+)$", (ROOT / "config.properties").read_text(),
                            flags=re.MULTILINE).group(1))
    expiry = json.loads(server.key_file.read_text())["inference"]["expiration time"]  # "2026-11-26T15:27:00.4589Z"
    lifetime = datetime.fromisoformat(expiry[:19] + "+00:00") - datetime.now(UTC)
    assert minutes > 60 and timedelta(minutes=60) < lifetime <= timedelta(minutes=minutes)


@pytest.mark.slow
def test_every_protocol_gives_the_same_answer(server, clip, tmp_path):
    answers = {}
    for protocol in ("multipart", "v2-json", "v2-binary"):
        output = tmp_path / f"{protocol}.json"
        result = request_to(server, *clip, output, "--protocol", protocol, "--key-file", str(server.key_file))
        assert result.returncode == OK, result.stderr
        answers[protocol] = json.loads(output.read_text())
        assert f"labels: {answers[protocol]['labels']}" in result.stdout
    for protocol in ("v2-json", "v2-binary"):
        assert answers[protocol]["labels"] == answers["multipart"]["labels"]
        assert answers[protocol]["expected_labels"] == answers["multipart"]["expected_labels"] == ["Holding a book"]
        assert answers[protocol]["scores"] == pytest.approx(answers["multipart"]["scores"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["multipart", "v2-binary"])
def test_the_timeline_is_printed_and_plotted(server, clip, tmp_path, protocol):
    """The README's timeline request: --segment-seconds prints each window, --plot draws them."""
    output, plot = tmp_path / "response.txt", tmp_path / "timeline.png"
    result = request_to(server, *clip, output, "--protocol", protocol, "--key-file", str(server.key_file),
                        "--segment-seconds", "0.5", "--plot", str(plot))
    assert result.returncode == OK, result.stderr
    answer = json.loads(output.read_text())
    windows = answer["timeline"]
    assert answer["segment_seconds"] == 0.5 and len(windows) >= 2
    printed = result.stdout.splitlines()
    first = printed.index("timeline (0.5 s windows):") + 1
    assert len(printed[first:first + len(windows)]) == len(windows)
    for line, window in zip(printed[first:], windows, strict=False):
        assert line.split() == [f"{window['start']:.2f}", "-", f"{window['end']:.2f}", "s",
                                *(", ".join(window["labels"]) or "-").split()]
    assert f"timeline plot: {plot}" in printed
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width >= 600
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 50  # drawn, not blank


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["multipart", "v2-json", "v2-binary"])
def test_a_corrupt_video_is_a_server_error_answer(server, clip, tmp_path, protocol):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(clip[0].read_bytes()[:300])
    result = request_to(server, corrupt, clip[1], tmp_path / "response.txt", "--protocol", protocol,
                        "--key-file", str(server.key_file))
    assert_fails(result, SERVER_ERROR, "HTTP 400", "video")
    assert "wrong or has expired" not in result.stderr


@pytest.mark.slow
def test_a_wrong_key_says_how_to_get_a_fresh_one(server, clip, tmp_path):
    result = request_to(server, *clip, tmp_path / "response.txt", "--token", "wrong")
    assert_fails(result, SERVER_ERROR, "HTTP 400", "Token Authorization failed", "--token's key",
                 "wrong or has expired", "Keys and their expiry")
    no_key = request_to(server, *clip, tmp_path / "response.txt", "--no-token")
    assert_fails(no_key, SERVER_ERROR, "--no-token sent no key")


@pytest.mark.slow
def test_a_rotated_key_stops_working(server, clip, tmp_path):
    """The README's rotation: the token API (with the API key) replaces the inference key in key_file.json."""
    old_keys = tmp_path / "old_key_file.json"
    old_keys.write_text(server.key_file.read_text())
    rotated = requests.get(server.url("management") + "/token", params={"type": "inference"}, timeout=30,
                           headers={"Authorization": f"Bearer {server.key('API')}"})
    assert rotated.status_code == 200, rotated.text
    assert server.key("inference") != json.loads(old_keys.read_text())["inference"]["key"]
    stale = request_to(server, *clip, tmp_path / "stale.json", "--key-file", str(old_keys))
    assert_fails(stale, SERVER_ERROR, f"the 'inference' key of {old_keys}", "wrong or has expired")
    fresh = request_to(server, *clip, tmp_path / "fresh.json", "--key-file", str(server.key_file))
    assert fresh.returncode == OK, fresh.stderr
