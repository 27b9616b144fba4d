"""Build components from config nodes (``{type: ..., params: {...}}``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from minimmf.common.registry import registry


def build_model(config: DictConfig) -> nn.Module:
    """Build the model a full run config names (``config.model``), with its
    weights initialised and losses attached, as MMF's ``build_model``."""
    from minimmf.utils.env import setup_imports

    setup_imports()
    model_name = config.model
    model_class = registry.get_model_class(model_name)
    if model_class is None:
        raise ValueError(f"no model named {model_name!r}; known: {registry.names('model')}")
    model = model_class(config.model_config[model_name])
    model.build()
    model.init_losses()
    return model


def build_encoder(config: Any) -> nn.Module:
    """Build an encoder from ``{type, params}``."""
    from minimmf.utils.env import setup_imports

    setup_imports()
    config = OmegaConf.create(config) if not isinstance(config, DictConfig) else config
    encoder_type = config.get("type")
    encoder_class = registry.get_encoder_class(encoder_type)
    if encoder_class is None:
        raise ValueError(f"no encoder named {encoder_type!r}; known: {registry.names('encoder')}")
    params = config.get("params", None) or OmegaConf.create({})
    return encoder_class(params)


def build_processors(processors_config: DictConfig, **extra: Any) -> dict[str, Any]:
    """Build every processor in ``dataset_config.<name>.processors``."""
    from minimmf.datasets.processors.processors import Processor
    from minimmf.utils.env import setup_imports

    setup_imports()
    return {
        name: Processor(processor_config, **extra)
        for name, processor_config in processors_config.items()
    }
