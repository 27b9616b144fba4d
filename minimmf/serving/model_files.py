"""The files a served model is made of (weights, config, class list,
vocabulary), found by the run's manifest (``minimmf.utils.manifest``) in a
``save/`` folder or an extracted archive, or, in a folder without one (MMF's,
or one saved before manifests), by the names those runs used; and the checks
that they belong together before they are archived."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from minimmf.common.registry import registry
from minimmf.utils.build import build_model
from minimmf.utils.checkpoint import (
    CheckpointMismatchError,
    compare_state_keys,
    extract_state_dict,
    final_weights_name,
)
from minimmf.utils.configuration import dataset_names
from minimmf.utils.env import setup_imports
from minimmf.utils.manifest import RunManifest


def read_config(path: str | os.PathLike) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}; pass the config.yaml mmf_run saved")
    return OmegaConf.load(path)


def dataset_builder(config: DictConfig) -> Any:
    """The builder class of the config's dataset, from the registry."""
    setup_imports()
    return registry.require("builder", dataset_names(config)[0])


def run_manifest(folder: str | os.PathLike) -> RunManifest:
    """The manifest of ``folder``, or one made from the names older runs gave their files."""
    folder = Path(folder)
    manifest = RunManifest.read(folder)
    if manifest is not None:
        return manifest
    config = read_config(folder / "config.yaml")
    files = {"config": "config.yaml", "weights": final_weights_name(config.model)}
    for role, names in dataset_builder(config).legacy_files.items():
        found = next((name for name in names if (folder / name).is_file()), None)
        if found is not None:
            files[role] = found
    return RunManifest("", str(config.model), dataset_names(config)[0], files)


def check_weights_fit(config: DictConfig, weights: str | os.PathLike) -> None:
    """Raise a CheckpointMismatchError when ``weights`` do not have the keys and
    shapes of the model ``config`` builds (built on the meta device: no memory, no time)."""
    setup_imports()
    model_class = registry.require("model", config.model)
    config = config.copy()
    config.model_config[config.model] = model_class.config_for_inference(config.model_config[config.model])
    with torch.device("meta"):
        model = build_model(config)
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    state = {model.format_state_key(key): value for key, value in extract_state_dict(checkpoint).items()}
    missing, unexpected, mis_shaped = compare_state_keys(model.state_dict(), state)
    missing = [key for key in missing if not key.endswith("position_ids")]  # filled in at load when absent
    if missing or unexpected or mis_shaped:
        problems = "; ".join(f"{len(keys)} {what}: {', '.join(keys[:3])}" for what, keys in
                             (("missing", missing), ("unexpected", unexpected), ("of another shape", mis_shaped))
                             if keys)
        raise CheckpointMismatchError(f"{weights} does not fit the model its config.yaml builds ({problems}): the "
                                      "weights and the config come from different runs")
