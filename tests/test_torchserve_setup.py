"""What ``minimmf.serving.torchserve`` decides before TorchServe runs (no Java
needed): the ports a config.properties opens, a taken one, the folder that
holds the pid file, and a pid file that names a process other than a
TorchServe (stale, or a pid reused since), which stop never signals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from minimmf.serving.torchserve import (
    Listener,
    ServingSetupError,
    TorchServe,
    is_taken,
    listeners,
    read_properties,
    temporary_folder,
    with_settings,
)
from tests.conftest import ROOT


def test_the_shipped_config_opens_five_ports_each_from_its_line():
    config = ROOT / "config.properties"
    found = listeners(read_properties(config), config)
    assert [(listener.host, listener.port, listener.line) for listener in found] == [
        ("127.0.0.1", 8080, "inference_address=http://127.0.0.1:8080"),
        ("127.0.0.1", 8081, "management_address=http://127.0.0.1:8081"),
        ("127.0.0.1", 8082, "metrics_address=http://127.0.0.1:8082"),
        ("127.0.0.1", 7070, "grpc_inference_port=7070"),
        ("127.0.0.1", 7071, "grpc_management_port=7071")]
    assert read_properties(config)["metrics_mode"] == "prometheus"


def test_grpc_ports_default_to_torchserves_and_bad_values_are_named(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:1\nmanagement_address=http://127.0.0.1:2\n"
                      "metrics_address=https://0.0.0.0\n")
    found = listeners(read_properties(config), config)
    assert [(f.host, f.port) for f in found] == [("127.0.0.1", 1), ("127.0.0.1", 2), ("0.0.0.0", 443),
                                                 ("127.0.0.1", 7070), ("127.0.0.1", 7071)]
    assert found[3].line == "grpc_inference_port (unset: 7070)"
    config.write_text(with_settings(config.read_text(), {"grpc_inference_port": "seventy"}))
    with pytest.raises(ServingSetupError, match="grpc_inference_port=seventy .* is not a port number"):
        listeners(read_properties(config), config)
    config.write_text("inference_address=http://127.0.0.1:1\n")
    with pytest.raises(ServingSetupError, match="sets no management_address, metrics_address"):
        listeners(read_properties(config), config)


def test_with_settings_replaces_lines_and_adds_missing_ones():
    text = "# inference_address=commented\ninference_address=http://127.0.0.1:8080\nother=1\n"
    changed = with_settings(text, {"inference_address": "http://127.0.0.1:9", "metrics_config": r"C:\m.yaml"})
    assert changed == ("# inference_address=commented\ninference_address=http://127.0.0.1:9\nother=1\n"
                       "metrics_config=C:\\m.yaml\n")


def test_a_listening_port_is_taken_and_a_closed_one_is_free():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listener = Listener("127.0.0.1", server.getsockname()[1], "inference_address=...")
        assert is_taken(listener)
    assert not is_taken(listener)


def test_each_folder_has_its_own_temporary_folder_short_enough_for_worker_sockets(tmp_path):
    assert temporary_folder(tmp_path) == tmp_path / ".torchserve"
    deep = tmp_path / ("d" * 120)
    fallback = temporary_folder(deep)
    assert fallback != temporary_folder(tmp_path / ("e" * 120)) and fallback == temporary_folder(deep)
    assert len(os.fsencode(fallback / ".ts.sock.65535")) <= 107


def test_stop_never_signals_a_process_that_is_not_a_torchserve(tmp_path):
    """A pid file naming a live process that is no TorchServe (a reused pid): stop leaves it alone."""
    (tmp_path / "config.properties").write_text((ROOT / "config.properties").read_text())
    server = TorchServe(tmp_path, tmp_path, tmp_path / "config.properties")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.temp_dir.mkdir()
        server.pid_file.write_text(str(other.pid))
        assert server.running_pid() is None
        assert server.stop() and not server.pid_file.exists()
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


def test_the_environment_names_the_folders_and_config(tmp_path):
    (tmp_path / "my.properties").write_text((ROOT / "config.properties").read_text())
    server = TorchServe(tmp_path, tmp_path, tmp_path / "my.properties")
    assert server.env["TMPDIR"] == server.env["TEMP"] == str(tmp_path.resolve() / ".torchserve")
    assert server.env["TS_CONFIG_FILE"] == str(tmp_path.resolve() / "my.properties")
    assert server.pid_file == tmp_path.resolve() / ".torchserve" / ".model_server.pid"
    with pytest.raises(ServingSetupError, match="no .*absent.properties: pass --ts-config"):
        TorchServe(tmp_path, tmp_path, Path(tmp_path / "absent.properties"))
