"""What ``mmf_run`` checks before any work starts, so that a mistake ends in
one clear message instead of a traceback minutes later:

- every value the run uses is one it can use (``check_config``), and the
  features MMF has that cannot apply here are refused by name;
- the data is where the config says, with as many classes as the model's
  heads have labels, and the checkpoint to start from exists (``check_data``).

``config_warnings`` names the keys a config changes that have no effect on
this model (in MMF either), so that nothing is ignored silently.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from minimmf.common.registry import registry
from minimmf.common.test_reporter import REQUIRED_CANDIDATE_FIELDS
from minimmf.modules.losses import loss_name
from minimmf.modules.metrics import build_metrics
from minimmf.utils import distributed
from minimmf.utils.checkpoint import checkpoint_to_load
from minimmf.utils.configuration import (
    ConfigError,
    dataset_names,
    load_yaml,
    parse_run_type,
    splits_to_load,
)
from minimmf.utils.early_stopping import check_criteria
from minimmf.utils.general import get_minimmf_root
from minimmf.utils.logger import LOG_FORMATS, LOG_LEVELS

_POSITIVE_INTS = ("training.batch_size", "training.max_updates", "training.log_interval",
                  "training.evaluation_interval", "training.checkpoint_interval", "training.update_frequency")
_NON_NEGATIVE_INTS = ("training.num_workers", "training.early_stop.patience")

# key -> (the values minimmf runs with, why other values cannot apply here)
_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "training.trainer": (("mmf",), "PyTorch Lightning is not part of minimmf"),
    "trainer.type": (("mmf",), "PyTorch Lightning is not part of minimmf (a config saved by MMF carries MMF's "
                               "default `lightning` here: set trainer.type=mmf, as MMF runs its mmf trainer "
                               "when training.trainer=mmf)"),
    "training.device": (("cuda", "cpu"), "xla (TPUs) is not part of minimmf"),
    "training.log_format": (LOG_FORMATS, "MMF's formats"),
    "training.logger_level": (LOG_LEVELS, "Python's logging levels"),
    "training.clip_norm_mode": (("all",), "MMF implements only the norm over all parameters"),
    "evaluation.predict_file_format": (("json", "csv"), "MMF's file reporter writes these"),
    "evaluation.reporter.type": (("file", "default"), "MMF's file reporter is the one reporter here"),
}

# features that cannot apply here when turned on: key -> why, and what to do instead
_REFUSED_WHEN_SET = {
    "training.wandb.enabled": "Weights & Biases logging is not part of minimmf (wandb is not installed with it); "
                              "use training.tensorboard=true",
    "training.callbacks": "minimmf's trainer takes no user callbacks; register your components (models, "
                          "losses, metrics) from env.user_dir instead",
    "optimizer.enable_state_sharding": "ZeRO optimizer state sharding needs fairscale, which is not part of minimmf",
}

# keys with no effect on this model, in MMF either: key -> why
_NO_EFFECT = {
    "training.fast_read": "the charades dataset decodes each video when it is read (MMF's too)",
    "training.dataset_size_proportional_sampling": "minimmf trains on one dataset",
    "multitasking": "minimmf trains on one dataset",
    "training.lr_steps": "deprecated in MMF and unused by its trainer; use scheduler",
    "training.lr_ratio": "deprecated in MMF and unused by its trainer; use scheduler",
    "training.use_warmup": "deprecated in MMF and unused by its trainer; use scheduler",
    "training.warmup_factor": "deprecated in MMF and unused by its trainer; use scheduler",
    "training.warmup_iterations": "deprecated in MMF and unused by its trainer; use scheduler",
    "training.local_rank": "each process's GPU comes from LOCAL_RANK (torchrun, or mmf_run's own processes)",
    "training.verbose_dump": "the charades dataset has nothing to dump (MMF's neither)",
    "training.wandb.entity": "only used with training.wandb.enabled",
    "training.wandb.project": "only used with training.wandb.enabled",
    "training.wandb.log_checkpoint": "only used with training.wandb.enabled",
    "env.wandb_logdir": "only used with training.wandb.enabled",
    "trainer.params": "settings of MMF's Lightning trainer; the mmf trainer reads training.*",
    "checkpoint.zoo_config_override": "only used with checkpoint.resume_zoo",
    "env.dataset_zoo": "only read by MMF to download from its zoo; nothing is downloaded here",
    "env.model_zoo": "only read by MMF to download from its zoo; nothing is downloaded here",
}


def check_config(config: DictConfig) -> None:
    """Raise a ``ConfigError`` naming the key for any value the run cannot use."""
    if not config.get("config"):
        raise ConfigError("config=<experiment yaml> is required, e.g. "
                          "config=projects/mmf_transformer/configs/charades/direct.yaml")
    run_types = parse_run_type(config.run_type)
    _check_numbers(config)
    _check_choices(config)
    _check_processes_and_batch(config)
    if len(dataset_names(config)) != 1:
        raise ConfigError(f"datasets={config.datasets!r}: minimmf trains on one dataset at a time "
                          "(MMF's multitasking over several is not part of it)")
    name = dataset_names(config)[0]
    dataset_builder(config).check_config(config.dataset_config[name], f"dataset_config.{name}")
    if config.training.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("training.tensorboard=true needs the tensorboard package: pip install tensorboard")
    if "train" in run_types:
        if not config.model_config[config.model].get("losses", None):
            raise ConfigError(f"model_config.{config.model}.losses is empty: training needs a loss, e.g. "
                              "[{type: logit_bce}]")
        check_criteria(str(config.training.early_stop.criteria), validation_report_keys(config))


def _lookup(config: DictConfig, dotted: str) -> Any:
    return OmegaConf.select(config, dotted, default=None)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_numbers(config: DictConfig) -> None:
    training = config.training
    for key in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value = _lookup(config, key)
        minimum = 1 if key in _POSITIVE_INTS else 0
        if key == "training.max_updates" and value is None and training.max_epochs is not None:
            continue
        if not _is_int(value, minimum):
            raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    if training.batch_size_per_device is not None and not _is_int(training.batch_size_per_device, 1):
        raise ConfigError(f"training.batch_size_per_device={training.batch_size_per_device!r}: expected null or "
                          "an integer >= 1")
    max_epochs = training.max_epochs
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, float))
                                   or max_epochs <= 0):
        raise ConfigError(f"training.max_epochs={max_epochs!r}: expected null or a positive number")
    prefetch = training.get("prefetch_factor", None)
    if prefetch is not None and not _is_int(prefetch, 1):
        raise ConfigError(f"training.prefetch_factor={prefetch!r}: expected null or an integer >= 1")
    if training.seed is not None and not _is_int(training.seed, -1):
        raise ConfigError(f"training.seed={training.seed!r}: expected an integer (-1 or null: pick one)")
    lr = _lookup(config, "optimizer.params.lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError(f"optimizer.params.lr={lr!r}: expected a positive number")


def _check_choices(config: DictConfig) -> None:
    for key, (allowed, why) in _CHOICES.items():
        value = _lookup(config, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: use {' or '.join(allowed)} ({why})")
    for key, why in _REFUSED_WHEN_SET.items():
        value = _lookup(config, key)
        if value:
            raise ConfigError(f"{key}={value!r} cannot apply here: {why}")
    reporter_params = config.evaluation.reporter.get("params", None) or {}
    unknown = set(reporter_params) - {"candidate_fields", "predict_file_format"}
    if unknown:
        raise ConfigError(f"evaluation.reporter.params: unknown key(s) {sorted(unknown)}; the file reporter takes "
                          "candidate_fields and predict_file_format")
    fields = reporter_params.get("candidate_fields", REQUIRED_CANDIDATE_FIELDS)
    if not set(REQUIRED_CANDIDATE_FIELDS) <= set(fields):
        raise ConfigError(f"evaluation.reporter.params.candidate_fields={list(fields)}: the charades predictions "
                          f"are made from {' and '.join(REQUIRED_CANDIDATE_FIELDS)}; keep them in the list")
    if reporter_params.get("predict_file_format", "json") not in ("json", "csv"):
        raise ConfigError("evaluation.reporter.params.predict_file_format: use json or csv")
    mapping = config.checkpoint.pretrained_state_mapping
    if not isinstance(mapping, DictConfig) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f"checkpoint.pretrained_state_mapping={_plain(mapping)!r}: expected {{<model prefix>: "
                          "<checkpoint prefix>, ...}, e.g. \"{'backend': 'backend'}\" on the command line")


def _check_processes_and_batch(config: DictConfig) -> None:
    for key, minimum in (("distributed.world_size", 1), ("distributed.rank", 0), ("distributed.port", -1)):
        if not _is_int(_lookup(config, key), minimum):
            raise ConfigError(f"{key}={_lookup(config, key)!r}: expected an integer >= {minimum}")
    world_size = distributed.planned_world_size(config)
    gpus = torch.cuda.device_count()
    if distributed.should_spawn(config) and config.training.device == "cuda" and 0 < gpus < world_size:
        raise ConfigError(f"distributed.world_size={world_size} but {gpus} GPU(s) are visible; set "
                          f"distributed.world_size={gpus} (or training.device=cpu for CPU processes)")
    batch_size = config.training.batch_size
    if config.training.batch_size_per_device is None and batch_size % world_size:
        raise ConfigError(f"training.batch_size={batch_size} is the global batch (as in MMF) and must divide "
                          f"among the {world_size} processes; set a multiple of {world_size}, or "
                          "training.batch_size_per_device")


def validation_report_keys(config: DictConfig) -> list[str]:
    """The keys a validation report will have: the model's losses, their total
    and the metrics, as MMF names them."""
    dataset = dataset_names(config)[0]
    model_config = config.model_config[config.model]
    try:
        metrics = build_metrics(config.evaluation.metrics)
    except ValueError as error:
        raise ConfigError(f"evaluation.metrics: {error}") from None
    losses = [loss_name(loss) for loss in model_config.get("losses", None) or []]
    keys = [f"val/{dataset}/{name}" for name in losses] + ["val/total_loss"]
    return keys + [f"val/{dataset}/{key}" for key, metric in metrics.items() if metric.applies_to(dataset)]


def dataset_builder(config: DictConfig) -> Any:
    """The builder class of the run's dataset (``datasets``), from the registry."""
    return registry.require("builder", dataset_names(config)[0])


