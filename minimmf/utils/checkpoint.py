"""Reading weights safely: MMF's ``*_final.pth`` (a plain state dict), MMF or
minimmf training checkpoints (a dict with ``model``), and DDP's ``module.``
prefixes, always with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

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
