"""``BaseModel``: what every MMF model shares: built from its config node,
``build()`` then ``init_losses()``, moves the batch to its device, and adds
``losses`` to the output when the batch carries ``targets``."""

from __future__ import annotations

import collections.abc
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from minimmf.common.sample import to_device
from minimmf.modules.losses import Losses
from minimmf.utils.checkpoint import load_state_dict_checked


class BaseModel(nn.Module):
    def __init__(self, config: DictConfig | Mapping[str, Any]):
        super().__init__()
        if not isinstance(config, DictConfig):
            config = OmegaConf.create(dict(config))
        self.config = config

    @classmethod
    def config_path(cls) -> str | None:
        """The model's default config, relative to the minimmf package."""
        return None

    @classmethod
    def format_state_key(cls, key: str) -> str:
        """Rename a checkpoint key from an older layout (hook for subclasses)."""
        return key

    def build(self) -> None:
        raise NotImplementedError

    def init_losses(self) -> None:
        self.losses = Losses(self.config.get("losses", []) or [])

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load MMF or minimmf weights (``module.`` prefixes and old key names
        are accepted); a mismatch raises with the missing/unexpected keys."""
        return load_state_dict_checked(self, state_dict, strict=strict, assign=assign)

    def _load_state_dict_unchecked(self, state_dict: Mapping[str, Any], strict: bool, assign: bool):
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def __call__(self, sample_list: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        device = next(self.parameters()).device
        sample_list = to_device(sample_list, device)
        output = super().__call__(sample_list, *args, **kwargs)
        if not isinstance(output, collections.abc.Mapping):
            raise TypeError("a model's forward must return a dict")
        if "losses" not in output:
            output["losses"] = self.losses(sample_list, output) if hasattr(self, "losses") else {}
        return output
