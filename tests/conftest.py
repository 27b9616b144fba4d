"""Shared fixtures: configs and models built once per test session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from minimmf.common.sample import SampleList
from minimmf.models.mmf_transformer import MMFTransformer
from minimmf.utils.configuration import build_config

ROOT = Path(__file__).resolve().parent.parent
DIRECT_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/direct.yaml"
TINY_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/tiny.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"


def build_model_from(config_path: Path, overrides: list[str] | None = None) -> MMFTransformer:
    config = build_config(config_path, ["model=mmf_transformer", "dataset=charades", *(overrides or [])])
    model = MMFTransformer(config.model_config.mmf_transformer)
    model.build()
    model.init_losses()
    return model


def random_batch(batch_size: int, num_labels: int, frames: int, crop: int, audio: int,
                 seq_len: int = 128, seed: int = 0) -> SampleList:
    """Model inputs of the right shapes and types, with varied text lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        input_mask[row, : 5 + 7 * row] = 1
    input_ids = torch.randint(1000, 30000, (batch_size, seq_len), generator=generator) * input_mask
    return SampleList({
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "video": torch.randn(batch_size, 3, frames, crop, crop, generator=generator),
        "audio": torch.rand(batch_size, 1, audio, audio, generator=generator),
        "targets": (torch.rand(batch_size, num_labels, generator=generator) > 0.7).float(),
        "dataset_name": "charades",
        "dataset_type": "test",
    })


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
    from scripts.make_synthetic_charades import main as make_synthetic

    out = tmp_path_factory.mktemp("charades_data")
    make_synthetic(["--out", str(out), "--num-classes", str(SYNTHETIC_CLASSES), "--num-train", "12",
                    "--num-test", "4", "--duration", "2", "--width", "96", "--height", "64", "--quiet"])
    return out


def git_head() -> str | None:
    """The commit the code runs from, or None outside a git checkout (checkpoints then have no git fields)."""
    result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def synthetic_root(data_dir: Path) -> Path:
    return data_dir / "datasets" / "charades" / "defaults"


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


@pytest.fixture(scope="session")
def labels_csv(synthetic_data_dir, tmp_path_factory) -> Path:
    from scripts.generate_action_labels import main as generate_labels

    path = tmp_path_factory.mktemp("labels") / "charades_action_labels.csv"
    assert generate_labels(["--data-dir", str(synthetic_data_dir), "--out", str(path)]) == 0
    return path
