"""Starting a run from a checkpoint as MMF does: resume, resume_file,
resume_best (restoring the optimizer, scheduler, counters and best metric
unless checkpoint.reset says otherwise), resume_pretrained with a state
mapping, checkpoints in MMF's layout both ways, and pretrained starts from
local files (nothing is downloaded).

Each test loads a trainer (data, model, checkpoint) without training it."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torchvision
from transformers import BertConfig, BertModel

from minimmf.cli.run import run
from minimmf.trainers.mmf_trainer import MMFTrainer
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import build_config
from tests.conftest import git_head, run_args

# the fields MMF's Checkpoint.save writes (mmf/utils/checkpoint.py, main branch);
# MMF adds lr_scheduler when it has a scheduler, and git/* with save_git_details
MMF_CHECKPOINT_FIELDS = {"model", "optimizer", "best_iteration", "current_iteration", "current_epoch",
                         "num_updates", "best_update", "best_metric_value", "fp16_scaler", "config"}
MMF_GIT_FIELDS = {"git/branch", "git/commit_hash", "git/commit_author", "git/commit_message", "git/diff"}
VIDEO_CONV = "encoders.video.encoder.0.0.weight"


@contextmanager
def loaded_trainer(data_dir: Path, save_dir: Path, *options: str):
    """A trainer set up as ``mmf_run`` would, before its first update."""
    trainer = MMFTrainer(build_config(None, run_args(data_dir, save_dir, *options)))
    try:
        trainer.load()
        yield trainer
    finally:
        trainer.teardown(completed=True)


def link_checkpoints(source: Path, save_dir: Path, *names: str) -> None:
    save_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (save_dir / name).symlink_to(source / name)


def first_optimizer_state(optimizer_state: dict) -> torch.Tensor:
    return optimizer_state["state"][0]["exp_avg"]


def test_resume_file_restores_the_whole_training_state(trained, synthetic_data_dir, tmp_path):
    saved = load_checkpoint_file(trained / "current.ckpt")
    with loaded_trainer(synthetic_data_dir, tmp_path, f"checkpoint.resume_file={trained / 'current.ckpt'}") as trainer:
        assert (trainer.num_updates, trainer.current_iteration, trainer.current_epoch) == (4, 4, 2)
        assert trainer.scheduler.last_epoch == 4
        torch.testing.assert_close(first_optimizer_state(trainer.optimizer.state_dict()),
                                   first_optimizer_state(saved["optimizer"]))
        early_stopping = trainer.early_stopping
        assert (early_stopping.best_value, early_stopping.best_update) == (saved["best_metric_value"],
                                                                           saved["best_update"])


@pytest.mark.parametrize("reset, optimizer_restored, counts_restored", [
    ("optimizer", False, True), ("counts", True, False), ("all", False, False)])
def test_checkpoint_reset_starts_parts_afresh(trained, synthetic_data_dir, tmp_path, reset, optimizer_restored,
                                             counts_restored):
    with loaded_trainer(synthetic_data_dir, tmp_path, f"checkpoint.resume_file={trained / 'current.ckpt'}",
                        f"checkpoint.reset.{reset}=true") as trainer:
        assert bool(trainer.optimizer.state) == optimizer_restored
        assert trainer.num_updates == (4 if counts_restored else 0)
        assert trainer.scheduler.last_epoch == (4 if counts_restored else 0)
        assert math.isinf(trainer.early_stopping.best_value) != counts_restored


def test_resume_falls_back_to_best_ckpt(trained, synthetic_data_dir, tmp_path):
    link_checkpoints(trained, tmp_path, "best.ckpt")
    best = load_checkpoint_file(trained / "best.ckpt")
    with loaded_trainer(synthetic_data_dir, tmp_path, "checkpoint.resume=true") as trainer:
        assert trainer.num_updates == best["num_updates"]
    assert "no current.ckpt" in (tmp_path / "train.log").read_text()


def test_resume_best_continues_from_the_best_update(trained, synthetic_data_dir, tmp_path):
    link_checkpoints(trained, tmp_path, "best.ckpt", "current.ckpt")
    best = load_checkpoint_file(trained / "best.ckpt")
    with loaded_trainer(synthetic_data_dir, tmp_path, "checkpoint.resume=true",
                        "checkpoint.resume_best=true") as trainer:
        assert (trainer.num_updates, trainer.current_iteration) == (best["best_update"], best["best_iteration"])


def test_resume_wins_over_resume_file_once_the_run_has_a_checkpoint(trained, synthetic_data_dir, tmp_path):
    link_checkpoints(trained, tmp_path, "current.ckpt")
    with loaded_trainer(synthetic_data_dir, tmp_path, "checkpoint.resume=true",
                        f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}") as trainer:
        assert trainer.num_updates == 4  # the .pth alone would restore no counters


# ------------------------------------------------------- MMF's layout, both ways


def test_our_checkpoints_have_mmfs_fields_and_types(trained):
    checkpoint = load_checkpoint_file(trained / "current.ckpt")  # weights_only, as MMF's torch.load
    git_fields = MMF_GIT_FIELDS if git_head() else set()
    assert MMF_CHECKPOINT_FIELDS | git_fields | {"lr_scheduler"} <= set(checkpoint)
    for field in ("best_iteration", "current_iteration", "current_epoch", "num_updates", "best_update"):
        assert type(checkpoint[field]) is int, field
    assert type(checkpoint["best_metric_value"]) is float
    assert isinstance(checkpoint["lr_scheduler"], dict) and isinstance(checkpoint["fp16_scaler"], dict)
    assert checkpoint["config"]["model"] == "mmf_transformer"


def test_without_a_scheduler_there_is_no_lr_scheduler_field_and_the_best_starts_at_inf(synthetic_data_dir, tmp_path):
    # MMF would load a None lr_scheduler, and compare against a None best value
    with loaded_trainer(synthetic_data_dir, tmp_path, "training.lr_scheduler=false") as trainer:
        state = trainer.checkpoint.state()
    assert "lr_scheduler" not in state
    assert state["best_metric_value"] == -math.inf  # tiny.yaml maximizes multilabel_micro_f1


def mmf_checkpoint(trained: Path, **counters) -> dict:
    """A checkpoint dict laid out as MMF's Checkpoint.save writes it."""
    ours = load_checkpoint_file(trained / "current.ckpt")
    scheduler = {**ours["lr_scheduler"], "last_epoch": counters.get("num_updates", 0)}
    return {"model": {f"module.{key}": value for key, value in ours["model"].items()},  # saved from DDP
            "optimizer": ours["optimizer"], "fp16_scaler": {}, "config": ours["config"],
            "lr_scheduler": scheduler, "git/branch": "main", "git/commit_hash": "abc", "git/commit_author": "x",
            "git/commit_message": "y", "git/diff": "", **counters}


