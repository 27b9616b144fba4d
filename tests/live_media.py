"""Recorded videos for the live-stream tests, and their chunks: H.264 with a
key frame every second and sound as float PCM (lossless, so that a chunk
decodes to exactly the frames and samples it had in the whole video), cut by
the client's chunker."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from minimmf.serving.chunking import Chunk, cut_chunks, open_source
from minimmf.utils.video_writer import tone, write_video

FPS, RATE = 10, 16000


def recorded_video(path: Path, seconds: int = 6, seed: int = 0, audio_codec: str = "pcm_f32le",
                   keyframe_every: int = FPS) -> Path:
    """A video whose every second looks and sounds different: a moving
    random pattern and a tone that changes pitch each second."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    frames = (np.roll(base, shift=3 * index + 11 * (index // FPS), axis=1) for index in range(seconds * FPS))
    sound = np.concatenate([tone(1.0, RATE, hz=200 + 150 * ((second + seed) % 7)) for second in range(seconds)],
                           axis=1)
    options = {"x264-params": f"keyint={keyframe_every}:min-keyint={keyframe_every}:scenecut=0"}
    return write_video(path, frames, fps=FPS, audio=sound, audio_rate=RATE, audio_codec=audio_codec,
                       video_options=options)


def chunks_of(video: Path, seconds: float = 1.0, max_chunk_seconds: float | None = None) -> list[Chunk]:
    with open_source(str(video)) as container:
        return list(cut_chunks(container, seconds, max_chunk_seconds))


def remuxed(chunk: bytes, container_format: str, from_zero: bool = False) -> bytes:
    """The chunk's packets in another container (``mpegts``, ``mp4`` as
    fragmented MP4, ``matroska``), their timestamps from 0 with ``from_zero``."""
    options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if container_format == "mp4" else {}
    buffer = io.BytesIO()
    with av.open(io.BytesIO(chunk)) as source, av.open(buffer, "w", format=container_format,
                                                         options=options) as output:
        streams = {stream.index: output.add_stream_from_template(stream) for stream in source.streams
                   if stream.type in ("video", "audio")}
        first = None  # seconds of the first packet: every stream is moved back by as much
        for packet in source.demux(*source.streams):
            if packet.size == 0 or packet.stream.index not in streams:
                continue
            if from_zero:
                stamp = packet.pts if packet.pts is not None else packet.dts
                first = stamp * packet.time_base if first is None else first
                shift = round(first / packet.time_base)
                packet.pts = packet.pts - shift if packet.pts is not None else None
                packet.dts = packet.dts - shift if packet.dts is not None else None
            packet.stream = streams[packet.stream.index]
            output.mux(packet)
    return buffer.getvalue()
