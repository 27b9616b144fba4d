"""Processor plumbing as in MMF: a ``Processor`` wraps the class registered
under the config's ``type`` and builds it with the config's ``params``."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from minimmf.common.registry import registry
from minimmf.utils.build import build_processor

logger = logging.getLogger(__name__)


class BaseProcessor:
    """Every processor takes one item and returns the processed item."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> Any:
        return item


class Processor:
    """Builds ``registry.get_processor_class(config.type)(config.params)``;
    the built processor's attributes are reachable through the wrapper."""

    def __init__(self, config: DictConfig, *args: Any, **kwargs: Any):
        self.processor = build_processor(config, *args, **kwargs)

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> Any:
        return self.processor(item, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "processor":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.processor, name)


@registry.register_processor("truncate_or_pad")
class TruncateOrPad(BaseProcessor):
    """First channel of (channels, samples) audio, cut or zero-padded to
    ``output_size`` samples (1-D). MMF crashes on shorter input; we pad."""

    def __init__(self, output_size: int | None = None, **kwargs: Any):
        super().__init__()
        if output_size is None:
            raise TypeError("truncate_or_pad needs 'output_size'")
        self.output_size = int(output_size)

    def __call__(self, sample: torch.Tensor) -> torch.Tensor:
        first_channel = sample[0] if sample.dim() > 1 else sample
        if first_channel.numel() >= self.output_size:
            return first_channel[: self.output_size]
        padding = torch.zeros(self.output_size - first_channel.numel(), dtype=first_channel.dtype)
        return torch.cat((first_channel, padding))
