"""Decoding the clip MMF's Charades dataset takes from a video, in one
streaming pass with PyAV, bounded for untrusted input.

Clip selection follows MMF's ``CharadesVideoClips``: ``frames_per_clip``
frames at indices ``round(linspace(0, n - 1, frames_per_clip))`` over the
whole video, ``n`` being its number of video packets with a timestamp. The
frames are decoded in order with FFmpeg's threading; only the kept ones are
converted to RGB and handed, 16 at a time, to ``frame_transform`` (the
sample maker resizes them to the model's input size there), so memory does
not grow with the video's length or the number of clips. Audio is decoded only up to the
number of samples the audio pipeline looks at.

One pass can also serve several clips (``decode_clips`` with a plan, a
small frozen dataclass whose ``repr`` names it): MMF's clip, N clips spread
over the video, one clip per window of a timeline, or those together
(``ClipSpec``: its frames and where its audio starts). A frame several clips
share is converted once; each clip's audio is the slice from its start.

A chunk of a live stream (``decode_chunk``) is decoded the same way: the
frames its plan keeps, transformed, and all of its audio (bounded by its
video's duration), so that a stream's windows can be cut from its chunks
exactly as a video's timeline windows are cut from the video.

Untrusted input (``DecodeLimits``): only real video containers are opened
(``ALLOWED_CONTAINERS``); an MP4's sample tables are read before FFmpeg
builds its index from them; the frame size, the frame count and the
wall-clock time are checked before and while decoding. A frame whose size
differs from the first frame's (a resolution change mid-stream) is scaled
to the first frame's size.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch

from minimmf.utils.mp4 import MalformedMp4Error, declared_samples, looks_like_mp4

logger = logging.getLogger(__name__)

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO
# (T, H, W, 3) uint8 RGB frames -> a tensor of T transformed frames along its first dimension
FrameTransform = Callable[[np.ndarray], torch.Tensor]
TRANSFORM_BATCH = 16

# FFmpeg demuxers for real video containers; anything else (playlists, concat
# lists, images, raw streams, ...) is refused before it can open other files
ALLOWED_CONTAINERS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv",
                      "asf", "ogg")
CONTAINER_HINT = "send an mp4/mov, mkv/webm, avi, mpeg-ts, flv, wmv or ogg video"
# declared samples of all tracks (audio runs at ~47 frames/s) per allowed video frame
SAMPLES_PER_FRAME = 16


class VideoDecodeError(ValueError):
    """The input cannot be decoded as a video; the message says why."""


class VideoLimitError(VideoDecodeError):
    """The video is over one of the ``DecodeLimits``; the message names it."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on the work one untrusted video may cause (None: unbounded).
    ``setting_prefix`` names where the limits are set, for the messages."""

    max_frame_pixels: int | None = None
    max_frames: int | None = None
    max_seconds: float | None = None
    setting_prefix: str = ""

    def over(self, what: str, value: str, limit: int | float, setting: str) -> VideoLimitError:
        return VideoLimitError(f"{what} {value}, over the limit of {limit:,} ({self.setting_prefix}{setting})")


UNBOUNDED = DecodeLimits()


@dataclass
class DecodedClip:
    video: torch.Tensor  # the kept frames stacked: (frames_per_clip, H, W, 3) uint8 RGB, or frame_transform's output
    audio: torch.Tensor  # (channels, samples) float32 in [-1, 1]; (1, 0) without audio
    audio_sample_rate: int | None
    num_video_frames: int  # frames in the whole video
    video_fps: float | None
    start: float = 0.0  # the seconds of the video the clip spans
    end: float | None = None

    @property
    def video_duration(self) -> float:
        """Seconds of the whole video, as ``VideoInfo.duration`` counts them."""
        return VideoInfo(self.num_video_frames, self.video_fps).duration


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # video packets with a timestamp (MMF's frame count)
    fps: float | None
    start: float | None = None  # seconds of its first picture (the smallest video timestamp)

    @property
    def duration(self) -> float:
        """Seconds, as the frames at ``fps`` span them (1 frame per second without a rate)."""
        return self.num_frames / (self.fps or 1.0)


@dataclass(frozen=True)
class ClipSpec:
    """One clip to decode: its frame indices, and the seconds it spans (its
    audio is read from ``start``)."""

    frame_indices: list[int]
    start: float = 0.0
    end: float | None = None


ClipPlan = Callable[[VideoInfo], list[ClipSpec]]


def clip_frame_indices(num_frames: int, frames_per_clip: int) -> list[int]:
    """MMF's evenly spaced frame indices (repeats when the video is short)."""
    return torch.round(torch.linspace(0, num_frames - 1, frames_per_clip)).long().tolist()


