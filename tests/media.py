"""Small test videos (written with the package's PyAV writer), and the slow,
obvious decoding that the streaming decoder is compared against."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from minimmf.utils.video_writer import tone, write_video


def moving_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame that differs from its neighbours (a bar moving right)."""
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    left = (index * 7) % max(1, width - 8)
    frame[:, left : left + 8] = (200, 60 + (index * 13) % 190, 90)
    return frame


def encode_video(path: Path, frames: int, video_codec: str | None = "libx264", audio_codec: str | None = "aac",
                 width: int = 64, height: int = 48, fps: int = 10, audio_rate: int = 16000,
                 audio_seconds: float | None = None, pix_fmt: str = "yuv420p", audio_layout: str = "mono") -> Path:
    """A video of ``frames`` moving-bar frames and a 440 Hz tone."""
    images = (moving_pattern(i, width, height) for i in range(frames)) if video_codec else None
    audio = None
    if audio_codec:
        seconds = audio_seconds if audio_seconds is not None else max(frames / fps, 0.5)
        audio = tone(seconds, audio_rate, channels=2 if audio_layout == "stereo" else 1)
    return write_video(path, images, fps=fps, audio=audio, audio_rate=audio_rate, video_codec=video_codec or "",
                       audio_codec=audio_codec or "", pix_fmt=pix_fmt)


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


def join_videos(first: Path, second: Path, path: Path) -> Path:
    """``first`` then ``second`` (same frame size, rate and audio rate) as one
    video, each one's sound cut to its frames' duration so that they stay in step."""
    with av.open(str(first)) as container:
        fps, rate = container.streams.video[0].average_rate, container.streams.audio[0].rate
    frames = [decode_all_frames(str(video)) for video in (first, second)]
    audio = [decode_all_audio(str(video))[:, : round(len(images) / fps * rate)]
             for video, images in zip((first, second), frames, strict=True)]
    return write_video(path, np.concatenate(frames), fps=fps, audio=np.concatenate(audio, axis=1), audio_rate=rate)
