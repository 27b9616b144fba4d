"""What a newcomer meets before anything trains: the device the defaults pick,
the message of a mistyped config path, the synthetic generator's help and
its progress in a log file."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from minimmf.utils import distributed
from minimmf.utils.configuration import build_config
from tests.conftest import ROOT, TINY_CONFIG

TINY = ["model=mmf_transformer", "dataset=charades"]


def test_the_default_device_is_what_the_machine_has_and_says_nothing(caplog):
    config = build_config(TINY_CONFIG, TINY)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.training.device == expected
    with caplog.at_level(logging.WARNING, logger="minimmf"):
        assert distributed.choose_device(config.training.device).type == expected
    assert not [record for record in caplog.records if record.name.startswith("minimmf")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback of a machine without a GPU")
def test_cuda_asked_for_without_a_gpu_still_warns(caplog):
    config = build_config(TINY_CONFIG, [*TINY, "training.device=cuda"])
    with caplog.at_level(logging.WARNING, logger="minimmf"):
        assert distributed.choose_device(config.training.device).type == "cpu"
    assert "training.device=cuda but no GPU is visible" in caplog.text


def looked_in(config_path: str) -> list[str]:
    with pytest.raises(FileNotFoundError) as error:
        build_config(config_path, TINY)
    return str(error.value).split("(looked in ")[1].rstrip(")").split(", ")


def test_a_mistyped_config_path_lists_each_folder_once(monkeypatch, tmp_path):
    mistyped = "projects/mmf_transformer/configs/charades/tinny.yaml"
    monkeypatch.chdir(tmp_path)  # elsewhere: the current directory, then the package's projects/
    assert looked_in(mistyped) == [str(tmp_path.resolve() / "projects/mmf_transformer/configs/charades"),
                                   str(ROOT / "projects/mmf_transformer/configs/charades")]
    # from the checkout's root the package's projects/ (a link to the checkout's) is the same folder
    monkeypatch.chdir(ROOT)
    assert looked_in(mistyped) == [str(ROOT / "projects/mmf_transformer/configs/charades")]


def run_generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_charades.py"), *args],
                          capture_output=True, text=True, timeout=600)


def test_the_generators_help_shows_the_defaults():
    shown = " ".join(run_generator("--help").stdout.split("options:", 1)[1].split())
    for option, default in (("--out OUT", "data"), ("--num-classes NUM_CLASSES", "8"), ("--num-train NUM_TRAIN", "100"),
                            ("--num-test NUM_TEST", "24"), ("--duration DURATION", "4.0"), ("--seed SEED", "0"),
                            ("--localized-fraction LOCALIZED_FRACTION", "0.5")):
        after = shown.split(option, 1)[1].split(" --", 1)[0]
        assert f"(default: {default})" in after, option
    assert "(default: False)" not in shown


def test_the_generators_progress_in_a_log_is_lines_not_a_bar(tmp_path):
    """Not on a terminal (here, a pipe), progress comes as short lines: at most one per tenth."""
    result = run_generator("--out", str(tmp_path), "--num-classes", "2", "--num-train", "20", "--num-test", "2",
                           "--duration", "0.5", "--width", "32", "--height", "32")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert [line for line in lines if line.startswith("train videos")] == [f"train videos: {n}/20"
                                                                           for n in range(2, 21, 2)]
    assert lines[-1] == "test videos: 2/2"
    assert run_generator("--out", str(tmp_path / "q"), "--num-classes", "2", "--num-train", "2", "--num-test", "1",
                         "--duration", "0.5", "--width", "32", "--height", "32", "--quiet").stderr == ""
