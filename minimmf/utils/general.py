"""Small helpers shared across minimmf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def get_minimmf_root() -> Path:
    """The package directory; config includes are resolved against it."""
    return Path(__file__).resolve().parent.parent


def as_plain_dict(config: Any) -> dict[str, Any]:
    """A config node (OmegaConf or mapping) as a plain, resolved dict."""
    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)
