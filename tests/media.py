"""Encoding small test videos with PyAV, and decoding them the slow,
obvious way to compare against."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame that differs from its neighbours (a bar moving right)."""
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    left = (index * 7) % max(1, width - 8)
    frame[:, left : left + 8] = (200, 60 + (index * 13) % 190, 90)
    return frame


def encode_video(path: Path, frames: int, video_codec: str | None = "libx264", audio_codec: str | None = "aac",
                 width: int = 64, height: int = 48, fps: int = 10, audio_rate: int = 16000,
                 audio_seconds: float | None = None, pix_fmt: str = "yuv420p", audio_layout: str = "mono") -> Path:
    """Write a video of ``frames`` frames (and a 440 Hz tone) with PyAV."""
    with av.open(str(path), mode="w") as container:
        video = None
        if video_codec:
            video = container.add_stream(video_codec, rate=Fraction(fps))
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
        audio = container.add_stream(audio_codec, rate=audio_rate, layout=audio_layout) if audio_codec else None
        if video is not None:
            for index in range(frames):
                for packet in video.encode(av.VideoFrame.from_ndarray(moving_pattern(index, width, height),
                                                                      format="rgb24")):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
        if audio is not None:
            seconds = audio_seconds if audio_seconds is not None else max(frames / fps, 0.5)
            channels = 2 if audio_layout == "stereo" else 1
            t = np.arange(int(seconds * audio_rate)) / audio_rate
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            samples = np.stack([tone * (c + 1) / channels for c in range(channels)])
            codec_format = audio.codec_context.codec.audio_formats[0].name
            chunk = audio.codec_context.frame_size or 1024
            for start in range(0, samples.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + chunk]),
                                                   format="fltp", layout=audio_layout)
                frame.sample_rate, frame.pts = audio_rate, start
                if codec_format != "fltp":
                    frame = av.AudioResampler(format=codec_format, layout=audio_layout,
                                              rate=audio_rate).resample(frame)[0]
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def decode_all_frames(source) -> np.ndarray:
    """Every frame as RGB (the reference approach the streaming decoder avoids)."""
    with av.open(source) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decode_all_audio(source) -> np.ndarray:
    with av.open(source) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        chunks = [converted.to_ndarray() for frame in container.decode(audio=0)
                  for converted in resampler.resample(frame)]
    return np.concatenate(chunks, axis=1)