@dataclass(frozen=True)
class MMFClip:
    """MMF's one clip: ``frames_per_clip`` frames spread over the whole video."""

    frames_per_clip: int

    def __call__(self, info: VideoInfo) -> list[ClipSpec]:
        return [ClipSpec(clip_frame_indices(info.num_frames, self.frames_per_clip), 0.0, info.duration)]


@dataclass(frozen=True)
class SpreadClips:
    """``clips`` clips over ``clips`` equal parts of the video, each spread
    over its part as MMF's clip is over the whole (``clips=1``: MMF's clip)."""

    clips: int
    frames_per_clip: int

    def __call__(self, info: VideoInfo) -> list[ClipSpec]:
        fps, specs = info.fps or 1.0, []
        for part in range(self.clips):
            first = part * info.num_frames // self.clips
            end = max(first + 1, (part + 1) * info.num_frames // self.clips)
            indices = [first + i for i in clip_frame_indices(end - first, self.frames_per_clip)]
            specs.append(ClipSpec(indices, first / fps, end / fps))
        return specs


def window_seconds(duration: float, segment_seconds: float, max_segments: int) -> float:
    """The window length a timeline uses: ``segment_seconds``, or longer so
    that the video needs no more than ``max_segments`` windows."""
    return max(segment_seconds, duration / max_segments)


@dataclass(frozen=True)
class TimelineWindows:
    """Consecutive windows of ``window_seconds`` covering the video (the last
    one shorter), each a clip of ``frames_per_clip`` frames evenly spaced
    inside it; a video shorter than one window is one window."""

    segment_seconds: float
    max_segments: int
    frames_per_clip: int

    def __call__(self, info: VideoInfo) -> list[ClipSpec]:
        fps, duration = info.fps or 1.0, info.duration
        length = window_seconds(duration, self.segment_seconds, self.max_segments)
        specs = []
        for window in range(max(1, math.ceil(duration / length - 1e-9))):
            start, end = window * length, min(duration, (window + 1) * length)
            specs.append(ClipSpec(window_frame_indices(start, end, fps, info.num_frames, self.frames_per_clip),
                                  start, end))
        return specs


def window_frame_indices(start: float, end: float, fps: float, num_frames: int, frames_per_clip: int) -> list[int]:
    """The frames of the window [start, end) seconds of a video of ``num_frames``
    frames at ``fps``: ``frames_per_clip`` evenly spaced over those whose time
    (index / fps) is in the window (at least one). Timeline windows and a live
    stream's windows both take their frames by this rule."""
    first = min(num_frames - 1, math.ceil(start * fps - 1e-6))
    stop = max(first + 1, min(num_frames, math.ceil(end * fps - 1e-6)))
    return [first + i for i in clip_frame_indices(stop - first, frames_per_clip)]


@dataclass(frozen=True)
class Together:
    """Several plans' clips, in order, from one pass."""

    plans: tuple[ClipPlan, ...]

    def __call__(self, info: VideoInfo) -> list[ClipSpec]:
        return [spec for plan in self.plans for spec in plan(info)]


class _Deadline:
    def __init__(self, limits: DecodeLimits):
        self.limits = limits
        self.ends = time.monotonic() + limits.max_seconds if limits.max_seconds is not None else None

    def check(self) -> None:
        if self.ends is not None and time.monotonic() > self.ends:
            raise self.limits.over("decoding the video took", f"over {self.limits.max_seconds:g} s",
                                   self.limits.max_seconds, "max_decode_seconds")


def _as_input(source: VideoSource) -> str | BinaryIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError("the video is empty (0 bytes)")
        return io.BytesIO(bytes(source))
    if hasattr(source, "seek"):
        source.seek(0)
        return source
    if not Path(source).is_file():
        raise VideoDecodeError(f"video file not found: {source}")
    return str(source)


def _open(source: VideoSource) -> av.container.InputContainer:
    try:
        return av.open(_as_input(source), mode="r", options={"format_whitelist": ",".join(ALLOWED_CONTAINERS)})
    except av.FFmpegError as error:
        raise VideoDecodeError(f"not a readable video container ({error}); {CONTAINER_HINT}") from error


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise VideoDecodeError(f"the file has no video stream (streams found: {kinds})")
    return container.streams.video[0]


def _check_declared_tables(source: VideoSource, limits: DecodeLimits) -> None:
    """Refuse an MP4/QuickTime file whose sample tables declare more frames
    than the limit, before FFmpeg allocates an index entry for each."""
    if limits.max_frames is None:
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        data = memoryview(Path(source).read_bytes())
    else:
        return
    if not looks_like_mp4(data):
        return
    try:
        declared = declared_samples(data)
    except MalformedMp4Error as error:
        raise VideoDecodeError(f"not a readable video container (broken MP4 boxes: {error}); {CONTAINER_HINT}") \
            from None
    if declared.video_frames > limits.max_frames:
        raise limits.over("the video declares", f"{declared.video_frames:,} frames", limits.max_frames, "max_frames")
    if declared.total > limits.max_frames * SAMPLES_PER_FRAME:
        raise limits.over("the file's tracks declare", f"{declared.total:,} samples",
                          limits.max_frames * SAMPLES_PER_FRAME, f"max_frames x {SAMPLES_PER_FRAME}")


def _check_frame_size(width: int, height: int, limits: DecodeLimits) -> None:
    if limits.max_frame_pixels is not None and width * height > limits.max_frame_pixels:
        raise limits.over("the video's frames are", f"{width}x{height} ({width * height:,} pixels)",
                          limits.max_frame_pixels, "max_frame_pixels")


def _video_info(source: VideoSource, limits: DecodeLimits, deadline: _Deadline) -> VideoInfo:
    """The video's frame count (its packets with a timestamp, what MMF counts)
    and rate, checking the declared frame size first and the count and time
    as it goes."""
    with _open(source) as container:
        stream = _video_stream(container)
        _check_frame_size(stream.codec_context.width, stream.codec_context.height, limits)
        count, first = 0, None
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                count += 1
                first = packet.pts if first is None else min(first, packet.pts)
                if limits.max_frames is not None and count > limits.max_frames:
                    raise limits.over("the video has", f"more than {limits.max_frames:,} frames", limits.max_frames,
                                      "max_frames")
                if count % 256 == 0:
                    deadline.check()
        except av.FFmpegError as error:
            raise VideoDecodeError(f"the video is corrupted ({error})") from error
        return VideoInfo(count, float(stream.average_rate) if stream.average_rate else None,
                         float(first * stream.time_base) if first is not None else None)


def count_video_frames(source: VideoSource, limits: DecodeLimits = UNBOUNDED) -> int:
    """Video packets with a timestamp: what MMF counts as the video's frames."""
    _check_declared_tables(source, limits)
    return _video_info(source, limits, _Deadline(limits)).num_frames


class _AudioSlices:
    """Decoded audio as float32 (channels, samples): for each start sample,
    the ``limit`` samples from there (None: all of them), kept as the audio
    streams past, so memory does not grow with the audio's length. ``target``
    (rate, layout name) converts it to that format (default: the stream's).
    Decoded frames that begin before ``from_seconds`` are dropped (they only
    prime the decoder)."""

    def __init__(self, stream: av.audio.stream.AudioStream | None, starts: list[int], limit: int | None,
                 target: tuple[int, str] | None = None, from_seconds: float | None = None):
        self.stream, self.limit, self.from_seconds = stream, limit, from_seconds
        self.chunks: dict[int, list[np.ndarray]] = {start: [] for start in starts}
        self.position = 0  # samples decoded so far
        self.needed_until = None if limit is None else max(starts) + limit
        if stream is not None:
            self.rate, self.layout = target or (stream.rate, stream.layout.name)
            self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)

    @property
    def done(self) -> bool:
        return self.stream is None or (self.needed_until is not None and self.position >= self.needed_until)

    def add(self, packet: av.Packet) -> None:
        for frame in packet.decode():
            if self.from_seconds is not None and frame.time is not None and frame.time < self.from_seconds:
                continue
            for converted in self.resampler.resample(frame):
                self._keep(converted.to_ndarray().astype(np.float32, copy=False))

    def _keep(self, chunk: np.ndarray) -> None:
        first, last = self.position, self.position + chunk.shape[1]
        for start, kept in self.chunks.items():
            stop = last if self.limit is None else start + self.limit
            if start < last and stop > first:
                kept.append(chunk[:, max(start, first) - first: min(stop, last) - first])
        self.position = last

    def tensor(self, start: int) -> torch.Tensor:
        if not self.chunks[start]:
            channels = self.stream.channels if self.stream is not None else 1
            return torch.zeros(channels, 0)
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(self.chunks[start], axis=1)))


