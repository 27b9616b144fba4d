"""The Charades dataset: one sample per video (in evaluation with
``clips`` > 1, one per clip), with its 16-frame clip (or
``frames_per_clip``), its audio, its script and its multi-hot actions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from minimmf.common.sample import Sample
from minimmf.datasets.base_dataset import BaseDataset
from minimmf.datasets.builders.charades import submissions
from minimmf.datasets.builders.charades.clip_cache import ClipCache
from minimmf.datasets.builders.charades.config_checks import with_current_names
from minimmf.datasets.builders.charades.evaluation import TimePointScores, VideoScores
from minimmf.datasets.builders.charades.layout import (
    CharadesLayout,
    parse_action_intervals,
    read_classes_file,
    write_action_labels_csv,
)
from minimmf.datasets.evaluation import EvaluationSet
from minimmf.datasets.video_clips import (
    UNBOUNDED,
    ChunkPlan,
    ClipPlan,
    DecodedChunk,
    DecodedClip,
    DecodeLimits,
    MMFClip,
    SpreadClips,
    TimelineWindows,
    VideoDecodeError,
    VideoSource,
    decode_chunk,
    decode_clips,
)
from minimmf.modules.predictions import check_pooling, labels_above
from minimmf.utils.build import build_processors
from minimmf.utils.file_io import atomic_write

logger = logging.getLogger(__name__)


class CharadesSampleMaker:
    """A video (path or bytes) and its script -> a Sample with ``video``,
    ``audio`` and the text fields: the one way both training and serving
    turn inputs into model tensors.

    The video pipeline runs in two parts when it can (see
    ``VideoTransforms.split_per_frame``): its per-frame part on the kept
    frames a few at a time while the video is decoded, the rest on the clip. ``limits`` bound the
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

    def cache_fingerprint(self) -> dict[str, Any] | None:
        """What, besides the video and the plan, fixes what ``decode_plan``
        returns (for the clip cache's key): the per-frame transforms and the
        audio samples read. None when that cannot be told (a video processor
        that splits but does not say how)."""
        if self.per_frame is None:
            video = "raw uint8 frames"
        elif hasattr(self.video_processor, "per_frame_specs"):
            video = [[name, params] for name, params in self.video_processor.per_frame_specs()]
        else:
            return None
        return {"frames": video, "audio_samples": self.audio_samples_needed}

    def transform_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 RGB frames -> what a decoded clip keeps of each: the
        per-frame part's (T, C, h, w) output, or the frames as they are."""
        if self.per_frame is None:
            return torch.from_numpy(frames)
        return self.per_frame(torch.from_numpy(frames)).permute(1, 0, 2, 3)

    def decode(self, source: VideoSource) -> DecodedClip:
        """MMF's clip of the video."""
        (clip,) = self.decode_plan(source, MMFClip(self.frames_per_clip))
        return clip

    def decode_plan(self, source: VideoSource, plan: ClipPlan) -> list[DecodedClip]:
        """Every clip ``plan`` asks for, in one decoding pass."""
        _, clips = decode_clips(source, plan, self.audio_samples_needed, self.limits, self.transform_frames)
        return clips

    def decode_chunk(self, source: VideoSource, plan: ChunkPlan, frame_size: tuple[int, int] | None = None,
                     audio_format: tuple[int, str] | None = None) -> DecodedChunk:
        """One chunk of a live stream, its kept frames transformed as ``decode_plan``'s."""
        return decode_chunk(source, plan, self.audio_samples_needed, self.limits, self.transform_frames, frame_size,
                            audio_format)

    def video_tensor(self, clip: DecodedClip) -> torch.Tensor:
        """The model's video input from a decoded clip."""
        if self.per_frame is None:
            return self.on_clip(clip.video)
        return self.on_clip(clip.video.permute(1, 0, 2, 3))  # (T, C, h, w) frames -> (C, T, h, w)

    def text_fields(self, script: str) -> dict[str, Any]:
        return self.text_processor({"text": script})

    def from_clip(self, clip: DecodedClip, script: str, text: dict[str, Any] | None = None) -> Sample:
        """The sample of a decoded clip and its script (``text``: the script's
        ``text_fields``, when several clips share them)."""
        sample = Sample()
        sample.video = self.video_tensor(clip)
        sample.audio = self.audio_processor(clip.audio)
        sample.update(text if text is not None else self.text_fields(script))
        return sample

    def __call__(self, source: VideoSource, script: str) -> Sample:
        return self.from_clip(self.decode(source), script)

    def blank_sample(self) -> Sample:
        """A sample of a black, silent clip and an empty script, through the
        same pipeline as a real one: the shapes and types of every request's
        samples, for warming a compiled model up before the first request."""
        frames = np.zeros((self.frames_per_clip, 120, 160, 3), dtype=np.uint8)
        video = self.transform_frames(frames)
        audio = torch.zeros(1, self.audio_samples_needed or 16000)
        clip = DecodedClip(video, audio, 16000, self.frames_per_clip, 25.0, 0.0, self.frames_per_clip / 25.0)
        return self.from_clip(clip, "")


