"""Checkpoints: reading weights safely (MMF's ``*_final.pth``, a plain state
dict; MMF or minimmf training checkpoints, a dict with ``model``; DDP's
``module.`` prefixes; always ``torch.load(weights_only=True)``), and the
trainer's saving and resuming."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

logger = logging.getLogger(__name__)

# kept by old transformers versions (and so in MMF checkpoints); harmless to
# fill in from the model when a checkpoint written elsewhere lacks it
_OPTIONAL_BUFFERS = ("backend.transformer.embeddings.position_ids",)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's keys or shapes do not fit the model built from the config."""


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and a clear error if the file
    is missing or not a PyTorch checkpoint."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointMismatchError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True: {error}"
        ) from error


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The model weights inside any supported checkpoint layout."""
    state = checkpoint
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    elif "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {_strip_prefix(key): value for key, value in state.items()}


def _strip_prefix(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
    """Load ``state_dict`` into ``model`` (a BaseModel), naming every missing,
    unexpected or mis-shaped key when they do not match."""
    state = extract_state_dict(state_dict)
    state = {model.format_state_key(key): value for key, value in state.items()}
    own = model.state_dict()
    for key in _OPTIONAL_BUFFERS:
        if key in own and key not in state:
            state[key] = own[key]
    if strict:
        _check_keys(own, state)
    return model._load_state_dict_unchecked(state, strict=strict, assign=assign)


def _check_keys(own: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in set(own) & set(state)
        if isinstance(state[key], torch.Tensor) and state[key].shape != own[key].shape
    )
    if not (missing or unexpected or mis_shaped):
        return
    lines = ["the checkpoint does not fit the model built from this config:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")
            lines.append(f"  {len(keys)} {title} key(s): {shown}")
    lines.append(
        "Check that config.yaml is the one the checkpoint was trained with "
        "(number of labels, BERT size, modalities)."
    )
    raise CheckpointMismatchError("\n".join(lines))


class Checkpoint:
    """Saving and resuming a trainer's state under ``env.save_dir``:

    - ``current.ckpt``: model, optimizer, scheduler, update count, best metric
      (``checkpoint.resume=True`` continues from it);
    - ``best.ckpt``: the same at the best evaluation so far;
    - ``models/model_<update>.ckpt``: one per ``checkpoint_interval``;
    - ``<model>_final.pth``: the best model's plain state dict (MMF's final file).
    """

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.config = trainer.config
        self.save_dir = trainer.save_dir
        self.models_dir = self.save_dir / "models"
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def final_path(self) -> str:
        return os.path.join(self.save_dir, f"{self.config.model}_final.pth")

    def _model_state(self) -> dict[str, torch.Tensor]:
        return self.trainer.unwrapped_model.state_dict()

    def _state(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "model": self._model_state(),
            "optimizer": trainer.optimizer.state_dict(),
            "lr_scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
            "fp16_scaler": trainer.scaler.state_dict(),
            "num_updates": trainer.num_updates,
            "current_epoch": trainer.current_epoch,
            "best_update": trainer.best_update,
            "best_metric_value": trainer.best_metric,
            "config": _plain_config(self.config),
        }

    def save(self, update: int) -> None:
        if not self.trainer.is_main:
            return
        state = self._state()
        self.models_dir.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.models_dir / f"model_{update}.ckpt")
        torch.save(state, self.save_dir / "current.ckpt")
        self._prune()

    def _prune(self) -> None:
        keep = int(self.config.checkpoint.get("max_to_keep", -1))
        if keep <= 0:
            return
        saved = sorted(self.models_dir.glob("model_*.ckpt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in saved[:-keep]:
            old.unlink()

    def save_best(self) -> None:
        self.best_state = {key: value.detach().cpu().clone() for key, value in self._model_state().items()}
        if self.trainer.is_main:
            torch.save(self._state(), self.save_dir / "best.ckpt")

    def restore_best(self) -> None:
        """Load the best weights back into the model (used for the final evaluation)."""
        if self.best_state is not None:
            self.trainer.unwrapped_model.load_state_dict(self.best_state)

    def finalize(self) -> None:
        if self.trainer.is_main:
            torch.save(self.best_state if self.best_state is not None else self._model_state(), self.final_path)

    def load_state_dict(self) -> None:
        """Resume (``checkpoint.resume``) or load weights (``checkpoint.resume_file``)."""
        checkpoint_config = self.config.checkpoint
        name = "best.ckpt" if checkpoint_config.get("resume_best", False) else "current.ckpt"
        resume_path = self.save_dir / name
        if checkpoint_config.get("resume", False) and resume_path.is_file():
            self._resume(load_checkpoint_file(resume_path, map_location=self.trainer.device))
            logger.info("resumed from %s at update %d", resume_path, self.trainer.num_updates)
        elif checkpoint_config.get("resume_file"):
            path = checkpoint_config.resume_file
            self.trainer.unwrapped_model.load_state_dict(load_checkpoint_file(path, map_location=self.trainer.device))
            logger.info("loaded model weights from %s", path)
        elif checkpoint_config.get("resume", False):
            logger.info("checkpoint.resume=True but %s does not exist: starting from scratch", resume_path)

    def _resume(self, state: dict[str, Any]) -> None:
        trainer = self.trainer
        trainer.unwrapped_model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scheduler is not None and state.get("lr_scheduler") is not None:
            trainer.scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("fp16_scaler"):
            trainer.scaler.load_state_dict(state["fp16_scaler"])
        trainer.num_updates = int(state["num_updates"])
        trainer.current_epoch = int(state.get("current_epoch", 0))
        trainer.best_update = int(state.get("best_update", 0))
        trainer.best_metric = state.get("best_metric_value")
        best_path = self.save_dir / "best.ckpt"
        if best_path.is_file():
            self.best_state = extract_state_dict(load_checkpoint_file(best_path))


def _plain_config(config: Any) -> Any:
    return OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
