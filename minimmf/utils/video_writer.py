"""Writing videos with PyAV: the one encoder behind the synthetic Charades
generator, the benchmarks' test videos and the tests' media files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

AUDIO_CHUNK = 1024  # samples per encoded audio frame (codecs with a fixed size override it)


def write_video(target: str | os.PathLike | BinaryIO, frames: Iterable[np.ndarray] | None, fps: float = 30,
                audio: np.ndarray | None = None, audio_rate: int = 16000, video_codec: str = "libx264",
                audio_codec: str = "aac", pix_fmt: str = "yuv420p",
                video_options: dict[str, str] | None = None,
                container_format: str | None = None) -> Path | BinaryIO:
    """Encode ``frames`` (H x W x 3 uint8 RGB arrays, all the same size) and
    ``audio`` ((channels, samples) float32 in [-1, 1], 1 or 2 channels) into
    ``target``, a path (returned as a Path) or a binary file object (returned
    as is). Either may be None (an audio-only or a silent file); the container
    comes from the file name unless ``container_format`` names it."""
    target = target if hasattr(target, "write") else Path(target)
    frame_iterator: Iterator[np.ndarray] = iter(frames if frames is not None else ())
    first_frame = next(frame_iterator, None)
    with av.open(target if hasattr(target, "write") else str(target), mode="w", format=container_format) as container:
        video_stream = None
        if first_frame is not None:
            video_stream = container.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1000))
            video_stream.height, video_stream.width = first_frame.shape[:2]
            video_stream.pix_fmt = pix_fmt
            video_stream.options = dict(video_options or {})
        audio_stream = None
        if audio is not None:
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            audio_stream = container.add_stream(audio_codec, rate=audio_rate, layout=layout)
        if video_stream is not None:
            for frame in _chain(first_frame, frame_iterator):
                _mux(container, video_stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            _mux(container, video_stream.encode())
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, audio_rate)
    return target


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _mux(container: av.container.OutputContainer, packets: list[av.Packet]) -> None:
    for packet in packets:
        container.mux(packet)


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  audio: np.ndarray, rate: int) -> None:
    layout = stream.layout.name
    codec_format = stream.codec_context.codec.audio_formats[0].name
    # codecs that take other sample formats (s16, flt, ...) get the planar float samples converted
    resampler = av.AudioResampler(format=codec_format, layout=layout, rate=rate) if codec_format != "fltp" else None
    chunk = stream.codec_context.frame_size or AUDIO_CHUNK
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    for start in range(0, samples.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + chunk]), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts = rate, start
        for converted in resampler.resample(frame) if resampler is not None else [frame]:
            _mux(container, stream.encode(converted))
    _mux(container, stream.encode())


def tone(seconds: float, rate: int = 16000, hz: float = 440.0, amplitude: float = 0.5,
         channels: int = 1) -> np.ndarray:
    """A sine tone as (channels, samples) float32, channel c scaled by (c + 1) / channels."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([wave * (c + 1) / channels for c in range(channels)])
