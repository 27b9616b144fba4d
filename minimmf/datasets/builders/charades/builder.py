"""The ``charades`` dataset builder: its splits, the checks of its config, and
what a served Charades model needs (``BaseDatasetBuilder``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from minimmf.common.registry import registry
from minimmf.datasets.base_dataset_builder import BaseDatasetBuilder
from minimmf.datasets.builders.charades import config_checks
from minimmf.datasets.builders.charades.dataset import CharadesDataset, CharadesSampleMaker
from minimmf.datasets.builders.charades.layout import read_action_labels
from minimmf.datasets.processors.bert_processors import VOCAB_FILE_NAME
from minimmf.datasets.video_clips import DecodeLimits
from minimmf.utils.build import build_processors


@registry.register_builder("charades")
class CharadesBuilder(BaseDatasetBuilder):
    dataset_name = "charades"
    dataset_class = CharadesDataset
    # the reference example shipped the labels file with the second spelling too
    legacy_files = {"labels": ("charades_action_labels.csv", "charades_action_lables.csv"),
                    "vocabulary": (VOCAB_FILE_NAME,)}

    @classmethod
    def config_path(cls) -> str:
        return "configs/datasets/charades/defaults.yaml"

    def load(self, dataset_config: DictConfig, dataset_type: str) -> CharadesDataset:
        """The split ``dataset_type`` (train, val or test) of the dataset."""
        return self.dataset_class(dataset_config, dataset_type)

    @classmethod
    def check_config(cls, dataset_config: DictConfig, prefix: str) -> list[str]:
        return config_checks.check_dataset_config(dataset_config, prefix)

    @classmethod
    def check_data(cls, config: DictConfig, splits: Sequence[str], num_labels: int | None, labels_key: str) -> None:
        config_checks.check_dataset_files(config.dataset_config.charades, splits, num_labels, labels_key,
                                          str(config.env.data_dir))

    @classmethod
    def config_for_inference(cls, dataset_config: DictConfig, vocabulary: Path | None) -> DictConfig:
        """The text processor reads the archived vocabulary (else it resolves its tokenizer offline)."""
        dataset_config = config_checks.with_current_names(dataset_config, warn=False)
        if vocabulary is not None:
            dataset_config.processors.text_processor.params.tokenizer_config.type = str(vocabulary)
        return dataset_config

    @classmethod
    def inference_sample_maker(cls, dataset_config: DictConfig, limits: DecodeLimits) -> CharadesSampleMaker:
        return CharadesSampleMaker(build_processors(dataset_config.processors), "test",
                                   int(dataset_config.get("frames_per_clip", 16)), limits)

    @classmethod
    def read_class_list(cls, path: str | os.PathLike) -> list[str]:
        return read_action_labels(path)

    @classmethod
    def describe_inputs(cls, dataset_config: DictConfig) -> dict[str, Any]:
        text_params = dataset_config.processors.text_processor.params
        return {"frames_per_clip": int(dataset_config.get("frames_per_clip", 16)),
                "max_seq_length": int(text_params.max_seq_length)}
