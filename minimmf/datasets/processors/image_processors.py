"""``torchvision_transforms``: a chain of transforms looked up by name in
torchvision, then torchaudio, then the processor registry (MMF's order)."""

from __future__ import annotations

import collections.abc
import warnings
from typing import Any

import torchaudio.transforms
from omegaconf import OmegaConf
from torchvision import transforms

from minimmf.common.registry import registry
from minimmf.datasets.processors.processors import BaseProcessor, TruncateOrPad


def transform_specs(transforms_config: Any) -> list[tuple[str, Any]]:
    """``[name | {type, params}]`` -> ``[(name, params as list or dict)]``."""
    if OmegaConf.is_dict(transforms_config) or isinstance(transforms_config, collections.abc.Mapping):
        transforms_config = [transforms_config]
    specs = []
    for entry in transforms_config:
        if isinstance(entry, str):
            specs.append((entry, []))
        else:
            params = entry.get("params", None)
            params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else (params or {})
            specs.append((entry["type"], params))
    return specs


def instantiate(transform_class: Any, params: Any) -> Any:
    if isinstance(params, collections.abc.Mapping):
        return transform_class(**params)
    return transform_class(*params)


@registry.register_processor("torchvision_transforms")
class TorchvisionTransforms(BaseProcessor):
    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__()
        built = []
        for name, params in transform_specs(config.transforms):
            transform_class = (
                getattr(transforms, name, None)
                or getattr(torchaudio.transforms, name, None)
                or registry.get_processor_class(name)
            )
            if transform_class is None:
                raise ValueError(f"transform {name!r} is in neither torchvision, torchaudio nor the processor registry")
            with warnings.catch_warnings():
                # MelSpectrogram's defaults (MMF's) leave some of the 128 mel filters empty; expected
                warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
                built.append(instantiate(transform_class, params))
        self.transform = transforms.Compose(built)
        first = built[0] if built else None
        # the audio pipeline only ever looks at this many samples
        self.samples_needed: int | None = first.output_size if isinstance(first, TruncateOrPad) else None

    def __call__(self, item: Any) -> Any:
        if isinstance(item, collections.abc.Mapping):
            return {"image": self.transform(item["image"])}
        return self.transform(item)