def check_data(config: DictConfig) -> None:
    """The checkpoint to start from exists, and the dataset's files are where its
    config says, with as many classes as the model's head has labels."""
    checkpoint_to_load(config)
    num_labels, labels_key = _head_labels(config)
    dataset_builder(config).check_data(config, splits_to_load(parse_run_type(config.run_type)), num_labels,
                                       labels_key)


def _head_labels(config: DictConfig) -> tuple[int | None, str]:
    """The labels the model's first head with ``num_labels`` scores, and its key."""
    for index, head in enumerate(config.model_config[config.model].get("heads", None) or []):
        if head.get("num_labels", None) is not None:
            return int(head.num_labels), f"model_config.{config.model}.heads[{index}].num_labels"
    return None, f"model_config.{config.model}.heads[0].num_labels"


def config_warnings(config: DictConfig) -> list[str]:
    """One message per key this config changes from the defaults that has no
    effect on this model, and for clipping asked for without a norm."""
    defaults = load_yaml(get_minimmf_root() / "configs" / "defaults.yaml")
    messages = []
    for key, why in _NO_EFFECT.items():
        value = _lookup(config, key)
        if value != OmegaConf.select(defaults, key, default=None):
            messages.append(f"{key}={_plain(value)!r} has no effect here: {why}")
    name = dataset_names(config)[0]
    messages += dataset_builder(config).check_config(config.dataset_config[name], f"dataset_config.{name}")
    if config.training.clip_gradients and config.training.max_grad_l2_norm is None:
        messages.append("training.clip_gradients=true without training.max_grad_l2_norm: nothing is clipped "
                        "(as in MMF); set training.max_grad_l2_norm")
    return messages


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
