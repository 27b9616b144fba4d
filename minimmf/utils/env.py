"""Process-level set-up, as in MMF's ``mmf.utils.env``."""

from __future__ import annotations

import importlib
import os
import random

import numpy as np
import torch

# modules whose import registers models, encoders, processors, datasets, ...
_REGISTERING_MODULES = (
    "minimmf.modules.encoders",
    "minimmf.modules.losses",
    "minimmf.modules.metrics",
    "minimmf.modules.optimizers",
    "minimmf.modules.schedulers",
    "minimmf.models.transformers.backends.huggingface",
    "minimmf.models.transformers.heads.mlp",
    "minimmf.models.mmf_transformer",
    "minimmf.datasets.processors",
    "minimmf.datasets.builders.charades.builder",
)


def setup_imports() -> None:
    """Import every module that registers a component, so that configs can
    name them. Idempotent and cheap after the first call."""
    for module in _REGISTERING_MODULES:
        importlib.import_module(module)


def set_seed(seed: int) -> int:
    """Seed Python, NumPy and torch. ``-1`` picks a random seed (returned)."""
    if seed == -1:
        seed = int.from_bytes(os.urandom(4), "little") % (2**31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed
