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
    """``first`` then ``second`` (H.264 of the same size and rate, from the
    same encoder settings) as one Matroska video at ``path``, each one's sound
    cut to its frames' duration so that they stay in step. The H.264 packets
    are copied, not re-encoded, and the sound is stored as 32-bit float PCM,
    so each part decodes to exactly the frames and samples it had alone (an
    AAC round trip moved a tiny model's window scores by up to 0.3)."""
    packets = [video_packets(video) for video in (first, second)]
    with av.open(str(first)) as container:
        fps, rate = container.streams.video[0].average_rate, container.streams.audio[0].rate
    audio = [decode_all_audio(str(video))[:, : round(len(own) / fps * rate)]
             for video, own in zip((first, second), packets, strict=True)]
    sound = write_video(path.with_suffix(".sound.mkv"), None, audio=np.concatenate(audio, axis=1), audio_rate=rate,
                        audio_codec="pcm_f32le")
    with av.open(str(path), mode="w") as output, av.open(str(first)) as video, av.open(str(sound)) as pcm:
        video_stream = output.add_stream_from_template(video.streams.video[0])
        audio_stream = output.add_stream_from_template(pcm.streams.audio[0])
        seconds = 0
        for own in packets:
            shift = round(seconds / own[0].time_base)  # before muxing rebases the packets to the output's time base
            for packet in own:
                packet.pts, packet.dts, packet.stream = packet.pts + shift, packet.dts + shift, video_stream
                output.mux(packet)
            seconds += len(own) / fps
        for packet in pcm.demux(pcm.streams.audio[0]):
            if packet.size:
                packet.stream = audio_stream
                output.mux(packet)
    sound.unlink()
    return path


def video_packets(video: Path) -> list[av.Packet]:
    """The encoded frames of ``video``'s video stream, as stored."""
    with av.open(str(video)) as container:
        return [packet for packet in container.demux(container.streams.video[0]) if packet.size]
