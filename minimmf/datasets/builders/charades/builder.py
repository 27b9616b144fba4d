"""The ``charades`` dataset builder."""

from __future__ import annotations

from omegaconf import DictConfig

from minimmf.common.registry import registry
from minimmf.datasets.builders.charades.dataset import CharadesDataset


@registry.register_builder("charades")
class CharadesBuilder:
    dataset_name = "charades"
    dataset_class = CharadesDataset

    @classmethod
    def config_path(cls) -> str:
        return "configs/datasets/charades/defaults.yaml"

    def load(self, dataset_config: DictConfig, dataset_type: str) -> CharadesDataset:
        """The split ``dataset_type`` (train, val or test) of the dataset."""
        return self.dataset_class(dataset_config, dataset_type)
