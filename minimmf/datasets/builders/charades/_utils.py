"""Charades helpers shared by the dataset, the scripts and the handler:
where a dataset's files are (from ``dataset_config.charades``), reading the
annotations and the action-labels CSV, and decoding one clip.

Clip selection follows MMF's ``CharadesVideoClips``: ``frames_per_clip``
frames at indices ``round(linspace(0, n - 1, frames_per_clip))`` over the
whole video, ``n`` being its number of video packets with a timestamp.
Decoding streams: the frames are decoded in order with FFmpeg's threading,
only the kept ones are converted to RGB, and audio is decoded only up to the
number of samples the audio pipeline looks at, so memory does not grow with
the video's length.
"""

from __future__ import annotations

import ast
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from minimmf.utils.general import get_minimmf_root

logger = logging.getLogger(__name__)

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


class VideoDecodeError(ValueError):
    """The input cannot be decoded as a video; the message says why."""


@dataclass
class DecodedClip:
    video: torch.Tensor  # (frames_per_clip, H, W, 3) uint8 RGB
    audio: torch.Tensor  # (channels, samples) float32 in [-1, 1]; (1, 0) without audio
    audio_sample_rate: int | None
    num_video_frames: int  # frames in the whole video
    video_fps: float | None


def clip_frame_indices(num_frames: int, frames_per_clip: int) -> list[int]:
    """MMF's evenly spaced frame indices (repeats when the video is short)."""
    return torch.round(torch.linspace(0, num_frames - 1, frames_per_clip)).long().tolist()


def _open(source: VideoSource) -> av.container.InputContainer:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError("the video is empty (0 bytes)")
        source = io.BytesIO(bytes(source))
    elif hasattr(source, "seek"):
        source.seek(0)
    elif not Path(source).is_file():
        raise VideoDecodeError(f"video file not found: {source}")
    try:
        return av.open(source, mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(
            f"not a readable video container ({error}); send an mp4, mkv, mov, webm or avi"
        ) from error


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise VideoDecodeError(f"the file has no video stream (streams found: {kinds})")
    return container.streams.video[0]


def count_video_frames(source: VideoSource) -> int:
    """Video packets with a timestamp: what MMF counts as the video's frames."""
    with _open(source) as container:
        stream = _video_stream(container)
        try:
            return sum(1 for packet in container.demux(stream) if packet.pts is not None)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"the video is corrupted ({error})") from error


class _AudioCollector:
    """Decoded audio as float32 (channels, samples), up to ``limit`` samples."""

    def __init__(self, stream: av.audio.stream.AudioStream | None, limit: int | None):
        self.stream, self.limit = stream, limit
        self.chunks: list[np.ndarray] = []
        self.collected = 0
        if stream is not None:
            self.resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)

    @property
    def done(self) -> bool:
        return self.stream is None or (self.limit is not None and self.collected >= self.limit)

    def add(self, packet: av.Packet) -> None:
        for frame in packet.decode():
            for converted in self.resampler.resample(frame):
                chunk = converted.to_ndarray().astype(np.float32, copy=False)
                self.chunks.append(chunk)
                self.collected += chunk.shape[1]

    def tensor(self) -> torch.Tensor:
        if not self.chunks:
            channels = self.stream.channels if self.stream is not None else 1
            return torch.zeros(channels, 0)
        audio = np.concatenate(self.chunks, axis=1)
        if self.limit is not None:
            audio = audio[:, : self.limit]
        return torch.from_numpy(np.ascontiguousarray(audio))


def decode_clip(source: VideoSource, frames_per_clip: int = 16, max_audio_samples: int | None = None) -> DecodedClip:
    """Decode the clip MMF's Charades dataset takes from a video.

    ``source`` is a path, bytes or a binary file object. ``max_audio_samples``
    bounds the audio decoded (None: all of it). Raises ``VideoDecodeError``
    with an actionable message for anything that is not a decodable video.
    """
    num_frames = count_video_frames(source)
    if num_frames == 0:
        raise VideoDecodeError("the video stream has no frames")
    wanted = clip_frame_indices(num_frames, frames_per_clip)
    last_wanted = wanted[-1]
    kept: dict[int, np.ndarray] = {}
    with _open(source) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        audio_stream = container.streams.audio[0] if container.streams.audio and max_audio_samples != 0 else None
        audio = _AudioCollector(audio_stream, max_audio_samples)
        wanted_set = set(wanted)
        index, last_frame = 0, None
        streams = [stream] + ([audio_stream] if audio_stream is not None else [])
        try:
            for packet in container.demux(*streams):
                if packet.stream is audio_stream:
                    if not audio.done:
                        audio.add(packet)
                    continue
                for frame in packet.decode():
                    last_frame = frame
                    if index in wanted_set:
                        kept[index] = frame.to_ndarray(format="rgb24")
                    index += 1
                if index > last_wanted and audio.done:
                    break
        except av.FFmpegError as error:
            raise VideoDecodeError(f"the video is corrupted after {index} frames ({error})") from error
        if not kept:
            raise VideoDecodeError("no video frame could be decoded")
        if len(kept) < len(wanted_set):
            # a damaged tail: the missing frames repeat the last decodable one
            logger.warning("only %d of %d frames decoded; repeating the last one", index, num_frames)
            tail = last_frame.to_ndarray(format="rgb24")
            kept.update({i: tail for i in wanted_set - kept.keys()})
        fps = float(stream.average_rate) if stream.average_rate else None
        return DecodedClip(
            video=torch.from_numpy(np.stack([kept[i] for i in wanted])),
            audio=audio.tensor(),
            audio_sample_rate=audio_stream.rate if audio_stream is not None else None,
            num_video_frames=num_frames,
            video_fps=fps,
        )


# ---------------------------------------------------------------- annotations


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


def parse_actions(actions: object, id_to_name: dict[str, str]) -> list[str]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> action names (empty if no actions)."""
    if not isinstance(actions, str) or not actions.strip():
        return []
    return [id_to_name[item.split(" ")[0]] for item in actions.split(";") if item.strip()]


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
