"""``BaseDatasetBuilder``: what a dataset provides to the rest of minimmf,
found through the registry (``registry.require("builder", name)``), so that
the trainer, the config checks and serving never import a dataset's code.

- ``config_path`` and ``load``: the dataset's default config and its splits (MMF's);
- ``check_config`` and ``check_data``: what ``mmf_run`` checks before any work
  starts (the dataset's own keys; its files, and its classes against the model);
- ``config_for_inference``, ``inference_sample_maker`` and
  ``read_class_list``: what a served model needs to turn a request into
  model inputs exactly as evaluation does, and to name its outputs;
- ``legacy_files``: the names a ``save/`` folder without a run manifest
  (``minimmf.utils.manifest``) gives the class list and the vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from minimmf.common.sample import Sample
from minimmf.datasets.video_clips import ChunkPlan, ClipPlan, DecodedChunk, DecodedClip, DecodeLimits, VideoSource


class SampleMaker(Protocol):
    """Turns a video and its script into model inputs, as the dataset's evaluation split does;
    and a live stream's chunks into the frames and audio its windows are cut from."""

    frames_per_clip: int
    audio_samples_needed: int | None  # the samples from a clip's start its audio pipeline reads (None: all)

    def decode_plan(self, source: VideoSource, plan: ClipPlan) -> list[DecodedClip]: ...

    def decode_chunk(self, source: VideoSource, plan: ChunkPlan, frame_size: tuple[int, int] | None = None,
                     audio_format: tuple[int, str] | None = None) -> DecodedChunk: ...

    def transform_frames(self, frames: np.ndarray) -> torch.Tensor: ...

    def text_fields(self, script: str) -> dict[str, Any]: ...

    def from_clip(self, clip: DecodedClip, script: str, text: dict[str, Any] | None = None) -> Sample: ...

    def blank_sample(self) -> Sample: ...


class BaseDatasetBuilder:
    dataset_name = ""
    # role (labels, vocabulary) -> the file names save/ folders made before run manifests give it
    legacy_files: Mapping[str, Sequence[str]] = {}

    @classmethod
    def config_path(cls) -> str:
        """The dataset's default config, relative to the minimmf package."""
        raise NotImplementedError

    def load(self, dataset_config: DictConfig, dataset_type: str) -> Dataset:
        """The split ``dataset_type`` (train, val or test) of the dataset."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, dataset_config: DictConfig, prefix: str) -> list[str]:
        """Raise a ``ConfigError`` for a key of ``dataset_config`` (reached as
        ``prefix``) the dataset cannot use; return warnings to log."""
        return []

    @classmethod
    def check_data(cls, config: DictConfig, splits: Sequence[str], num_labels: int | None, labels_key: str) -> None:
        """Raise a ``ConfigError`` when the files of ``splits`` are missing, or
        when the model's ``num_labels`` (set at ``labels_key``) is not the
        dataset's number of classes; ``config`` is the run's whole config."""

    @classmethod
    def config_for_inference(cls, dataset_config: DictConfig, vocabulary: Path | None) -> DictConfig:
        """The dataset config a served model decodes and processes with; ``vocabulary``
        is the archived tokenizer vocabulary, if any."""
        return dataset_config

    @classmethod
    def inference_sample_maker(cls, dataset_config: DictConfig, limits: DecodeLimits) -> SampleMaker:
        """What turns a request's video and script into evaluation's samples, bounded by ``limits``."""
        raise NotImplementedError(f"the {cls.dataset_name} dataset cannot make samples for serving")

    @classmethod
    def read_class_list(cls, path: str | os.PathLike) -> list[str]:
        """The class names, in the model's output order, from the class list file a run saved."""
        raise NotImplementedError(f"the {cls.dataset_name} dataset has no class list file")

    @classmethod
    def describe_inputs(cls, dataset_config: DictConfig) -> dict[str, Any]:
        """The dataset's input sizes in brief, for serving's describe answer."""
        return {}