def default_clip_cache_dir() -> str:
    """``${env.cache_dir}/charades_clips`` with env.cache_dir's default, for
    configs that do not set ``clip_cache_dir``."""
    return os.path.join(os.environ.get("MMF_CACHE_DIR", "./.cache/minimmf"), "charades_clips")


class CharadesDataset(BaseDataset):
    dataset_name = "charades"

    def __init__(self, config: DictConfig, dataset_type: str):
        super().__init__()
        self.config = config
        self.dataset_type = dataset_type
        self.frames_per_clip = int(config.get("frames_per_clip", 16))
        self.prediction_threshold = float(config.get("prediction_threshold", 0.5))
        self.layout = CharadesLayout.from_config(config)
        # class index = alphabetical order of the class names, the same in every split
        self.id_to_name = read_classes_file(self.layout.classes_file)
        self.classes = sorted(self.id_to_name.values())
        self.idx_to_class = self.classes
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        # evaluation keeps videos missing from the disk (scored as the devkit scores them); training skips them
        self.df = self.layout.read_split(dataset_type, require_videos=dataset_type == "train")
        # evaluation: clips pooled per video (1: MMF's one clip), and the timeline localization is scored on
        current = with_current_names(config, warn=False)
        self.clips = int(current.get("clips", 1))
        self.clip_pooling = check_pooling(str(current.get("clip_pooling", "max")))
        self.pooled = dataset_type != "train" and self.clips > 1
        self.item_plan = SpreadClips(self.clips, self.frames_per_clip) if self.pooled else MMFClip(self.frames_per_clip)
        self.timeline_plan = TimelineWindows(float(current.get("segment_seconds", 1.0)),
                                             int(current.get("max_segments", 64)), self.frames_per_clip)
        self.time_points = int((current.get("localization", None) or {}).get("time_points", 25))
        self.init_processors()

    def init_processors(self) -> None:
        processors = build_processors(self.config.processors)
        for name, processor in processors.items():
            setattr(self, name, processor)
        self.processors = processors
        self.sample_maker = CharadesSampleMaker(processors, self.dataset_type, self.frames_per_clip)
        self.clip_cache = self.build_clip_cache()

    def build_clip_cache(self) -> ClipCache | None:
        """The clip cache when ``cache_clips`` is on (None: decode every time, as MMF)."""
        if not self.config.get("cache_clips", False):
            return None
        fingerprint = self.sample_maker.cache_fingerprint()
        if fingerprint is None:
            logger.warning("cache_clips: the %s video processor does not say what its per-frame part is; "
                           "decoding every time", self.dataset_type)
            return None
        directory = self.config.get("clip_cache_dir", None) or default_clip_cache_dir()
        return ClipCache(directory, fingerprint, str(self.config.get("clip_cache_dtype", "float32")))

    def decode_plan(self, path: str, plan: ClipPlan, cached: bool = True) -> list[DecodedClip]:
        """The clips of ``plan`` from the video: from the clip cache when it is on and ``cached``."""
        if self.clip_cache is None or not cached:
            return self.sample_maker.decode_plan(path, plan)
        return self.clip_cache.clips(path, plan, lambda: self.sample_maker.decode_plan(path, plan))

    def __len__(self) -> int:
        return len(self.df)

    def targets_for(self, labels: list[str]) -> torch.Tensor:
        one_hot = torch.zeros(len(self.classes))
        one_hot[[self.class_to_idx[name] for name in labels]] = 1
        return one_hot

    def __getitem__(self, idx: int) -> Sample | list[Sample]:
        """The video's sample; in evaluation with ``clips`` > 1, one per clip (the same id)."""
        samples, _ = self._samples(idx, self.item_plan)
        return samples if self.pooled else samples[0]

    def _samples(self, idx: int, plan: ClipPlan, cached: bool = True) -> tuple[list[Sample], list[DecodedClip]]:
        """The samples of the clips ``plan`` asks for, decoded in one pass (or
        read from the clip cache), and the clips."""
        row = self.df.iloc[idx]
        try:
            clips = self.decode_plan(row["path"], plan, cached)
        except VideoDecodeError as error:
            raise VideoDecodeError(f"{row['path']}: {error}") from error
        text = self.sample_maker.text_fields(row["script"])
        targets = self.targets_for(row["action_labels"])
        samples = []
        for clip in clips:
            sample = self.sample_maker.from_clip(clip, row["script"], text)
            sample.id, sample.targets = row["id"], targets
            samples.append(sample)
        return samples, clips

    def video_length(self, idx: int) -> float | None:
        """The video's length in seconds as its annotations give it (None: not given)."""
        length = str(self.df.iloc[idx].get("length", "")).strip()
        return float(length) if length else None

    def time_points_of(self, idx: int, length: float) -> list[float]:
        """Charades' localization time points: point j at (j / time_points) * length, in that order."""
        return [j / self.time_points * length for j in range(self.time_points)]

    def time_point_targets(self, idx: int, times: list[float]) -> torch.Tensor:
        """(time points, classes): the actions whose start and end (inclusive) hold each time point."""
        actions = parse_action_intervals(self.df.iloc[idx]["actions"], self.id_to_name)
        return torch.stack([self.targets_for([name for name, start, end in actions if start <= t <= end])
                            for t in times])

    def timeline_item(self, idx: int) -> tuple[list[Sample], list[int], torch.Tensor]:
        """For Charades' localization score: the video's timeline windows (``segment_seconds``,
        ``max_segments``), the window each of its ``time_points`` falls in, and the actions at each."""
        # not cached: an entry would hold a clip per window (tens of clips per video)
        windows, clips = self._samples(idx, self.timeline_plan, cached=False)
        spans = [(clip.start, clip.end) for clip in clips]
        length = self.video_length(idx)
        times = self.time_points_of(idx, length if length is not None else spans[-1][1])
        window_of = [next((w for w, (_, end) in enumerate(spans) if t < end), len(spans) - 1) for t in times]
        return windows, window_of, self.time_point_targets(idx, times)

    def evaluation_sets(self) -> dict[str, EvaluationSet]:
        """The ways evaluation scores this split: whole videos and the localization time points."""
        return {"videos": VideoScores(self), "time_points": TimePointScores(self)}

    def format_for_prediction(self, ids: list[Any], scores: torch.Tensor) -> list[dict[str, Any]]:
        """MMF's prediction format: the labels whose sigmoid reaches the threshold."""
        probabilities = torch.sigmoid(scores.double())
        return [{"id": item_id, "labels": labels_above(row, self.classes, self.prediction_threshold)}
                for item_id, row in zip(ids, probabilities, strict=True)]

    def prediction_entries(self) -> set[str]:
        """What the prediction files need: the videos' scores, and the time points' for a localization submission."""
        forms = self.devkit_submissions
        return {"ids", "scores"} | ({"time_point_scores"} if "localize" in forms else set())

    @property
    def devkit_submissions(self) -> list[str]:
        """The devkit forms to write (both for a config saved before the setting existed)."""
        forms = self.config.get("devkit_submissions", submissions.FORMS)
        return list(forms if forms is not None else submissions.FORMS)

    def write_prediction_files(self, entries: dict[str, Any], folder: Path, stem: str) -> list[Path]:
        """The official devkit's submission files (``devkit_submissions``), see ``submissions``."""
        if not self.devkit_submissions:
            return []
        columns = submissions.class_columns(self.id_to_name, self.class_to_idx)
        settings = {"split": self.dataset_type, "clips": self.clips, "clip_pooling": self.clip_pooling,
                    "frames_per_clip": self.frames_per_clip, "segment_seconds": self.timeline_plan.segment_seconds,
                    "max_segments": self.timeline_plan.max_segments, "time_points": self.time_points}
        return submissions.write_submissions(folder, stem, self.devkit_submissions, entries, columns, settings)

    def inference_files(self, folder: str | os.PathLike) -> dict[str, str]:
        """Write what a served model needs besides its weights and config into
        ``folder``: the class list (in the labels-CSV format the handler reads,
        one row per class so that none is missing) and the tokenizer vocabulary.
        Returns them by role (``labels``, ``vocabulary``) as file names."""
        folder = Path(folder)
        labels = folder / f"{self.dataset_name}_action_labels.csv"
        with atomic_write(labels, newline="") as handle:
            write_action_labels_csv(pd.DataFrame({"action_labels": [[name] for name in self.classes]}), handle)
        files = {"labels": labels.name}
        if hasattr(self.text_processor, "save_vocabulary"):
            files["vocabulary"] = Path(self.text_processor.save_vocabulary(folder)).name
        return files

