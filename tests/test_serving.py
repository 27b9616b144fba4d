"""End to end against a real TorchServe, started and fed the way `make demo`
does it: scripts/archive.sh (torch-model-archiver), the serving CLI behind
scripts/serve.sh (start, register with model-config.yaml's batching, stop),
the management API with the token, concurrent requests batched by 4
compared with the in-process handler, bad inputs, no token, request.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from devtools.worker import extract, handle, load_handler
from minimmf.serving.torchserve import TorchServe
from tests.conftest import ROOT
from tests.media import encode_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("java_ready")]
MAX_VIDEO_BYTES = 8_000_000


def serving_cli(serve: TorchServe, *args: str) -> subprocess.CompletedProcess:
    """``python -m minimmf.serving.torchserve ...`` in the server's directory (what scripts/serve.sh runs)."""
    return subprocess.run([sys.executable, "-m", "minimmf.serving.torchserve", *args, "--model-store",
                           str(serve.model_store), "--ts-config", str(serve.ts_config)],
                          cwd=serve.workdir, env=serve.env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def server(trained, labels_csv, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("torchserve")
    model_config = yaml.safe_load((ROOT / "model-config.yaml").read_text())
    model_config["handler"]["max_video_bytes"] = MAX_VIDEO_BYTES
    (workdir / "model-config.yaml").write_text(yaml.safe_dump(model_config))
    store = workdir / "model_store"
    archived = subprocess.run([str(ROOT / "scripts" / "archive.sh"), str(trained), str(labels_csv)],
                              env={**os.environ, "BIN": str(Path(sys.executable).parent), "MODEL_STORE": str(store),
                                   "MODEL_CONFIG": str(workdir / "model-config.yaml")},
                              capture_output=True, text=True)
    assert archived.returncode == 0, archived.stderr
    mar = store / "MMF_model.mar"
    assert f"wrote {mar}" in archived.stdout
    serve = TorchServe.private(workdir, store, ROOT / "config.properties")
    started = serving_cli(serve, "start")
    assert started.returncode == 0, started.stderr
    try:
        registered = serving_cli(serve, "register")
        assert registered.returncode == 0, registered.stdout + registered.stderr
        handler, context = load_handler(extract(mar, workdir / "in_process"), model_config)
        yield serve, handler, context
    finally:
        stopped = serving_cli(serve, "stop")
        assert stopped.returncode == 0 and "TorchServe stopped" in stopped.stdout, stopped.stderr


@pytest.fixture(scope="module")
def videos(test_split):
    return test_split


def predict(serve: TorchServe, files: dict, token: bool = True) -> requests.Response:
    return serve.predict(files, token=token)


def test_registration_takes_model_config_batching(server):
    serve, _, _ = server
    shipped = yaml.safe_load((ROOT / "model-config.yaml").read_text())
    described = serve.describe()[0]
    assert described["batchSize"] == shipped["batchSize"] == 4
    assert described["maxBatchDelay"] == shipped["maxBatchDelay"]
    assert len(described["workers"]) == shipped["minWorkers"]


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
        "huge": ({"data": ("h.mp4", b"\0" * (MAX_VIDEO_BYTES + 1)), "script": (None, script)}, 400, "over the limit"),
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
    for response in (predict(serve, good_files(*videos[0]), token=False),
                     requests.get(serve.url("management") + "/models", timeout=10),
                     requests.get(serve.url("management") + "/models",
                                  headers=serve.headers("inference"), timeout=10)):
        assert response.status_code == 400 and response.json()["type"] == "InvalidKeyException"


def test_describe_and_request_client(server, videos, tmp_path):
    serve, handler, _ = server
    described = requests.get(serve.url("management") + "/models/MMF_model", params={"customized": "true"},
                             headers=serve.headers("management"), timeout=60)
    assert described.status_code == 200
    metadata = described.json()[0]["customizedMetadata"]
    assert metadata["labels"] == handler.predictor.classes
    path, script = videos[1]
    info = tmp_path / "clip.info.json"
    info.write_text(json.dumps({"script": script, "action_labels": [handler.predictor.classes[0]]}))
    result = subprocess.run([sys.executable, str(ROOT / "request.py"), "--video", str(path), "--info", str(info),
                             "--url", serve.url("inference"), "--key-file", str(serve.key_file),
                             "--output", str(tmp_path / "response.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "labels:" in result.stdout
    assert "expected_labels" in json.loads((tmp_path / "response.txt").read_text())
    refused = subprocess.run([sys.executable, str(ROOT / "request.py"), "--video", str(path), "--info", str(info),
                              "--url", serve.url("inference"), "--token", "wrong",
                              "--output", str(tmp_path / "r2.txt")], capture_output=True, text=True)
    assert refused.returncode == 1 and "Token Authorization failed" in refused.stderr


def prometheus_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus' text format: ``{metric: [(labels, value), ...]}``."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = re.fullmatch(r'(\w+)(?:\{(.*?),?\})? (\S+)', line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return samples


def test_the_metrics_address_serves_the_handlers_metrics_to_prometheus(server, videos):
    """After a request, GET <metrics_address>/metrics (no key needed) holds the handler's DecodeTime,
    PreprocessTime and ModelTime for MMF_model, and TorchServe's own request counters."""
    serve, _, _ = server
    assert predict(serve, good_files(*videos[0])).status_code == 200
    response = requests.get(serve.url("metrics") + "/metrics", timeout=60)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = prometheus_samples(response.text)
    for name in ("DecodeTime", "PreprocessTime", "ModelTime"):
        assert "# TYPE " + name + " gauge" in response.text, name
        [(labels, value)] = [sample for sample in samples[name] if sample[0].get("ModelName") == "MMF_model"]
        assert labels["Level"] == "Model" and value > 0, name
    decode, = (v for labels, v in samples["DecodeTime"] if labels["ModelName"] == "MMF_model")
    preprocess, = (v for labels, v in samples["PreprocessTime"] if labels["ModelName"] == "MMF_model")
    assert decode <= preprocess  # decoding is part of preprocessing
    requests_total, = (v for labels, v in samples["ts_inference_requests_total"]
                       if labels["model_name"] == "MMF_model")
    assert requests_total >= 1


def test_kserve_v2_inference_endpoint(server, videos):
    import base64

    serve, _, _ = server
    path, script = videos[0]
    body = {"id": "v2-test", "inputs": [
        {"name": "data", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(path.read_bytes()).decode()]},
        {"name": "script", "shape": [1], "datatype": "BYTES", "data": [script]}]}
    response = requests.post(serve.url("inference") + "/v2/models/MMF_model/infer", json=body, timeout=300,
                             headers=serve.headers("inference"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "v2-test" and answer["outputs"][0]["name"] == "predictions"
    direct = predict(serve, good_files(path, script)).json()
    assert json.loads(answer["outputs"][0]["data"][0])["labels"] == direct["labels"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, videos):
    from devtools.hostile_inputs import hostile_requests

    path, script = videos[0]
    return hostile_requests(tmp_path_factory.mktemp("hostile"), path.read_bytes(), script, MAX_VIDEO_BYTES)


def worker_pid(serve: TorchServe) -> int:
    return int(serve.describe()[0]["workers"][0]["pid"])


def test_hostile_inputs_beside_good_ones_in_batches_of_four(server, videos, hostile):
    """Each hostile request goes out with three good ones (batch_size 4): it gets its
    status with a JSON error naming the problem, they get 200, the worker lives on."""
    serve, _, _ = server
    pid = worker_pid(serve)
    good = good_files(*videos[1])
    for name, request in hostile.items():
        with ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(lambda f: predict(serve, f), [request.files, good, good, good]))
        hostile_response, *good_responses = responses
        assert hostile_response.status_code == request.status, (name, hostile_response.text[:300])
        if request.status == 400:
            assert request.error_names in hostile_response.json()["error"], name
        assert [r.status_code for r in good_responses] == [200, 200, 200], name
    assert worker_pid(serve) == pid


def test_describe_and_explanations_never_fail_their_batch_mates(server, videos):
    serve, handler, _ = server
    pid = worker_pid(serve)
    good = good_files(*videos[1])

    def describe() -> requests.Response:
        return requests.get(serve.url("management") + "/models/MMF_model", params={"customized": "true"},
                            headers=serve.headers("management"), timeout=300)

    def explain() -> requests.Response:
        return requests.post(serve.url("inference") + "/explanations/MMF_model", files=good, timeout=300,
                             headers=serve.headers("inference"))

    for special in (describe, explain):
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(special)] + [pool.submit(predict, serve, good) for _ in range(3)]
            special_response, *good_responses = [future.result() for future in futures]
        assert [r.status_code for r in good_responses] == [200, 200, 200], special.__name__
        if special is describe:
            assert special_response.status_code == 200
            assert special_response.json()[0]["customizedMetadata"]["labels"] == handler.predictor.classes
        else:
            assert special_response.status_code == 501 and "no explanations" in special_response.text
    assert worker_pid(serve) == pid


# ----------------------------------------------- KServe v2 with a real client


def triton_infer(serve: TorchServe, video: bytes, script: str, binary: bool) -> dict:
    """The answer of NVIDIA's tritonclient.http (a v2 client no one here wrote),
    BYTES inputs as JSON (the video base64-encoded) or in binary."""
    import base64

    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=serve.url("inference").removeprefix("http://"), network_timeout=300)
    try:
        inputs = []
        for name, value in (("data", video if binary else base64.b64encode(video)), ("script", script.encode())):
            tensor = triton.InferInput(name, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([value], dtype=np.object_), binary_data=binary)
            inputs.append(tensor)
        result = client.infer("MMF_model", inputs, outputs=[triton.InferRequestedOutput("predictions",
                                                                                        binary_data=binary)],
                              headers=serve.headers("inference"), request_id="triton-1")
        assert result.get_response()["id"] == "triton-1"
        return json.loads(result.as_numpy("predictions")[0])
    finally:
        client.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_gets_the_multipart_answer(server, videos, binary):
    serve, _, _ = server
    path, script = videos[2]
    multipart = predict(serve, good_files(path, script)).json()
    answer = triton_infer(serve, path.read_bytes(), script, binary)
    assert answer["labels"] == multipart["labels"]
    assert answer["scores"] == pytest.approx(multipart["scores"], abs=1e-5)


def test_malformed_v2_binary_bodies_get_400_over_http(server, videos):
    from minimmf.serving import kserve_v2

    serve, _, _ = server
    path, script = videos[0]
    body, header_length = kserve_v2.encode_request({"data": [path.read_bytes()], "script": [script.encode()]},
                                                   ["predictions"])
    cases = {"truncated": (body[:-100], header_length), "header past the body": (body, len(body) + 10),
             "trailing bytes": (body + b"\0" * 8, header_length)}
    for name, (data, length) in cases.items():
        response = requests.post(serve.url("inference") + "/v2/models/MMF_model/infer", data=data, timeout=300,
                                 headers={**serve.headers("inference"), kserve_v2.HEADER_LENGTH: str(length)})
        assert response.status_code == 400, name
        assert "KServe v2 binary request" in response.json()["error"], name


def test_which_v2_routes_torchserve_serves(server):
    """What README's "KServe v2 clients" says: only infer; /ping and the management API for readiness."""
    serve, _, _ = server
    inference = serve.url("inference")
    for route in ("/v2/health/ready", "/v2/health/live", "/v2/models/MMF_model", "/v2/models/MMF_model/ready"):
        assert requests.get(inference + route, headers=serve.headers("inference"), timeout=60).status_code == 404
    assert requests.get(inference + "/ping", headers=serve.headers("inference"), timeout=60).json()["status"] == \
        "Healthy"
    assert serve.describe()[0]["workers"][0]["status"] == "READY"


# ----------------------------------------- own only what you start, beside another


@pytest.fixture(scope="module")
def bystander(tmp_path_factory):
    """Another user's TorchServe, started the plain way (``torchserve --start``, its own
    config.properties on other free ports, its pid file in its own temporary folder;
    no model). Yields its folder, inference address and the ping that checks it answers."""
    from minimmf.serving.torchserve import BIN, free_port, torchserve_environment

    folder = tmp_path_factory.mktemp("bystander")
    (folder / "store").mkdir()
    (folder / "tmp").mkdir()
    inference = f"http://127.0.0.1:{free_port()}"
    (folder / "config.properties").write_text(
        f"inference_address={inference}\nmanagement_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\ngrpc_inference_port={free_port()}\n"
        f"grpc_management_port={free_port()}\ndisable_token_authorization=true\n")
    env = torchserve_environment({"TMPDIR": str(folder / "tmp")})
    env.pop("TS_CONFIG_FILE", None)

    def torchserve(*args: str) -> None:
        with open(folder / "torchserve.out", "a") as output:  # Java keeps the launcher's stdout: a file
            subprocess.run([str(BIN / "torchserve"), *args], cwd=folder, env=env, stdout=output,
                           stderr=subprocess.STDOUT, check=True, timeout=120)

    def answers() -> bool:
        try:
            return requests.get(inference + "/ping", timeout=5).json()["status"] == "Healthy"
        except (requests.RequestException, ValueError, KeyError):
            return False

    torchserve("--start", "--ncs", "--model-store", "store", "--ts-config", "config.properties")
    try:
        for _ in range(120):
            if answers():
                break
            time.sleep(1)
        assert answers(), (folder / "torchserve.out").read_text()
        yield folder, inference, answers
    finally:
        torchserve("--stop")


def test_our_start_requests_and_stop_leave_another_torchserve_running(server, bystander, videos, tmp_path):
    """A second server of ours (the CLI behind scripts/serve.sh) beside the bystander: its pid file is
    in its own folder's .torchserve/, its stop ends it and nothing else."""
    folder, _, answers = bystander
    bystander_pid = (folder / "tmp" / ".model_server.pid").read_text()
    ours = TorchServe.private(tmp_path, server[0].model_store, ROOT / "config.properties")
    started = serving_cli(ours, "start")
    assert started.returncode == 0, started.stderr
    assert ours.pid_file == tmp_path / ".torchserve" / ".model_server.pid" and ours.running_pid() is not None
    assert f"pid {ours.running_pid()}" in started.stdout and ours.url("inference") in started.stdout
    registered = serving_cli(ours, "register")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert predict(ours, good_files(*videos[0])).status_code == 200
    assert answers()
    pid = ours.running_pid()
    stopped = serving_cli(ours, "stop")
    assert stopped.returncode == 0 and f"TorchServe stopped (pid {pid})" in stopped.stdout, stopped.stderr
    assert ours.running_pid() is None and not ours.pid_file.exists() and not ours.key_file.exists()
    assert answers() and (folder / "tmp" / ".model_server.pid").read_text() == bystander_pid
    again = serving_cli(ours, "stop")
    assert again.returncode == 0 and "is not running" in again.stdout
    assert answers()


def test_a_taken_port_is_refused_before_anything_starts(bystander, tmp_path):
    """config.properties naming the bystander's port: start refuses, naming the port and the line, and
    neither launches TorchServe nor touches the bystander."""
    _, inference, answers = bystander
    port = inference.rsplit(":", 1)[1]
    config = tmp_path / "taken.properties"
    text = (ROOT / "config.properties").read_text()
    config.write_text(re.sub(r"^inference_address=.*$", f"inference_address={inference}", text, flags=re.M))
    ours = TorchServe(tmp_path, tmp_path, config)
    refused = serving_cli(ours, "start")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"port {port} on 127.0.0.1 (inference_address={inference})" in refused.stderr
    assert str(config) in refused.stderr and "edit that line" in refused.stderr
    assert not (tmp_path / ".torchserve").exists() and not (tmp_path / "logs").exists()
    assert answers()


def test_a_second_start_from_the_same_folder_is_refused(server):
    serve, _, _ = server
    pid = serve.running_pid()
    again = serving_cli(serve, "start")
    assert again.returncode == 2 and f"already running (pid {pid}" in again.stderr, again.stderr
    assert serve.running_pid() == pid and serve.is_healthy()
    status = serving_cli(serve, "status")
    assert status.returncode == 0 and f"TorchServe is running (pid {pid})" in status.stdout
    assert "MMF_model" in status.stdout
