"""``mmf_run``: argument checking, a short training run and what it writes,
resuming, reloading the final weights, and a 2-process torchrun run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from minimmf.cli.run import run
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config
from minimmf.utils.distributed import find_free_port
from tests.conftest import ROOT, TINY_CONFIG, build_model_from, run_args

# one periodic checkpoint (interval 4) keeps the tests' disk use down: each is ~0.6 GB
EXPECTED_FILES = ["config.yaml", "current.ckpt", "best.ckpt", "models/model_4.ckpt",
                  "mmf_transformer_final.pth", "train.log", "metrics.csv", "curves.png", "vocab.txt",
                  "charades_action_labels.csv"]


@pytest.mark.parametrize("bad, message", [
    ("training.batch_sise=4", "training.batch_sise"),
    ("training.batch_size=abc", "training.batch_size='abc'"),
    ("training.max_updates=0", "training.max_updates=0"),
    ("optimizer.params.lr=-1", "optimizer.params.lr=-1"),
    ("run_type=train_bogus", "run_type='train_bogus'"),
    ("dataset=nope", "dataset='nope'"),
])
def test_bad_arguments_fail_naming_the_key(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        run([f"config={TINY_CONFIG}", "model=mmf_transformer", "dataset=charades",
             f"env.save_dir={tmp_path}", bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_is_required(capsys):
    with pytest.raises(SystemExit):
        run(["model=mmf_transformer", "dataset=charades"])
    assert "config=<experiment yaml> is required" in capsys.readouterr().err


def test_training_writes_every_file(trained):
    """The ``trained`` fixture (conftest) ran mmf_run for 4 updates."""
    for name in EXPECTED_FILES:
        assert (trained / name).is_file(), name
    current = load_checkpoint_file(trained / "current.ckpt")
    assert current["num_updates"] == 4
    assert {"model", "optimizer", "lr_scheduler", "best_metric_value", "config"} <= set(current)
    metrics = pd.read_csv(trained / "metrics.csv")
    assert {"train/charades/logit_bce", "train/total_loss", "train/lr", "val/charades/logit_bce", "val/total_loss",
            "val/charades/multilabel_micro_f1", "val/charades/map"} <= set(metrics["name"])
    assert "progress: 4/4" in (trained / "train.log").read_text()
    saved = build_config(trained / "config.yaml")
    assert saved.training.max_updates == 4 and saved.model_config.mmf_transformer.num_hidden_layers == 2


def test_saved_config_says_what_ran(trained):
    saved = OmegaConf.load(trained / "config.yaml")
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"  # the defaults ask for cuda
    assert (saved.training.device, saved.training.seed, saved.distributed.world_size) == (expected_device, 1, 1)


def test_save_dir_holds_the_class_list_the_handler_reads(trained, synthetic_data_dir):
    from minimmf.datasets.builders.charades.builder import CharadesBuilder
    from minimmf.datasets.builders.charades.layout import read_action_labels

    config = build_config(trained / "config.yaml", [f"env.data_dir={synthetic_data_dir}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "val")
    assert read_action_labels(trained / "charades_action_labels.csv") == dataset.classes


def test_each_run_logs_into_its_own_files_only(trained, synthetic_data_dir, tmp_path):
    before = (trained / "train.log").read_text()
    run([f"config={trained / 'config.yaml'}", "run_type=val", f"env.save_dir={tmp_path}",
         f"env.data_dir={synthetic_data_dir}", f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}"])
    assert (trained / "train.log").read_text() == before
    log = (tmp_path / "train.log").read_text()
    assert "split: val" in log and "progress: 4/4" not in log
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("minimmf").handlers)


def test_resume_continues_the_update_count(trained, synthetic_data_dir, tmp_path):
    import shutil

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("current.ckpt", "config.yaml", "metrics.csv", "train.log"):
        shutil.copy(trained / name, resumed / name)
    run(run_args(synthetic_data_dir, resumed, "checkpoint.resume=True", "training.max_updates=6",
                 "scheduler.params.num_training_steps=6"))
    current = load_checkpoint_file(resumed / "current.ckpt")
    assert (current["num_updates"], current["current_iteration"]) == (6, 6)
    # the optimizer and the schedule went on from update 4 rather than starting over
    assert current["lr_scheduler"]["last_epoch"] == 6
    assert all(int(state["step"]) == 6 for state in current["optimizer"]["state"].values())
    assert (resumed / "models" / "model_6.ckpt").is_file()
    assert "resumed from" in (resumed / "train.log").read_text()


def test_final_weights_reproduce_the_evaluation(trained, synthetic_data_dir, tmp_path):
    metrics = pd.read_csv(trained / "metrics.csv")
    final_val = metrics[metrics["name"] == "val/charades/logit_bce"]["value"].iloc[-1]
    # the .pth is a plain MMF-style state dict that a fresh model loads strictly
    fresh = build_model_from(TINY_CONFIG)
    fresh.load_state_dict(load_checkpoint_file(trained / "mmf_transformer_final.pth"))
    out = tmp_path / "eval"
    run([f"config={trained / 'config.yaml'}", "run_type=val", f"env.save_dir={out}",
         f"env.data_dir={synthetic_data_dir}",
         f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}", "evaluation.predict=true",
         f"env.report_dir={out / 'my_reports'}"])
    evaluated = pd.read_csv(out / "metrics.csv")
    evaluated_val = evaluated[evaluated["name"] == "val/charades/logit_bce"]["value"].iloc[-1]
    assert evaluated_val == pytest.approx(final_val, rel=1e-4)
    # MMF's file reporter: <dataset>_<experiment>_<split>_<time>.json in env.report_dir
    # (beside it the devkit submissions and their settings, <stem>_submission.json)
    [report] = [path for path in (out / "my_reports").glob("charades_run_val_*.json")
                if not path.name.endswith("_submission.json")]
    predictions = json.loads(report.read_text())
    assert len(predictions) == 4 and all(set(p) == {"id", "labels"} for p in predictions)


def test_prediction_labels_follow_the_threshold(trained, synthetic_data_dir):
    from minimmf.datasets.builders.charades.builder import CharadesBuilder

    config = build_config(trained / "config.yaml", [f"env.data_dir={synthetic_data_dir}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "val")
    scores = torch.tensor([[3.0, -3.0] + [-9.0] * 6])
    assert dataset.format_for_prediction(["x"], scores) == [{"id": "x", "labels": [dataset.classes[0]]}]


@pytest.mark.slow
def test_mmf_run_starts_its_own_processes(synthetic_data_dir, tmp_path, capsys):
    """distributed.world_size=2 on the CPU: mmf_run spawns two gloo processes itself."""
    save_dir = tmp_path / "spawned"
    port = find_free_port()
    run(run_args(synthetic_data_dir, save_dir, "distributed.world_size=2", f"distributed.port={port}",
                 "training.max_epochs=1"))
    assert f"starting 2 processes (port {port})" in capsys.readouterr().out
    log = (save_dir / "train.log").read_text()
    assert "world size 2, batch size 2 per process" in log
    # one epoch: 12 videos over 2 processes, batches of 2 per process
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 3
    assert OmegaConf.load(save_dir / "config.yaml").distributed.world_size == 2


@pytest.mark.slow
def test_two_process_torchrun(synthetic_data_dir, tmp_path):
    save_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = find_free_port()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "minimmf.cli.run", *run_args(synthetic_data_dir, save_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in EXPECTED_FILES:
        assert (save_dir / name).is_file(), name
    log = (save_dir / "train.log").read_text()
    assert "world size 2, batch size 2 per process" in log  # the global batch of 4, shared
    assert log.count("progress: 4/4, train/") == 1  # only rank 0 writes
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 4


def test_early_stop_fp16_and_gradient_clipping(synthetic_data_dir, tmp_path):
    save_dir = tmp_path / "early"
    run(run_args(synthetic_data_dir, save_dir, "training.max_updates=30", "scheduler.params.num_training_steps=30",
                 "training.evaluation_interval=1", "training.checkpoint_interval=100",
                 "training.early_stop.enabled=True",
                 "training.early_stop.patience=1", "training.early_stop.criteria=charades/logit_bce",
                 "training.early_stop.minimize=True", "optimizer.params.lr=1e-9", "training.fp16=True",
                 "training.clip_gradients=True", "training.max_grad_l2_norm=0.5"))
    log = (save_dir / "train.log").read_text()
    assert "early stop: no improvement of charades/logit_bce" in log
    if not torch.cuda.is_available():
        assert "training.fp16 needs a CUDA device" in log
    updates = load_checkpoint_file(save_dir / "current.ckpt")["num_updates"]
    assert 2 <= updates < 30
    assert (save_dir / "mmf_transformer_final.pth").is_file()
