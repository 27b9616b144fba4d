#!/usr/bin/env python
"""Write the top-level ``config.yaml``: the complete config of MMF's Charades
experiment (direct.yaml + model and dataset defaults), the one to archive
with MMF's published ``mmf_transformer_Charades_final.pth``."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from minimmf.utils.configuration import build_config

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "projects/mmf_transformer/configs/charades/direct.yaml"
HEADER = """\
# The complete, resolved config of MMF's Charades experiment
# (projects/mmf_transformer/configs/charades/direct.yaml with the model and
# dataset defaults), as `mmf_run` saves it to save/config.yaml. Archive it
# with MMF's published mmf_transformer_Charades_final.pth (157 classes).
# Regenerate it with: python scripts/write_charades_config.py
"""


def charades_config_text() -> str:
    config = build_config(ROOT / EXPERIMENT, ["model=mmf_transformer", "dataset=charades"])
    config.config = EXPERIMENT
    return HEADER + OmegaConf.to_yaml(config)


def main() -> int:
    (ROOT / "config.yaml").write_text(charades_config_text())
    print(f"wrote {ROOT / 'config.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
