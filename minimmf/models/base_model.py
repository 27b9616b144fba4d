"""``BaseModel``: what every MMF model shares: built from its config node,
``build()`` then ``init_losses()``, moves the batch to its device, and adds
``losses`` to the output when the batch carries ``targets``.

What serving needs from a model is here too, so that serving works through
this interface and knows nothing of a model's insides: ``config_for_inference``
(the config edits a served model is built with), ``num_labels``,
``describe()`` and ``prepare_for_inference()`` (eval mode, the serving
precision's weights, channels-last convolutions)."""

from __future__ import annotations

import collections.abc
from collections.abc import Mapping
from typing import Any

import torch
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

    @classmethod
    def config_for_inference(cls, config: DictConfig) -> DictConfig:
        """The model config a served model is built from (``config`` itself by
        default): the archived weights replace whatever training started from."""
        return config

    @property
    def num_labels(self) -> int:
        """How many scores per sample the model outputs (its classes)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many labels it scores")

    def describe(self) -> dict[str, Any]:
        """The model in brief, for serving's describe answer."""
        return {"model": type(self).__name__, "parameters": sum(p.numel() for p in self.parameters())}

    def prepare_for_inference(self, channels_last: bool = True, dtype: torch.dtype = torch.float32,
                              compiled: bool = False) -> BaseModel:
        """This model, ready to serve: eval mode, its weights in ``dtype``
        (bfloat16: the whole model converted, which runs faster than autocast
        on CPUs with AMX or AVX512-BF16 and on GPUs), and, with
        ``channels_last``, channels-last convolution weights (the same fp32
        results to ~1e-6, faster oneDNN/cuDNN kernels). For a model Inductor
        will compile (``compiled``) only the 3-D convolutions go channels-last:
        its frozen 2-D convolution of a one-channel input fails on them, and
        the 2-D ones ran no faster."""
        self.eval()
        if dtype != torch.float32:
            self.to(dtype)
        if channels_last:
            for module in self.modules():
                if isinstance(module, nn.Conv3d):
                    module.to(memory_format=torch.channels_last_3d)
                elif isinstance(module, nn.Conv2d) and not compiled:
                    module.to(memory_format=torch.channels_last)
        return self

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
