"""minimmf installed from its wheel, run from a folder that is not the clone:
the README's training command (its config found inside the package, as MMF
ships its projects), archiving, and the archived handler's answer all work
without the source checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

ANSWER_ONE_VIDEO = """
import json, sys
from pathlib import Path
import minimmf
from devtools.worker import extract, handle, load_handler
mar, video = Path(sys.argv[1]), Path(sys.argv[2])
handler, context = load_handler(extract(mar, mar.parent / "extracted"))
(status, body), = handle(handler, context, [{"data": bytearray(video.read_bytes()), "script": bytearray(b"s")}])
print(json.dumps({"status": status, "labels": body.get("labels"), "minimmf": minimmf.__file__}))
"""


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, installed into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "projects", source / "projects")
    shutil.copytree(ROOT / "minimmf", source / "minimmf", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
         str(source)], work, env)
    (wheel,) = (work / "dist").glob("minimmf-*.whl")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(work / "site"), str(wheel)],
        work, env)
    return work / "site"


@pytest.mark.slow
def test_the_wheel_trains_archives_and_serves_outside_the_clone(installed, synthetic_data_dir, test_split, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the wheel's minimmf first; the clone only for devtools, which is not installed
    env = {**os.environ, "PYTHONPATH": f"{installed}{os.pathsep}{ROOT}"}
    python = sys.executable
    save = elsewhere / "save"
    run([python, "-m", "minimmf.cli.run", "config=projects/mmf_transformer/configs/charades/tiny.yaml",
         "run_type=train_val", "dataset=charades", "model=mmf_transformer", f"env.data_dir={synthetic_data_dir}",
         f"env.save_dir={save}", "training.max_updates=2", "training.evaluation_interval=2",
         "training.checkpoint_interval=2", "training.num_workers=0", "training.batch_size=4",
         "scheduler.params.num_training_steps=2", "training.find_unused_parameters=True"], elsewhere, env)
    manifest = json.loads((save / "manifest.json").read_text())
    assert set(manifest["files"]) == {"weights", "config", "labels", "vocabulary"}
    run([python, "-m", "minimmf.serving.torchserve", "archive", "--save-dir", str(save), "--model-store",
         str(elsewhere / "store"), "--model-config", str(ROOT / "model-config.yaml"), "--live-model-config",
         str(ROOT / "model-config-live.yaml"), "--handler", str(ROOT / "handler.py")], elsewhere, env)
    assert {path.name for path in (elsewhere / "store").iterdir()} == {"MMF_model.mar", "MMF_model_live.mar"}
    video, _ = test_split[0]
    answer = json.loads(run([python, "-c", ANSWER_ONE_VIDEO, str(elsewhere / "store" / "MMF_model.mar"), str(video)],
                            elsewhere, env).strip().splitlines()[-1])
    assert answer["status"] == 200 and isinstance(answer["labels"], list)
    assert Path(answer["minimmf"]).is_relative_to(installed)
