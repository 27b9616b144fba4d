"""MMF-style configuration assembly.

The complete config of a run is, merged in this order (later wins):

1. ``minimmf/configs/defaults.yaml``;
2. the model's default config (``model=mmf_transformer``);
3. each dataset's default config (``dataset=charades``);
4. the experiment file (``config=...``) with its ``includes:`` chain;
5. command-line overrides in dot notation (``training.batch_size=4``).

Lists are replaced on merge, never merged item by item (OmegaConf's rule,
which MMF relies on). ``${...}`` interpolations are resolved at the end.
"""

from __future__ import annotations

import ast
import collections.abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from minimmf.common.registry import UnknownComponentError, registry
from minimmf.utils.general import get_minimmf_root


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def load_yaml(path: str | os.PathLike) -> DictConfig:
    """Load a YAML file and the files its ``includes:`` list names.

    An include is looked up relative to the minimmf package first (as MMF
    does with its root), then relative to the including file.
    """
    path = find_config_file(path)
    mapping = OmegaConf.load(path)
    if mapping is None:
        mapping = OmegaConf.create()
    includes = mapping.pop("includes", [])
    if not isinstance(includes, (list, ListConfig)):
        raise ConfigError(f"{path}: 'includes' must be a list, got {type(includes).__name__}")
    merged = OmegaConf.create()
    for include in includes:
        merged = OmegaConf.merge(merged, load_yaml(_resolve_include(str(include), path)))
    return OmegaConf.merge(merged, mapping)


def find_config_file(path: str | os.PathLike, user_dir: str | None = None) -> Path:
    """``path`` as MMF resolves it: as given (absolute or from the current
    directory), then inside ``user_dir``, then from the package, which holds
    the projects' configs (``projects/...``, shipped in the wheel as MMF ships
    its own), so the documented commands work from any directory."""
    given = Path(path)
    roots = [Path.cwd(), *([Path(user_dir)] if user_dir else []), get_minimmf_root()]
    # each folder once (minimmf/projects links to the checkout's projects/)
    candidates = [given] if given.is_absolute() else list(dict.fromkeys((root / given).resolve() for root in roots))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(candidate.parent) for candidate in candidates)
    raise FileNotFoundError(f"config file not found: {path} (looked in {looked})")


def _resolve_include(include: str, including_file: Path) -> Path:
    in_package = get_minimmf_root() / include
    if in_package.is_file():
        return in_package
    relative = including_file.parent / include
    if relative.is_file():
        return relative
    raise FileNotFoundError(
        f"{including_file}: include {include!r} not found in {get_minimmf_root()} "
        f"nor next to the including file"
    )


def build_config(
    config_path: str | os.PathLike | None = None,
    overrides: Sequence[str] | None = None,
) -> DictConfig:
    """The complete, resolved config of a run (what ``mmf_run`` saves).

    ``overrides`` are ``key=value`` strings; ``model=`` and ``dataset=`` pick
    the default configs to include. Without them, the experiment file's own
    ``model`` / ``datasets`` keys are used (so a saved ``config.yaml`` can be
    fed back in), and ``mmf_transformer`` / ``charades`` otherwise.
    """
    import minimmf.utils.env as env

    env.setup_imports()
    register_resolvers()
    overrides = list(overrides or [])
    pairs = _split_overrides(overrides)
    options = dict(pairs)
    if config_path is None:
        config_path = options.get("config")
    user_dir = _user_dir(options)
    user_config = load_yaml(find_config_file(config_path, user_dir)) if config_path else OmegaConf.create()
    # the user's components must be registered before the model and dataset defaults are looked up
    env.import_user_dir(_user_dir(options, user_config))

    model = options.get("model") or user_config.get("model") or "mmf_transformer"
    datasets = (
        options.get("datasets")
        or options.get("dataset")
        or user_config.get("datasets")
        or "charades"
    )
    config = OmegaConf.merge(
        load_yaml(get_minimmf_root() / "configs" / "defaults.yaml"),
        _default_config("model", "model", model),
        *[_default_config("builder", "dataset", name) for name in _dataset_names(datasets)],
        user_config,
    )
    config.model = model
    config.datasets = ",".join(_dataset_names(datasets))
    if config_path:
        config.config = str(config_path)
    merge_dotlist(config, [(k, v) for k, v in pairs if k not in ("model", "dataset", "datasets", "config")])
    try:
        resolved = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except Exception as error:  # omegaconf raises several error types here
        raise ConfigError(f"cannot resolve the config: {error}") from error
    return OmegaConf.create(resolved)