class _FrameKeeper:
    """The kept frames: each converted to RGB at the first frame's size (or
    ``size``) as it is decoded, then transformed ``batch`` at a time. Batches keep the
    full-size frames held at any time bounded, and keep torch's threads from
    competing with FFmpeg's for the cores while the video decodes."""

    def __init__(self, frame_transform: FrameTransform | None, limits: DecodeLimits, batch: int = TRANSFORM_BATCH,
                 size: tuple[int, int] | None = None):
        self.transform = frame_transform or torch.from_numpy
        self.limits, self.batch = limits, batch
        self.size = size
        self.pending: dict[int, np.ndarray] = {}
        self.kept: dict[int, torch.Tensor] = {}

    def check(self, frame: av.VideoFrame) -> None:
        _check_frame_size(frame.width, frame.height, self.limits)
        if self.size is None:
            self.size = (frame.width, frame.height)

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self.size
        if (frame.width, frame.height) != self.size:
            return frame.to_ndarray(format="rgb24", width=width, height=height)
        return frame.to_ndarray(format="rgb24")

    def keep(self, index: int, frame: av.VideoFrame) -> None:
        self.pending[index] = self.rgb(frame)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Transform the pending frames (as one (T, H, W, 3) stack)."""
        if self.pending:
            transformed = self.transform(np.stack(list(self.pending.values())))
            self.kept.update(zip(self.pending, transformed, strict=True))
            self.pending = {}

    def fill(self, missing: set[int], frame: av.VideoFrame) -> None:
        """Every index in ``missing`` gets ``frame`` (a damaged tail's last decodable frame)."""
        tail = self.transform(self.rgb(frame)[None])[0]
        self.kept.update({index: tail for index in missing})


AudioPlan = Callable[[av.audio.stream.AudioStream | None], _AudioSlices]


def _decode_pass(source: VideoSource, info: VideoInfo, wanted: set[int], audio_plan: AudioPlan,
                 keeper: _FrameKeeper, deadline: _Deadline) -> _AudioSlices:
    """One pass over the video: the ``wanted`` frames into ``keeper``, and the
    audio ``audio_plan`` asks for (given the first audio stream, if any)."""
    last_wanted = max(wanted)
    with _open(source) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        audio = audio_plan(container.streams.audio[0] if container.streams.audio else None)
        audio_stream = audio.stream
        index, last_frame = 0, None
        streams = [stream] + ([audio_stream] if audio_stream is not None else [])
        try:
            for packet in container.demux(*streams):
                deadline.check()
                if packet.stream is audio_stream:
                    if not audio.done:
                        audio.add(packet)
                    continue
                if index > last_wanted:  # only audio is still wanted
                    continue
                for frame in packet.decode():
                    keeper.check(frame)
                    last_frame = frame
                    if index in wanted:
                        keeper.keep(index, frame)
                    index += 1
                if index > last_wanted and audio.done:
                    break
        except av.FFmpegError as error:
            raise VideoDecodeError(f"the video is corrupted after {index} frames ({error})") from error
        keeper.flush()
        if not keeper.kept:
            raise VideoDecodeError("no video frame could be decoded")
        if len(keeper.kept) < len(wanted):
            # a damaged tail: the missing frames repeat the last decodable one
            logger.warning("only %d of %d frames decoded; repeating the last one", index, info.num_frames)
            keeper.fill(wanted - keeper.kept.keys(), last_frame)
    return audio


def _checked_info(source: VideoSource, limits: DecodeLimits, deadline: _Deadline) -> VideoInfo:
    _check_declared_tables(source, limits)
    info = _video_info(source, limits, deadline)
    if info.num_frames == 0:
        raise VideoDecodeError("the video stream has no frames")
    return info


def decode_clip(source: VideoSource, frames_per_clip: int = 16, max_audio_samples: int | None = None,
                limits: DecodeLimits = UNBOUNDED, frame_transform: FrameTransform | None = None) -> DecodedClip:
    """Decode the clip MMF's Charades dataset takes from a video.

    ``source`` is a path, bytes or a binary file object. ``max_audio_samples``
    bounds the audio decoded (None: all of it). ``frame_transform`` turns kept
    (T, H, W, 3) uint8 RGB frames into a tensor of T frames (default: as is). Raises
    ``VideoDecodeError`` with an actionable message for anything that is not
    a decodable video, ``VideoLimitError`` for one over ``limits``.
    """
    _, (clip,) = decode_clips(source, MMFClip(frames_per_clip), max_audio_samples, limits, frame_transform)
    return clip


def decode_clips(source: VideoSource, plan: ClipPlan, max_audio_samples: int | None = None,
                 limits: DecodeLimits = UNBOUNDED,
                 frame_transform: FrameTransform | None = None) -> tuple[VideoInfo, list[DecodedClip]]:
    """Decode every clip ``plan`` asks for (given the video's frame count and
    rate) in one pass over the video: (the video's info, the clips in the
    plan's order). Arguments and errors as ``decode_clip``."""
    deadline = _Deadline(limits)
    info = _checked_info(source, limits, deadline)
    specs = plan(info)

    def audio_plan(stream: av.audio.stream.AudioStream | None) -> _AudioSlices:
        stream = stream if max_audio_samples != 0 else None
        rate = stream.rate if stream is not None else 0
        return _AudioSlices(stream, sorted({round(spec.start * rate) for spec in specs}), max_audio_samples)

    keeper = _FrameKeeper(frame_transform, limits)
    audio = _decode_pass(source, info, {index for spec in specs for index in spec.frame_indices}, audio_plan,
                         keeper, deadline)
    rate = audio.rate if audio.stream is not None else 0
    clips = [DecodedClip(video=torch.stack([keeper.kept[i] for i in spec.frame_indices]),
                         audio=audio.tensor(round(spec.start * rate)),
                         audio_sample_rate=audio.rate if audio.stream is not None else None,
                         num_video_frames=info.num_frames, video_fps=info.fps, start=spec.start, end=spec.end)
             for spec in specs]
    return info, clips


# the frames of a chunk to keep, given the chunk's frame count and rate
ChunkPlan = Callable[[VideoInfo], Collection[int]]
# a chunk's audio may run this much past its video; the rest is dropped
CHUNK_AUDIO_SLACK_SECONDS = 1.0


@dataclass
class DecodedChunk:
    """One chunk of a live stream: the frames its plan keeps (``frame_transform``'s
    output, by the chunk's frame index), the size they were converted at, and its audio."""

    info: VideoInfo
    frames: dict[int, torch.Tensor]
    frame_size: tuple[int, int]  # (width, height) the frames were converted at before the transform
    audio: torch.Tensor | None  # (channels, samples) float32 at audio_format; None without an audio stream
    audio_format: tuple[int, str] | None  # (sample rate, layout name)


def decode_chunk(source: VideoSource, plan: ChunkPlan, max_audio_samples: int | None = None,
                 limits: DecodeLimits = UNBOUNDED, frame_transform: FrameTransform | None = None,
                 frame_size: tuple[int, int] | None = None,
                 audio_format: tuple[int, str] | None = None) -> DecodedChunk:
    """Decode one chunk of a stream (a short, independently decodable video):
    the frames ``plan`` keeps, converted at ``frame_size`` (default: its first
    frame's) and transformed as ``decode_clips`` does, and its audio (none when
    ``max_audio_samples`` is 0), converted to ``audio_format``, up to its video's
    duration plus ``CHUNK_AUDIO_SLACK_SECONDS``. Sound that begins before the
    chunk's first picture is the client's priming packet (the previous chunk's
    last, which makes the first frame of codecs like AAC decode whole) and is
    dropped. Errors and ``limits`` as ``decode_clip``."""
    deadline = _Deadline(limits)
    info = _checked_info(source, limits, deadline)
    wanted = set(plan(info)) or {0}  # one frame at least, so that an undecodable chunk is refused

    def audio_plan(stream: av.audio.stream.AudioStream | None) -> _AudioSlices:
        stream = stream if max_audio_samples != 0 else None
        rate = audio_format[0] if audio_format is not None else stream.rate if stream is not None else 0
        limit = math.ceil((info.duration + CHUNK_AUDIO_SLACK_SECONDS) * rate)
        # not the stream's start_time: Matroska gives the video the audio's when the sound starts first
        return _AudioSlices(stream, [0], limit, audio_format, info.start)

    keeper = _FrameKeeper(frame_transform, limits, size=frame_size)
    audio = _decode_pass(source, info, wanted, audio_plan, keeper, deadline)
    if audio.stream is None:
        return DecodedChunk(info, keeper.kept, keeper.size, None, None)
    return DecodedChunk(info, keeper.kept, keeper.size, audio.tensor(0), (audio.rate, audio.layout))
