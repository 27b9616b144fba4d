"""End to end against a real TorchServe: a .mar built by torch-model-archiver,
registered through the management API with the token, concurrent requests
batched by 4 compared with the in-process handler, bad inputs, no token."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, archive_model, synthetic_root
from tests.handler_harness import extract, handle, load_handler
from tests.media import encode_video

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 (see README)")]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TorchServe:
    """A TorchServe of its own (ports, pid file, key file, logs) in ``workdir``."""

    def __init__(self, workdir: Path, store: Path):
        self.workdir, self.store = workdir, store
        self.ports = {name: free_port() for name in ("inference", "management", "metrics")}
        properties = (ROOT / "config.properties").read_text()
        for name, default in (("inference", 8080), ("management", 8081), ("metrics", 8082)):
            properties = properties.replace(f"127.0.0.1:{default}", f"127.0.0.1:{self.ports[name]}")
        properties = properties.replace("metrics_config=metrics.yaml", f"metrics_config={ROOT / 'metrics.yaml'}")
        (workdir / "config.properties").write_text(properties)
        (workdir / "tmp").mkdir()
        self.env = {**os.environ, "TMPDIR": str(workdir / "tmp"), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.ports[api]}"

    def key(self, api: str) -> str:
        return json.loads((self.workdir / "key_file.json").read_text())[api]["key"]

    def start(self) -> None:
        # TorchServe's Java process inherits the launcher's stdout: give it a file, not a pipe
        with open(self.workdir / "torchserve.out", "w") as output:
            subprocess.run([str(BIN / "torchserve"), "--start", "--ncs", "--model-store", str(self.store),
                            "--ts-config", "config.properties"], cwd=self.workdir, env=self.env, check=True,
                           stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                # TorchServe 0.12 wants the inference token even on /ping
                if (self.workdir / "key_file.json").is_file() and requests.get(
                        self.url("inference") + "/ping", timeout=2,
                        headers={"Authorization": f"Bearer {self.key('inference')}"}).ok:
                    return
            except (requests.ConnectionError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(1)
        raise RuntimeError(f"TorchServe did not start; see {self.workdir / 'logs'}")

    def stop(self) -> None:
        pid_file = self.workdir / "tmp" / ".model_server.pid"
        pid = int(pid_file.read_text()) if pid_file.is_file() else None
        subprocess.run([str(BIN / "torchserve"), "--stop"], cwd=self.workdir, env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while pid is not None and time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


@pytest.fixture(scope="module")
def server(trained, labels_csv, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("torchserve")
    model_config = workdir / "model-config.yaml"
    model_config.write_text((ROOT / "model-config.yaml").read_text().replace("max_video_bytes: 200000000",
                                                                           "max_video_bytes: 3000000"))
    mar = archive_model(trained, labels_csv, workdir / "model_store", model_config)
    serve = TorchServe(workdir, workdir / "model_store")
    serve.start()
    try:
        response = requests.post(
            serve.url("management") + "/models",
            params={"model_name": "MMF_model", "url": "MMF_model.mar", "batch_size": 4, "max_batch_delay": 500,
                    "initial_workers": 1, "synchronous": "true"},
            headers={"Authorization": f"Bearer {serve.key('management')}"}, timeout=300)
        assert response.status_code == 200, response.text
        handler, context = load_handler(extract(mar, workdir / "in_process"),
                                        {"handler": {"max_video_bytes": 3000000}})
        yield serve, handler, context
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def videos(synthetic_data_dir):
    import pandas as pd

    root = synthetic_root(synthetic_data_dir)
    df = pd.read_csv(root / "Charades" / "Charades_v1_test.csv", dtype=str, keep_default_na=False)
    return [(root / "Charades_v1_480" / f"{row.id}.mp4", row.script) for row in df.itertuples()]


def predict(serve: TorchServe, files: dict, token: str | None = "inference") -> requests.Response:
    headers = {"Authorization": f"Bearer {serve.key(token)}"} if token else {}
    return requests.post(serve.url("inference") + "/predictions/MMF_model", files=files, headers=headers,
                         timeout=300)


def good_files(path: Path, script: str) -> dict:
    return {"data": (path.name, path.read_bytes()), "script": (None, script)}


def test_concurrent_requests_match_the_in_process_handler(server, videos):
    serve, handler, context = server
    jobs = [videos[i % len(videos)] for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda job: predict(serve, good_files(*job)), jobs))
    assert [r.status_code for r in responses] == [200] * 8
    expected = handle(handler, context, [{"data": bytearray(p.read_bytes()), "script": s.encode()} for p, s in jobs])
    for response, (_, answer) in zip(responses, expected, strict=True):
        served = response.json()
        assert served["labels"] == answer["labels"]
        assert served["scores"] == pytest.approx(answer["scores"], abs=1e-4)


def test_bad_inputs_get_documented_answers_and_the_worker_survives(server, videos, tmp_path):
    serve, _, _ = server
    path, script = videos[0]
    silent = encode_video(tmp_path / "silent.mp4", frames=20, audio_codec=None)
    one_frame = encode_video(tmp_path / "one.mp4", frames=1)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a video\n" * 100)
    cases = {
        "corrupt": ({"data": ("c.mp4", path.read_bytes()[:300]), "script": (None, script)}, 400, "video"),
        "empty": ({"data": ("e.mp4", b""), "script": (None, script)}, 400, "empty"),
        "missing_script": ({"data": (path.name, path.read_bytes())}, 400, "no script"),
        "text_as_video": ({"data": ("notes.txt", text_file.read_bytes()), "script": (None, script)}, 400, "video"),
        "huge": ({"data": ("h.mp4", b"\0" * 3_000_001), "script": (None, script)}, 400, "over the limit"),
        "no_audio": (good_files(silent, script), 200, None),
        "one_frame": (good_files(one_frame, script), 200, None),
    }
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        responses = dict(zip(cases, pool.map(lambda c: predict(serve, c[0]), cases.values()), strict=True))
    for name, (_, status, message) in cases.items():
        response = responses[name]
        assert response.status_code == status, (name, response.text)
        if message:
            assert message in response.json()["error"], name
        else:
            assert "labels" in response.json()
    assert predict(serve, good_files(path, script)).status_code == 200


def test_requests_without_the_token_are_refused(server, videos):
    serve, _, _ = server
    # TorchServe 0.12 answers a missing or wrong token with 400 InvalidKeyException
    for response in (predict(serve, good_files(*videos[0]), token=None),
                     requests.get(serve.url("management") + "/models", timeout=10),
                     requests.get(serve.url("management") + "/models",
                                  headers={"Authorization": f"Bearer {serve.key('inference')}"}, timeout=10)):
        assert response.status_code == 400 and response.json()["type"] == "InvalidKeyException"


def test_describe_and_request_client(server, videos, tmp_path):
    serve, handler, _ = server
    described = requests.get(serve.url("management") + "/models/MMF_model", params={"customized": "true"},
                             headers={"Authorization": f"Bearer {serve.key('management')}"}, timeout=60)
    assert described.status_code == 200
    metadata = described.json()[0]["customizedMetadata"]
    assert metadata["labels"] == handler.classes
    path, script = videos[1]
    info = tmp_path / "clip.info.json"
    info.write_text(json.dumps({"script": script, "action_labels": [handler.classes[0]]}))
    result = subprocess.run([sys.executable, str(ROOT / "request.py"), "--video", str(path), "--info", str(info),
                             "--url", serve.url("inference"), "--key-file", str(serve.workdir / "key_file.json"),
                             "--output", str(tmp_path / "response.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "labels:" in result.stdout
    assert "expected_labels" in json.loads((tmp_path / "response.txt").read_text())
    refused = subprocess.run([sys.executable, str(ROOT / "request.py"), "--video", str(path), "--info", str(info),
                              "--url", serve.url("inference"), "--token", "wrong",
                              "--output", str(tmp_path / "r2.txt")], capture_output=True, text=True)
    assert refused.returncode == 1 and "Token Authorization failed" in refused.stderr
    # the handler's own metrics reach TorchServe's metrics log
    metrics_log = (serve.workdir / "logs" / "model_metrics.log").read_text()
    assert all(name in metrics_log for name in ("DecodeTime", "PreprocessTime", "ModelTime"))


def test_kserve_v2_inference_endpoint(server, videos):
    import base64

    serve, _, _ = server
    path, script = videos[0]
    body = {"id": "v2-test", "inputs": [
        {"name": "data", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(path.read_bytes()).decode()]},
        {"name": "script", "shape": [1], "datatype": "BYTES", "data": [script]}]}
    response = requests.post(serve.url("inference") + "/v2/models/MMF_model/infer", json=body, timeout=300,
                             headers={"Authorization": f"Bearer {serve.key('inference')}"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "v2-test" and answer["outputs"][0]["name"] == "predictions"
    direct = predict(serve, good_files(path, script)).json()
    assert json.loads(answer["outputs"][0]["data"][0])["labels"] == direct["labels"]
