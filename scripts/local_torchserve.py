"""A private TorchServe for tests and benchmarks: its own free loopback ports,
pid file, key file and logs in a work directory, this project's
config.properties (token authorization on, model API on) and metrics.yaml;
archives built with torch-model-archiver as scripts/archive.sh does; and the
archived handler run in-process, the way TorchServe's Python worker runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import requests
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.torch_handler import base_handler

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def archive_model(save_dir: Path, labels: Path, store: Path, model_config: Path, name: str = "MMF_model",
                  weights: Path | None = None, folder: bool = False) -> Path:
    """Build ``name``.mar (or, with ``folder``, an unzipped model folder) in ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    extra = [str(labels), str(save_dir / "config.yaml")]
    if (save_dir / "vocab.txt").is_file():
        extra.append(str(save_dir / "vocab.txt"))
    subprocess.run([str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1.0",
                    "--serialized-file", str(weights or save_dir / "mmf_transformer_final.pth"),
                    "--handler", str(ROOT / "handler.py"), "--extra-files", ",".join(extra),
                    "--config-file", str(model_config), "--export-path", str(store), "--force",
                    *(["--archive-format", "no-archive"] if folder else [])],
                   check=True, capture_output=True)
    return store / (name if folder else f"{name}.mar")


class LocalTorchServe:
    """``start()``, ``register()``, ``predict()``, ``stop()`` on a TorchServe of its own."""

    def __init__(self, workdir: Path, store: Path):
        self.workdir, self.store = workdir, store
        self.ports = {name: free_port() for name in DEFAULT_PORTS}
        properties = (ROOT / "config.properties").read_text()
        for name, default in DEFAULT_PORTS.items():
            properties = properties.replace(f"127.0.0.1:{default}", f"127.0.0.1:{self.ports[name]}")
        properties = properties.replace("metrics_config=metrics.yaml", f"metrics_config={ROOT / 'metrics.yaml'}")
        (workdir / "config.properties").write_text(properties)
        (workdir / "tmp").mkdir(exist_ok=True)
        # TorchServe keeps its pid file in the temp dir: a private one allows several servers
        self.env = {**os.environ, "TMPDIR": str(workdir / "tmp"), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.ports[api]}"

    def key(self, api: str) -> str:
        return json.loads((self.workdir / "key_file.json").read_text())[api]["key"]

    def headers(self, api: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(api)}"}

    def start(self, timeout: float = 120) -> None:
        # the Java process inherits the launcher's stdout: give it a file, not a pipe
        with open(self.workdir / "torchserve.out", "w") as output:
            subprocess.run([str(BIN / "torchserve"), "--start", "--ncs", "--model-store", str(self.store),
                            "--ts-config", "config.properties"], cwd=self.workdir, env=self.env, check=True,
                           stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                # TorchServe 0.12 wants the inference token even on /ping
                if (self.workdir / "key_file.json").is_file() and requests.get(
                        self.url("inference") + "/ping", timeout=2, headers=self.headers("inference")).ok:
                    return
            except (requests.ConnectionError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(1)
        raise RuntimeError(f"TorchServe did not start; see {self.workdir / 'logs'}")

    def register(self, url: str, name: str = "MMF_model", batch_size: int = 4, max_batch_delay: int = 100,
                 workers: int = 1) -> requests.Response:
        return requests.post(self.url("management") + "/models", headers=self.headers("management"), timeout=600,
                             params={"model_name": name, "url": url, "batch_size": batch_size,
                                     "max_batch_delay": max_batch_delay, "initial_workers": workers,
                                     "synchronous": "true"})

    def unregister(self, name: str = "MMF_model") -> requests.Response:
        return requests.delete(self.url("management") + f"/models/{name}", headers=self.headers("management"),
                               timeout=120)

    def describe(self, name: str = "MMF_model") -> list[dict[str, Any]]:
        return requests.get(self.url("management") + f"/models/{name}", headers=self.headers("management"),
                            timeout=60).json()

    def predict(self, files: dict, name: str = "MMF_model", token: bool = True) -> requests.Response:
        return requests.post(self.url("inference") + f"/predictions/{name}", files=files, timeout=600,
                             headers=self.headers("inference") if token else {})

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


# ------------------------------------------------------- the handler in-process

METRICS_YAML = Path(base_handler.__file__).resolve().parent.parent / "configs" / "metrics.yaml"


def extract(mar: Path, into: Path) -> Path:
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(into)
    return into


def load_handler(model_dir: Path, model_yaml_config: dict | None = None) -> tuple[Any, Context]:
    """Import handler.py from the extracted archive and initialize it."""
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    spec = importlib.util.spec_from_file_location("mar_handler", model_dir / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as TorchServe's import would (dataclasses need it)
    spec.loader.exec_module(module)
    context = Context("MMF_model", str(model_dir), manifest, 4, None, "0.12.0",
                      metrics=MetricsCacheYamlImpl(str(METRICS_YAML)), model_yaml_config=model_yaml_config or {})
    handler = module.MMFHandler()
    handler.initialize(context)
    return handler, context


def handle(handler: Any, context: Context, requests: list[dict[str, Any]],
           headers: list[dict[str, str]] | None = None) -> list[tuple[int, Any]]:
    """One batch through ``handler.handle``: (HTTP status, body) per request."""
    context.request_processor = [RequestProcessor(h) for h in (headers or [{} for _ in requests])]
    context.metrics.set_request_ids({i: f"req{i}" for i in range(len(requests))})
    outputs = handler.handle(requests, context)
    statuses = [context.get_response_status(i)[0] or 200 for i in range(len(requests))]
    return list(zip(statuses, outputs, strict=True))
