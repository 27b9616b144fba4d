"""Uploads that attack a video-serving worker, made small and fast: the
inputs of the hostile-input tests and of the soak benchmark.

Each is a real file FFmpeg reads (or refuses) the way it would read one
from a client: a 4096x4096 frame, 100,000 frames in 3 MB, a resolution
change mid-stream, MP4 sample tables that declare 40 million frames, an
ffconcat list, and JSON fields nested or listed far beyond reason.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from minimmf.utils.video_writer import tone, write_video


def gray_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    return [np.full((height, width, 3), 40 + (7 * i) % 160, dtype=np.uint8) for i in range(count)]


def huge_frame_video(path: Path, side: int = 4096) -> Path:
    """One ``side`` x ``side`` H.264 frame (a few KB): 16 such frames as float32 take 3 GB."""
    return write_video(path, gray_frames(1, side, side), fps=1, video_options={"preset": "ultrafast"})


def many_frames_video(path: Path, frames: int = 100_000, width: int = 1920, height: int = 1080) -> Path:
    """``frames`` frames of a static 1080p H.264 video in ~30 bytes each: one
    key frame, then the same tiny "nothing moved" frame over and over. Fast
    to make, slow to decode (every frame is a full-size picture)."""
    container_format = "mpegts" if path.suffix == ".ts" else None
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "bframes": "0"}
        # encoding two identical frames in this container gives it the stream's parameter sets
        packets = []
        for frame in gray_frames(1, width, height) * 2:
            packets += stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
        packets += stream.encode()
        first, repeated = packets[0], packets[1]
        step = repeated.pts - first.pts
        for index in range(frames):
            packet = av.Packet(bytes(first if index == 0 else repeated))
            packet.stream, packet.time_base = stream, first.time_base
            packet.pts = packet.dts = first.pts + index * step
            packet.is_keyframe = index == 0
            container.mux(packet)
    return path


def resolution_change_video(path: Path, sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 360)),
                            frames_each: int = 30) -> Path:
    """MPEG-TS segments of different frame sizes joined end to end (what a
    stream that switches quality looks like), each with its own sound."""
    segments = []
    for width, height in sizes:
        buffer = io.BytesIO()
        write_video(buffer, gray_frames(frames_each, width, height), fps=15, audio=tone(frames_each / 15),
                    container_format="mpegts")
        segments.append(buffer.getvalue())
    path.write_bytes(b"".join(segments))
    return path


def sample_table_bomb(path: Path, claimed_frames: int = 40_000_000) -> Path:
    """A one-frame MP4 whose ``stsz`` and ``stts`` boxes claim ``claimed_frames``
    frames (4 KB): FFmpeg allocates an index entry for each when it opens it."""
    buffer = io.BytesIO()
    write_video(buffer, gray_frames(1, 64, 48), fps=10, container_format="mp4")
    data = bytearray(buffer.getvalue())
    stsz, stts = data.find(b"stsz"), data.find(b"stts")
    sample_size, _ = struct.unpack_from(">II", data, stsz + 8)
    if sample_size == 0:  # one table entry: make it the constant size of every sample
        sample_size = struct.unpack_from(">I", data, stsz + 16)[0]
    struct.pack_into(">II", data, stsz + 8, sample_size, claimed_frames)
    struct.pack_into(">I", data, stts + 12, claimed_frames)  # the first entry's sample count
    path.write_bytes(bytes(data))
    return path


def ffconcat_list(target: str = "/etc/hostname") -> bytes:
    """An ffconcat playlist: a demuxer that opens other files for the reader."""
    return f"ffconcat version 1.0\nfile {target}\n".encode()


def deep_json(depth: int = 200_000) -> bytes:
    """A JSON array nested ``depth`` levels deep (Python's json recurses per level)."""
    return b"[" * depth + b"]" * depth


def many_labels(count: int = 400_000) -> bytes:
    """A JSON list of ``count`` labels."""
    return json.dumps([f"Label {index}" for index in range(count)]).encode()


@dataclass(frozen=True)
class HostileRequest:
    """A multipart request (``requests``' ``files`` form), the status it must
    get, and a phrase its JSON error must contain (for a 4xx)."""

    files: dict
    status: int
    error_names: str = ""


def hostile_requests(folder: Path, video: bytes, script: str, max_video_bytes: int) -> dict[str, HostileRequest]:
    """Every hostile input of the table in README's "Bounded input", as a
    request beside a good ``video`` and ``script``, written under ``folder``.
    Sizes stay under ``max_video_bytes``, so each reaches the limit it targets."""

    def upload(name: str, data: bytes) -> dict:
        if len(data) > max_video_bytes:
            raise ValueError(f"{name} is {len(data):,} bytes, over max_video_bytes={max_video_bytes:,}")
        return {"data": (name, data), "script": (None, script)}

    deep = deep_json(100_000)
    return {
        "4096x4096 frame": HostileRequest(upload("h.mp4", huge_frame_video(folder / "h.mp4").read_bytes()), 400,
                                          "max_frame_pixels"),
        "50,000 frames declared": HostileRequest(
            upload("m.mp4", many_frames_video(folder / "m.mp4", frames=50_000).read_bytes()), 400, "max_frames"),
        "20,000 frames counted": HostileRequest(
            upload("m.ts", many_frames_video(folder / "m.ts", frames=20_000).read_bytes()), 400, "max_frames"),
        "resolution change": HostileRequest(
            upload("r.ts", resolution_change_video(folder / "r.ts").read_bytes()), 200),
        "sample table bomb": HostileRequest(
            upload("b.mp4", sample_table_bomb(folder / "b.mp4").read_bytes()), 400, "max_frames"),
        "ffconcat list": HostileRequest(upload("list.ffconcat", ffconcat_list()), 400, "container"),
        "deep info": HostileRequest({"data": ("v.mp4", video), "info": (None, deep)}, 400, "max_json_depth"),
        "deep info as JSON": HostileRequest({"data": ("v.mp4", video), "info": (None, deep, "application/json")},
                                            400, "max_json_depth"),
        "400k labels": HostileRequest({**upload("v.mp4", video), "labels": (None, many_labels())}, 400,
                                      "max_json_bytes"),
    }
