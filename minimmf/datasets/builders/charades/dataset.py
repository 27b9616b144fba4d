"""The Charades dataset: one sample per video, with its 16-frame clip (or
``frames_per_clip``), its audio, its script and its multi-hot actions."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from minimmf.common.sample import Sample
from minimmf.datasets.builders.charades._utils import CharadesLayout, read_classes_file
from minimmf.datasets.builders.charades.video_clips import (
    UNBOUNDED,
    DecodedClip,
    DecodeLimits,
    VideoDecodeError,
    VideoSource,
    decode_clip,
)
from minimmf.serving.answers import labels_above
from minimmf.utils.build import build_processors

logger = logging.getLogger(__name__)


class CharadesSampleMaker:
    """A video (path or bytes) and its script -> a Sample with ``video``,
    ``audio`` and the text fields: the one way both training and serving
    turn inputs into model tensors.

    The video pipeline runs in two parts when it can (see
    ``VideoTransforms.split_per_frame``): its per-frame part on each kept
    frame as it is decoded, the rest on the clip. ``limits`` bound the
    decoding of untrusted videos."""

    def __init__(self, processors: dict[str, Any], dataset_type: str, frames_per_clip: int = 16,
                 limits: DecodeLimits = UNBOUNDED):
        video_key = "video_train_processor" if dataset_type == "train" else "video_test_processor"
        self.video_processor = processors[video_key]
        self.audio_processor = processors["audio_processor"]
        self.text_processor = processors["text_processor"]
        self.frames_per_clip = frames_per_clip
        self.limits = limits
        # decode no more audio than the pipeline looks at
        self.audio_samples_needed = getattr(self.audio_processor, "samples_needed", None)
        split = getattr(self.video_processor, "split_per_frame", lambda: None)()
        self.per_frame, self.on_clip = split if split is not None else (None, self.video_processor)

    def _frame_to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the per-frame part's (C, h, w) output."""
        return self.per_frame(torch.from_numpy(frame)[None])[:, 0]

    def decode(self, source: VideoSource) -> DecodedClip:
        frame_transform = self._frame_to_tensor if self.per_frame is not None else None
        return decode_clip(source, self.frames_per_clip, self.audio_samples_needed, self.limits, frame_transform)

    def video_tensor(self, clip: DecodedClip) -> torch.Tensor:
        """The model's video input from a decoded clip."""
        if self.per_frame is None:
            return self.on_clip(clip.video)
        return self.on_clip(clip.video.permute(1, 0, 2, 3))  # (T, C, h, w) frames -> (C, T, h, w)

    def from_clip(self, clip: DecodedClip, script: str) -> Sample:
        sample = Sample()
        sample.video = self.video_tensor(clip)
        sample.audio = self.audio_processor(clip.audio)
        sample.update(self.text_processor({"text": script}))
        return sample

    def __call__(self, source: VideoSource, script: str) -> Sample:
        return self.from_clip(self.decode(source), script)


class CharadesDataset(Dataset):
    dataset_name = "charades"

    def __init__(self, config: DictConfig, dataset_type: str):
        super().__init__()
        self.config = config
        self.dataset_type = dataset_type
        self.frames_per_clip = int(config.get("frames_per_clip", 16))
        self.prediction_threshold = float(config.get("prediction_threshold", 0.5))
        self.layout = CharadesLayout.from_config(config)
        # class index = alphabetical order of the class names, the same in every split
        self.classes = sorted(read_classes_file(self.layout.classes_file).values())
        self.idx_to_class = self.classes
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.df = self.layout.read_split(dataset_type)
        self.init_processors()

    def init_processors(self) -> None:
        processors = build_processors(self.config.processors)
        for name, processor in processors.items():
            setattr(self, name, processor)
        self.processors = processors
        self.sample_maker = CharadesSampleMaker(processors, self.dataset_type, self.frames_per_clip)

    def __len__(self) -> int:
        return len(self.df)

    def targets_for(self, labels: list[str]) -> torch.Tensor:
        one_hot = torch.zeros(len(self.classes))
        one_hot[[self.class_to_idx[name] for name in labels]] = 1
        return one_hot

    def __getitem__(self, idx: int) -> Sample:
        row = self.df.iloc[idx]
        try:
            sample = self.sample_maker(row["path"], row["script"])
        except VideoDecodeError as error:
            raise VideoDecodeError(f"{row['path']}: {error}") from error
        sample.id = row["id"]
        sample.targets = self.targets_for(row["action_labels"])
        return sample

    def format_for_prediction(self, ids: list[Any], scores: torch.Tensor) -> list[dict[str, Any]]:
        """MMF's prediction format: the labels whose sigmoid reaches the threshold."""
        probabilities = torch.sigmoid(scores.float())
        return [{"id": item_id, "labels": labels_above(row, self.classes, self.prediction_threshold)}
                for item_id, row in zip(ids, probabilities, strict=True)]
