"""Build components from config nodes (``{type: ..., params: {...}}``)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from minimmf.common.registry import registry
from minimmf.utils.configuration import ConfigError

logger = logging.getLogger(__name__)


def build_model(config: DictConfig) -> nn.Module:
    """Build the model a full run config names (``config.model``), with its
    weights initialised and losses attached, as MMF's ``build_model``."""
    from minimmf.utils.env import setup_imports

    setup_imports()
    model_name = config.model
    model_class = registry.require("model", model_name)
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
    encoder_class = registry.require("encoder", encoder_type)
    params = config.get("params", None) or OmegaConf.create({})
    return encoder_class(params)


def build_processor(config: DictConfig, *args: Any, **kwargs: Any) -> Any:
    """The processor registered under ``config.type``, built with ``config.params``."""
    if "type" not in config:
        raise AttributeError("a processor config needs a 'type' naming the processor")
    processor_class = registry.require("processor", config.type)
    params = config.get("params", None)
    return processor_class(params if params is not None else OmegaConf.create({}), *args, **kwargs)


def build_processors(processors_config: DictConfig, **extra: Any) -> dict[str, Any]:
    """Build every processor in ``dataset_config.<name>.processors``."""
    from minimmf.utils.env import setup_imports

    setup_imports()
    return {name: build_processor(processor_config, **extra) for name, processor_config in processors_config.items()}


def build_dataset(dataset_key: str, config: Any = None, dataset_type: str = "train") -> Dataset:
    """The ``dataset_type`` split (train, val or test) of the dataset
    registered as ``dataset_key``, as MMF's ``build_dataset``: a Dataset whose
    items are Samples, built without a trainer.

    ``config`` is the dataset's config (``dataset_config.<key>``), or a node
    holding it under ``dataset_key`` (``dataset_config``), or a complete run
    config; without it, the dataset's defaults (with ``env`` from
    minimmf's defaults and the ``MMF_*`` environment variables)."""
    from minimmf.utils.configuration import build_config
    from minimmf.utils.env import setup_imports

    setup_imports()
    builder = registry.require("builder", dataset_key)()
    if not config:
        config = build_config(overrides=[f"dataset={dataset_key}"]).dataset_config[dataset_key]
    elif "dataset_config" in config:
        config = config.dataset_config[dataset_key]
    elif dataset_key in config:
        config = config[dataset_key]
    if not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    return builder.load(config, dataset_type)


def dataloader_options(dataset_config: Any, training_config: Any, device: torch.device) -> dict[str, Any]:
    """The DataLoader settings MMF reads (``build_dataloader_and_sampler``):
    ``num_workers``, ``pin_memory`` and ``persistent_workers`` from the
    dataset's config when it sets them, else from ``training``; plus
    ``training.prefetch_factor`` (ours). Pinning only applies with a CUDA
    device; persistent workers and prefetching only with workers."""
    def setting(name: str, default: Any) -> Any:
        value = dataset_config.get(name, None) if dataset_config is not None else None
        return value if value is not None else training_config.get(name, default)

    workers = int(setting("num_workers", 4))
    options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda" and bool(setting("pin_memory", False)),
        "persistent_workers": workers > 0 and bool(setting("persistent_workers", True)),
    }
    prefetch = setting("prefetch_factor", None)
    if workers > 0 and prefetch is not None:
        options["prefetch_factor"] = int(prefetch)
    return options


def build_optimizer(model: nn.Module, config: DictConfig) -> Any:
    """``config.optimizer`` ({type, params}) over the model's parameter groups;
    ``type`` is a registered name or, as in MMF, a ``torch.optim`` class name."""
    optimizer_config = config.optimizer
    optimizer_type = optimizer_config.type
    optimizer_class = getattr(torch.optim, optimizer_type, None) or registry.require("optimizer", optimizer_type)
    params = dict(optimizer_config.get("params", None) or {})
    groups = model.get_optimizer_parameters(config) if hasattr(model, "get_optimizer_parameters") \
        else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    check_unused_parameters(model, groups, bool(optimizer_config.get("allow_unused_parameters", False)))
    return optimizer_class(groups, **params)


def check_unused_parameters(model: nn.Module, groups: list[dict[str, Any]], allowed: bool) -> None:
    """As MMF: a trainable parameter the optimizer would never update is an
    error, unless ``optimizer.allow_unused_parameters``."""
    in_groups = {id(parameter) for group in groups for parameter in group["params"]}
    unused = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in in_groups]
    if not unused:
        return
    if not allowed:
        raise ConfigError(f"the optimizer would not update {len(unused)} trainable parameter(s) of the model: "
                          f"{', '.join(unused[:10])}; check the model's get_optimizer_parameters, or set "
                          "optimizer.allow_unused_parameters=True if that is intended")
    logger.info("parameters the optimizer does not update: %s", ", ".join(unused))


def build_scheduler(optimizer: Any, config: DictConfig) -> Any:
    """``config.scheduler`` when ``training.lr_scheduler`` is on, else None."""
    if not config.training.get("lr_scheduler", False):
        return None
    scheduler_config = config.get("scheduler", None) or {}
    scheduler_type = scheduler_config.get("type")
    scheduler_fn = registry.require("scheduler", scheduler_type)
    return scheduler_fn(optimizer, **dict(scheduler_config.get("params", None) or {}))