def _user_dir(options: dict[str, str], user_config: DictConfig | None = None) -> str | None:
    """``env.user_dir`` as MMF picks it before the config is complete: the
    command line, then the experiment file, then ``MMF_USER_DIR``."""
    from_file = OmegaConf.select(user_config, "env.user_dir", default=None) if user_config is not None else None
    return options.get("env.user_dir") or from_file or os.environ.get("MMF_USER_DIR") or None


def _device_count() -> int:
    return max(1, torch.cuda.device_count())


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def register_resolvers() -> None:
    """MMF's ``${device_count:}`` (the visible GPUs, at least 1), and
    ``${default_device:}`` (cuda where a GPU is visible, else cpu)."""
    if not OmegaConf.has_resolver("device_count"):
        OmegaConf.register_resolver("device_count", _device_count)
    if not OmegaConf.has_resolver("default_device"):
        OmegaConf.register_resolver("default_device", _default_device)


def _dataset_names(datasets: Any) -> list[str]:
    if isinstance(datasets, (list, ListConfig)):
        return [str(d) for d in datasets]
    return [name.strip() for name in str(datasets).split(",") if name.strip()]


def _default_config(kind: str, option: str, name: str) -> DictConfig:
    """The default config of the model or dataset named on the command line."""
    try:
        return load_yaml(registry.require(kind, name).config_path())
    except UnknownComponentError as error:
        raise ConfigError(f"{option}={name!r}: {error}") from None


def _split_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    return pairs


def merge_dotlist(config: DictConfig, pairs: Sequence[tuple[str, str]]) -> DictConfig:
    """Apply ``a.b[0].c=value`` overrides in place; unknown keys are errors."""
    for key, raw_value in pairs:
        node: Any = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            name, index = _parse_part(part, key)
            last = depth == len(parts) - 1
            if not isinstance(node, (DictConfig, dict)) or name not in node:
                where = ".".join(parts[:depth]) or "the top level"
                known = sorted(node.keys()) if isinstance(node, (DictConfig, dict)) else []
                raise ConfigError(
                    f"unknown config key {key!r}: {name!r} does not exist under {where}"
                    + (f" (known keys: {', '.join(map(str, known))})" if known else "")
                )
            if index is None:
                if last:
                    node[name] = decode_value(raw_value)
                else:
                    node = node[name]
                continue
            sequence = node[name]
            if not isinstance(sequence, (ListConfig, list)) or not -len(sequence) <= index < len(sequence):
                raise ConfigError(f"config key {key!r}: {name}[{index}] does not exist")
            if last:
                sequence[index] = decode_value(raw_value)
            else:
                node = sequence[index]
    return config


def _parse_part(part: str, key: str) -> tuple[str, int | None]:
    if "[" not in part:
        return part, None
    if not part.endswith("]"):
        raise ConfigError(f"config key {key!r}: bad index in {part!r}")
    name, index = part[:-1].split("[", 1)
    try:
        return name, int(index)
    except ValueError:
        raise ConfigError(f"config key {key!r}: index {index!r} is not an integer") from None


def decode_value(value: str) -> Any:
    """Turn a command-line string into a Python value, as MMF does."""
    lowered = value.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    try:
        decoded = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    if isinstance(decoded, collections.abc.Set):
        return value
    return decoded


RUN_TYPES = ("train", "val", "test", "inference")


def parse_run_type(run_type: str) -> set[str]:
    """``train_val`` -> {"train", "val"}; ``inference`` means val and test."""
    parts = set(str(run_type).split("_"))
    unknown = parts - set(RUN_TYPES)
    if not parts or unknown:
        raise ConfigError(f"run_type={run_type!r}: unknown part(s) {sorted(unknown)}; use train, val, test "
                          "or an _-joined combination such as train_val")
    if "inference" in parts:
        parts = (parts - {"inference"}) | {"val", "test"}
    return parts


def splits_to_load(run_types: set[str]) -> list[str]:
    """The dataset splits a run reads: training also evaluates on val."""
    return sorted(run_types | {"val"} if "train" in run_types else run_types)


def dataset_names(config: DictConfig) -> list[str]:
    return [name for name in str(config.datasets).split(",") if name]
