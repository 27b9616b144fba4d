"""Small helpers shared across minimmf."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf


def get_minimmf_root() -> Path:
    """The package directory; config includes are resolved against it."""
    return Path(__file__).resolve().parent.parent


def as_plain_dict(config: Any) -> dict[str, Any]:
    """A config node (OmegaConf or mapping) as a plain, resolved dict."""
    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def get_batch_size(training_config: Any, world_size: int) -> int:
    """The batch size of each process, as MMF: ``batch_size_per_device`` when
    set, else the global ``batch_size`` shared by the processes (the config
    checks make sure it divides)."""
    per_device = training_config.get("batch_size_per_device")
    if per_device is not None:
        return int(per_device)
    return int(training_config.batch_size) // world_size


def get_max_updates(max_updates: int | None, max_epochs: float | None, batches_per_epoch: int,
                    update_frequency: int) -> int:
    """MMF's rule: ``max_epochs`` when set (it wins over ``max_updates``), in
    whole updates of ``update_frequency`` batches per epoch."""
    if max_epochs is not None:
        return int(math.ceil(batches_per_epoch / update_frequency) * max_epochs)
    return int(max_updates)


def clip_gradients(parameters: Iterable[torch.Tensor], training_config: Any) -> torch.Tensor | None:
    """Clip the gradients' global L2 norm as MMF: only with ``clip_gradients``
    on and ``max_grad_l2_norm`` set (``clip_norm_mode`` is always ``all``).
    Returns the norm before clipping, or None when nothing was clipped."""
    max_norm = training_config.get("max_grad_l2_norm")
    if not training_config.get("clip_gradients") or max_norm is None:
        return None
    return torch.nn.utils.clip_grad_norm_(parameters, float(max_norm))
