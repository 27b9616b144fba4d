"""The ``charades`` dataset builder."""

from __future__ import annotations

from minimmf.common.registry import registry


@registry.register_builder("charades")
class CharadesBuilder:
    dataset_name = "charades"

    @classmethod
    def config_path(cls) -> str:
        return "configs/datasets/charades/defaults.yaml"