@pytest.mark.parametrize("counters, expected", [
    # MMF's current layout
    ({"num_updates": 3, "current_iteration": 6, "current_epoch": 2, "best_update": 2, "best_iteration": 4,
      "best_metric_value": 0.25}, (3, 6, 2, 4, 0.25)),
    # MMF's older layout: iterations only, the run continues from best_iteration
    ({"current_iteration": 7, "best_iteration": 5, "best_metric_value": 0.5}, (5, 5, 0, 5, 0.5)),
])
def test_we_resume_mmfs_checkpoints(trained, synthetic_data_dir, tmp_path, counters, expected):
    path = tmp_path / "mmf.ckpt"
    torch.save(mmf_checkpoint(trained, **counters), path)
    with loaded_trainer(synthetic_data_dir, tmp_path / "save", f"checkpoint.resume_file={path}") as trainer:
        early_stopping = trainer.early_stopping
        assert (trainer.num_updates, trainer.current_iteration, trainer.current_epoch,
                early_stopping.best_iteration, early_stopping.best_value) == expected
        assert trainer.scheduler.last_epoch == counters.get("num_updates", 0)
        assert trainer.optimizer.state


# ------------------------------------------------------------ partial starts


def test_a_checkpoint_without_some_weights_warns_and_loads_the_rest(trained, synthetic_data_dir, tmp_path):
    weights = load_checkpoint_file(trained / "mmf_transformer_final.pth")
    path = tmp_path / "no_heads.pth"
    torch.save({key: value for key, value in weights.items() if not key.startswith("heads.")}, path)
    with loaded_trainer(synthetic_data_dir, tmp_path / "save", f"checkpoint.resume_file={path}") as trainer:
        torch.testing.assert_close(trainer.model.state_dict()[VIDEO_CONV], weights[VIDEO_CONV])
    assert "lacks 8 of the model's weights, which keep their initial values: heads.0." in \
        (tmp_path / "save" / "train.log").read_text()


