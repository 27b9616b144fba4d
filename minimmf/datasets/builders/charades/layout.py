"""Charades helpers shared by the dataset, the scripts and the handler:
where a dataset's files are (from ``dataset_config.charades``), and reading
its annotations and the action-labels CSV. Decoding a clip is in
``video_clips.py``."""

from __future__ import annotations

import ast
import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from minimmf.utils.general import get_minimmf_root

logger = logging.getLogger(__name__)

# the columns of Charades' annotation files (Charades_v1_train.csv, Charades_v1_test.csv), in order
CHARADES_CSV_COLUMNS = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                        "descriptions", "actions", "length"]


def read_classes_file(classes_file: str | os.PathLike) -> dict[str, str]:
    """``c000 Holding some clothes`` lines -> ``{"c000": "Holding some clothes"}``."""
    id_to_name = {}
    with open(classes_file, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            class_id, _, name = line.partition(" ")
            if not name:
                raise ValueError(f"{classes_file}: line {line!r} has no class name")
            id_to_name[class_id] = name
    return id_to_name


def parse_action_intervals(actions: object, id_to_name: dict[str, str]) -> list[tuple[str, float, float]]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> (action name, start, end) of each (empty if no actions)."""
    if not isinstance(actions, str) or not actions.strip():
        return []
    intervals = []
    for item in actions.split(";"):
        if item.strip():
            class_id, start, end = item.split()
            intervals.append((id_to_name[class_id], float(start), float(end)))
    return intervals


def takes_turns(intervals: list[tuple[str, float, float]]) -> bool:
    """Two or more actions, one after the other (none overlapping)."""
    ordered = sorted(intervals, key=lambda action: action[1])
    return len(ordered) >= 2 and all(first[2] <= second[1] for first, second in itertools.pairwise(ordered))


def parse_actions(actions: object, id_to_name: dict[str, str]) -> list[str]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> action names (empty if no actions)."""
    return [name for name, _, _ in parse_action_intervals(actions, id_to_name)]


def make_charades_df(csv_path: str | os.PathLike, video_dir: str | os.PathLike,
                     classes_file: str | os.PathLike, require_videos: bool = True) -> pd.DataFrame:
    """The Charades annotations with ``path`` and ``action_labels`` columns;
    rows whose video file is missing are dropped (and counted in the log)."""
    df = pd.read_csv(csv_path, dtype={"id": str, "script": str, "actions": str}, keep_default_na=False)
    id_to_name = read_classes_file(classes_file)
    df["path"] = [os.path.join(video_dir, f"{video_id}.mp4") for video_id in df["id"]]
    df["action_labels"] = [parse_actions(actions, id_to_name) for actions in df["actions"]]
    if require_videos:
        exists = df["path"].map(os.path.isfile)
        if not exists.all():
            logger.warning("%s: %d of %d videos are missing from %s; skipping them",
                           csv_path, int((~exists).sum()), len(df), video_dir)
        df = df[exists].reset_index(drop=True)
    return df


@dataclass(frozen=True)
class CharadesLayout:
    """Where a Charades dataset's files are, as ``dataset_config.charades``
    says: per split, its annotation CSVs and the folders of their videos."""

    annotations: Mapping[str, list[Path]]
    videos: Mapping[str, list[Path]]
    classes_file: Path

    @classmethod
    def from_config(cls, dataset_config: Any) -> CharadesLayout:
        root = Path(str(dataset_config.data_dir))
        return cls(
            annotations={split: [root / str(f) for f in files] for split, files in dataset_config.annotations.items()},
            videos={split: [root / str(d) for d in dirs] for split, dirs in dataset_config.videos.items()},
            classes_file=root / str(dataset_config.classes_file),
        )

    @classmethod
    def default(cls, data_dir: str | os.PathLike) -> CharadesLayout:
        """The layout of minimmf's Charades defaults with ``env.data_dir=data_dir``."""
        defaults = OmegaConf.load(get_minimmf_root() / "configs" / "datasets" / "charades" / "defaults.yaml")
        config = OmegaConf.merge({"env": {"data_dir": str(data_dir)}}, defaults)
        return cls.from_config(config.dataset_config.charades)

    def splits(self) -> list[str]:
        return list(self.annotations)

    def read_split(self, split: str, require_videos: bool = True) -> pd.DataFrame:
        """Every annotation file of ``split``, concatenated (MMF reads them all)."""
        if split not in self.annotations:
            raise ValueError(f"charades has no {split!r} split; splits: {self.splits()}")
        if len(self.annotations[split]) != len(self.videos.get(split, [])):
            raise ValueError(f"charades split {split!r} lists {len(self.annotations[split])} annotation file(s) "
                             f"but {len(self.videos.get(split, []))} video folder(s); give one folder per file")
        frames = [make_charades_df(csv_path, video_dir, self.classes_file, require_videos)
                  for csv_path, video_dir in zip(self.annotations[split], self.videos[split], strict=True)]
        return pd.concat(frames, ignore_index=True)


def write_action_labels_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """The reference's ``charades_action_labels.csv``: an index column and an
    ``action_labels`` column of Python list literals, one row per video."""
    labels = pd.Series([repr(list(labels)) for labels in df["action_labels"]], name="action_labels")
    labels.to_csv(path)


def read_action_labels(path: str | os.PathLike) -> list[str]:
    """The class list a labels CSV defines: the sorted set of its labels."""
    df = pd.read_csv(path, keep_default_na=False)
    if "action_labels" not in df.columns:
        raise ValueError(f"{path} has no 'action_labels' column")
    names: set[str] = set()
    for cell in df["action_labels"]:
        value = ast.literal_eval(cell) if cell else []
        if not isinstance(value, list):
            raise ValueError(f"{path}: action_labels cell {cell!r} is not a list")
        names.update(str(name) for name in value)
    if not names:
        raise ValueError(f"{path} lists no action labels")
    return sorted(names)
