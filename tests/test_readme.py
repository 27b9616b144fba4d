"""README.md's manual path and make demo's script, run as a newcomer runs them.

The manual path is every ```bash block of README.md marked
``<!-- tested: manual path -->``, in order, in one bash session: the demo
data, the labels file (script and notebook), training, a video to send,
the archive, TorchServe's start, the curl registration, request.py, the
describe, the Prometheus scrape and the stop. It runs in a fresh copy of
this checkout (its tracked and new files, committed there as the first
commit of a new repository) whose config.properties names free ports, as a
user beside another server would set it; then scripts/demo.sh runs in the
same copy. Only the training is shortened (4 updates instead of 200, one
evaluation before the final one): the test appends overrides to README's
training command. After each, git status shows no change to a tracked file
and no new untracked one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minimmf.serving.torchserve import APIS, GRPC_PORTS, TorchServe, free_port, is_taken, listeners, with_settings
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("java_ready")]
MARK = "<!-- tested: manual path -->"
TRAINING_LINE_END = "training.find_unused_parameters=True"
SHORT_TRAINING = ("training.max_updates=4 training.batch_size=4 training.log_interval=1 "
                  "training.evaluation_interval=4 training.checkpoint_interval=4 scheduler.params.num_training_steps=4")


def manual_path() -> str:
    """README's marked blocks, the training shortened."""
    blocks = re.findall(re.escape(MARK) + r"\n```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 3, "README.md has lost its marked manual-path blocks"
    script = "\n".join(blocks)
    assert script.count(TRAINING_LINE_END) == 1, "README's manual training command changed: update this test"
    return script.replace(TRAINING_LINE_END, f"{TRAINING_LINE_END} {SHORT_TRAINING}")


def fresh_copy(destination: Path) -> Path:
    """This checkout's tracked and not-ignored files, committed in a new repository,
    with free ports in config.properties and .venv linked to this environment."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    ports = {f"{api}_address": f"http://127.0.0.1:{free_port()}" for api in APIS}
    ports |= {f"grpc_{api}_port": str(free_port()) for api in GRPC_PORTS}
    config = destination / "config.properties"
    config.write_text(with_settings(config.read_text(), ports))
    (destination / ".venv").symlink_to(Path(sys.prefix))
    git(destination, "init", "-q")
    (destination / ".git" / "info" / "exclude").write_text(".venv\n")  # a link, which .venv/ does not match
    git(destination, "add", "-A")
    git(destination, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "clone")
    return destination


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def bash(script: str, folder: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("TS_CONFIG_FILE", "VIRTUAL_ENV")}
    env |= {"PYTHONPATH": str(folder), **extra_env}  # the copy's minimmf, in TorchServe's workers too
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=1500)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    folder = fresh_copy(tmp_path_factory.mktemp("clone"))
    yield folder
    TorchServe(folder, folder / "model_store", folder / "config.properties").stop()  # whatever a failure left


def assert_ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"


def test_readme_manual_path_runs_as_written_and_leaves_the_checkout_clean(clone):
    result = bash(manual_path(), clone)
    assert_ran(result)
    out = result.stdout
    assert "registered with 1 initial workers" in out
    assert re.search(r"^labels: \[.*\]$", out, flags=re.M) and "expected: ['Someone is sneezing']" in out
    assert '"customizedMetadata"' in out and '"batchSize": 1' in out  # the describe, with the curl's batch size
    for name in ("DecodeTime", "PreprocessTime", "ModelTime"):
        assert re.search(rf'^{name}{{ModelName="MMF_model",Level="Model",.*}} \d', out, flags=re.M), name
    assert "Model server started" in (clone / "logs" / "torchserve.out").read_text()
    server = TorchServe(clone, clone / "model_store", clone / "config.properties")
    assert not server.pid_file.exists() and not (clone / "key_file.json").exists()
    # torchserve --stop does not wait: the ports come free once the server has exited
    ports = listeners(server.settings, server.ts_config)
    deadline = time.time() + 60
    while any(is_taken(port) for port in ports) and time.time() < deadline:
        time.sleep(1)
    assert not any(is_taken(port) for port in ports)
    assert git(clone, "status", "--porcelain") == ""


def test_the_demo_runs_beside_and_leaves_the_checkout_clean(clone):
    """make demo's script (on the manual path's data, 4 updates, into save/demo), then git status."""
    result = bash(f"scripts/demo.sh {SHORT_TRAINING}", clone, BIN=".venv/bin", SAVE_DIR="save/demo", REQUESTS="2")
    assert_ran(result)
    assert result.stdout.count("  truth:") == 2 and "timeline plot: save/demo/timeline.png" in result.stdout
    assert "6/6 stopping TorchServe" in result.stdout and "TorchServe stopped" in result.stdout
    assert TorchServe(clone, clone / "model_store", clone / "config.properties").running_pid() is None
    assert git(clone, "status", "--porcelain") == ""