def test_weights_of_another_shape_are_a_clear_error(trained, synthetic_data_dir, tmp_path, capsys):
    weights = load_checkpoint_file(trained / "mmf_transformer_final.pth")
    weights["heads.0.classifier.2.weight"] = torch.zeros(157, 128)
    path = tmp_path / "other_head.pth"
    torch.save(weights, path)
    with pytest.raises(SystemExit) as exit_info:
        run(run_args(synthetic_data_dir, tmp_path / "save", f"checkpoint.resume_file={path}"))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert "heads.0.classifier.2.weight: checkpoint (157, 128) vs model (8, 128)" in error
    assert "checkpoint.resume_pretrained=True" in error
    # the failed run's log file is closed and detached
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("minimmf").handlers)


def test_resume_pretrained_loads_only_the_mapped_parts(trained, synthetic_data_dir, tmp_path):
    saved = load_checkpoint_file(trained / "current.ckpt")["model"]
    with loaded_trainer(synthetic_data_dir, tmp_path, f"checkpoint.resume_file={trained / 'current.ckpt'}",
                        "checkpoint.resume_pretrained=true",
                        "checkpoint.pretrained_state_mapping={'backend': 'backend', 'encoders': 'encoders'}",
                        "training.seed=5") as trainer:
        state = trainer.model.state_dict()
        torch.testing.assert_close(state[VIDEO_CONV], saved[VIDEO_CONV])
        assert not torch.equal(state["heads.0.classifier.2.weight"], saved["heads.0.classifier.2.weight"])
        assert trainer.num_updates == 0 and not trainer.optimizer.state  # a finetuning start
    log = (tmp_path / "train.log").read_text()
    assert "8 of the model's weights are not in the mapping and keep their initial values: heads.0." in log


def test_pretrained_bert_and_r2plus1d_from_local_files(synthetic_data_dir, tmp_path, monkeypatch):
    """A Hugging Face directory as transformer_base, and torchvision's Kinetics
    R(2+1)D file in the torch hub cache (here small stand-ins of both)."""
    bert_dir = tmp_path / "my-bert"
    bert = BertModel(BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512))
    bert.save_pretrained(bert_dir)
    torch.manual_seed(3)
    kinetics = torchvision.models.video.r2plus1d_18(num_classes=400).state_dict()
    hub_checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub_checkpoints.mkdir(parents=True)
    torch.save(kinetics, hub_checkpoints / "r2plus1d_18-91a641e6.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with loaded_trainer(synthetic_data_dir, tmp_path / "save",
                        f"model_config.mmf_transformer.transformer_base={bert_dir}",
                        "model_config.mmf_transformer.modalities[1].encoder.params.pretrained=true") as trainer:
        model = trainer.model
        torch.testing.assert_close(model.backend.transformer.encoder.layer[1].output.dense.weight,
                                   bert.encoder.layer[1].output.dense.weight)
        torch.testing.assert_close(model.state_dict()[VIDEO_CONV], kinetics["stem.0.weight"])


def test_pretrained_weights_missing_from_the_hub_cache_are_not_downloaded(synthetic_data_dir, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(SystemExit):
        run(run_args(synthetic_data_dir, tmp_path / "save",
                     "model_config.mmf_transformer.modalities[1].encoder.params.pretrained=true"))
    error = capsys.readouterr().err
    assert "r2plus1d_18-91a641e6.pth are not in the torch hub cache" in error and "Traceback" not in error
