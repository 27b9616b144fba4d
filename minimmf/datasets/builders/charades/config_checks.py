"""What ``mmf_run`` checks of ``dataset_config.charades`` before any work
starts (``CharadesBuilder.check_config`` and ``check_data``), and the keys
renamed so that evaluation and serving use one name for one idea."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from minimmf.datasets.builders.charades.clip_cache import DTYPES as CLIP_CACHE_DTYPES
from minimmf.datasets.builders.charades.layout import read_classes_file
from minimmf.datasets.builders.charades.submissions import FORMS as SUBMISSION_FORMS
from minimmf.modules.predictions import CLIP_POOLINGS
from minimmf.utils.configuration import ConfigError

logger = logging.getLogger(__name__)

# old key -> the key it is now (the handler's names): the old ones still work, with a warning
RENAMED = {
    "eval_clips": "clips",
    "localization.segment_seconds": "segment_seconds",
    "localization.max_segments": "max_segments",
}


def with_current_names(dataset_config: DictConfig, warn: bool = True) -> DictConfig:
    """``dataset_config`` with every renamed key set under its current name
    (an old key that is set wins, with a warning)."""
    for old, new in RENAMED.items():
        value = OmegaConf.select(dataset_config, old, default=None)
        if value is None:
            continue
        if warn:
            logger.warning("dataset_config.charades.%s is now called dataset_config.charades.%s (as the handler "
                           "setting); please rename it", old, new)
        dataset_config = dataset_config.copy()
        OmegaConf.update(dataset_config, new, value)
        OmegaConf.update(dataset_config, old, None)
    return dataset_config


def check_dataset_config(dataset_config: DictConfig, prefix: str) -> list[str]:
    """Raise a ConfigError for a value the dataset cannot use; the warnings to log."""
    warnings = [f"{prefix}.{old} is now called {prefix}.{new}; please rename it" for old, new in RENAMED.items()
                if OmegaConf.select(dataset_config, old, default=None) is not None]
    config = with_current_names(dataset_config, warn=False)
    if not isinstance(config.get("cache_clips", False), bool):
        raise ConfigError(f"{prefix}.cache_clips={config.cache_clips!r}: expected true or false")
    dtype = config.get("clip_cache_dtype", "float32")
    if dtype not in CLIP_CACHE_DTYPES:
        raise ConfigError(f"{prefix}.clip_cache_dtype={dtype!r}: use float32 (exact) or uint8 (4x smaller, "
                          "rounded to 1/255)")
    if config.get("cache_clips", False) and not config.get("clip_cache_dir", None):
        raise ConfigError(f"{prefix}.cache_clips=true needs {prefix}.clip_cache_dir (a folder)")
    if config.get("clip_pooling", "max") not in CLIP_POOLINGS:
        raise ConfigError(f"{prefix}.clip_pooling={config.clip_pooling!r}: use {' or '.join(CLIP_POOLINGS)}")
    for key in ("clips", "max_segments", "frames_per_clip"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{prefix}.{key}={value!r}: expected an integer >= 1")
    forms = config.get("devkit_submissions", None) or []
    if not isinstance(forms, (list, ListConfig)) or not set(forms) <= set(SUBMISSION_FORMS):
        shown = OmegaConf.to_container(forms) if OmegaConf.is_config(forms) else forms
        raise ConfigError(f"{prefix}.devkit_submissions={shown!r}: a list of {' and '.join(SUBMISSION_FORMS)}, "
                          "or [] for none")
    seconds = config.get("segment_seconds", 1.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigError(f"{prefix}.segment_seconds={seconds!r}: expected a number of seconds > 0")
    return warnings


def dataset_files(dataset_config: DictConfig, splits: Sequence[str]) -> list[Path]:
    """The class list, annotation files and video folders ``splits`` read."""
    root = Path(dataset_config.data_dir)
    files = [root / dataset_config.classes_file]
    for key in ("annotations", "videos"):
        for split in splits:
            files += [root / str(item) for item in dataset_config.get(key, {}).get(split, None) or []]
    return files


def check_dataset_files(dataset_config: DictConfig, splits: Sequence[str], num_labels: int | None,
                        labels_key: str, env_data_dir: str) -> None:
    for path in dataset_files(dataset_config, splits):
        if not path.exists():
            raise ConfigError(missing_data_message(dataset_config, path, env_data_dir))
    classes_file = Path(dataset_config.data_dir) / dataset_config.classes_file
    num_classes = len(read_classes_file(classes_file))
    if num_labels is not None and num_labels != num_classes:
        raise ConfigError(f"{labels_key}={num_labels} but the charades data has {num_classes} classes "
                          f"({classes_file}); set {labels_key}={num_classes}")


def missing_data_message(dataset_config: DictConfig, missing: Path, env_data_dir: str) -> str:
    return (f"the charades dataset is not where the config says: {missing} does not exist. It is read under "
            f"dataset_config.charades.data_dir={dataset_config.data_dir}, i.e. under env.data_dir (now "
            f"{env_data_dir}; the MMF_DATA_DIR environment variable sets it too). Point env.data_dir at your copy "
            "of the data, or make the synthetic set there with this project's script: python "
            f"scripts/make_synthetic_charades.py --out {env_data_dir}")
