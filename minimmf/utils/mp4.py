"""What an MP4/QuickTime file's sample tables declare, read from its boxes
without FFmpeg.

FFmpeg's mov demuxer allocates an index entry per declared sample when it
opens a file, and a few bytes of ``stsz``/``stts``/``trun`` can declare tens
of millions of samples: a 4 KB file can make it allocate gigabytes. Reading
the declared counts first lets a server refuse such a file before FFmpeg
sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# boxes whose payload is a list of boxes (the path to every sample table)
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"dinf"}
_MAX_DEPTH = 16


class MalformedMp4Error(ValueError):
    """The box structure is inconsistent (a box runs past its parent)."""


@dataclass
class DeclaredSamples:
    """Per track (by track id), the largest sample count its tables declare."""

    video_tracks: set[int] = field(default_factory=set)
    samples: dict[int, int] = field(default_factory=dict)

    @property
    def video_frames(self) -> int:
        return max((self.samples.get(track, 0) for track in self.video_tracks), default=0)

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def declare(self, track: int, count: int) -> None:
        self.samples[track] = max(self.samples.get(track, 0), count)

    def add_fragment(self, track: int, count: int) -> None:
        self.samples[track] = self.samples.get(track, 0) + count


def looks_like_mp4(data: bytes | memoryview) -> bool:
    """An ISO-BMFF file starts with a box such as ``ftyp``, ``moov`` or ``mdat``."""
    return len(data) >= 8 and bytes(data[4:8]) in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def declared_samples(data: bytes | memoryview) -> DeclaredSamples:
    """The sample counts an MP4/QuickTime file's ``stsz``/``stz2``/``stts``
    (per track) and ``trun`` (per movie fragment) boxes declare."""
    found = DeclaredSamples()
    _walk(memoryview(data), 0, len(data), 0, found, _TrackState())
    return found


@dataclass
class _TrackState:
    track_id: int = 0  # from tkhd (in trak) or tfhd (in traf)


def _boxes(view: memoryview, start: int, end: int):
    """(type, payload start, payload end) of each box in view[start:end]."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", view, position)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if position + 16 > end:
                raise MalformedMp4Error("a box header is cut off")
            size = struct.unpack_from(">Q", view, position + 8)[0]
            header = 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - position
        if size < header or position + size > end:
            raise MalformedMp4Error(f"box {kind!r} at byte {position} runs past its parent")
        yield kind, position + header, position + size
        position += size


def _walk(view: memoryview, start: int, end: int, depth: int, found: DeclaredSamples, track: _TrackState) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedMp4Error("boxes nest too deeply")
    for kind, payload, payload_end in _boxes(view, start, end):
        if kind in (b"trak", b"traf"):
            _walk(view, payload, payload_end, depth + 1, found, _TrackState())
        elif kind in _CONTAINERS:
            _walk(view, payload, payload_end, depth + 1, found, track)
        else:
            _read_leaf(kind, view[payload:payload_end], found, track)


def _read_leaf(kind: bytes, box: memoryview, found: DeclaredSamples, track: _TrackState) -> None:
    """Read what a full box (version + flags, then fields) declares."""
    if len(box) < 4:
        return
    version = box[0]
    if kind == b"tkhd":
        offset = 4 + (16 if version == 1 else 8)  # creation and modification times
        if len(box) >= offset + 4:
            track.track_id = struct.unpack_from(">I", box, offset)[0]
    elif kind == b"tfhd" and len(box) >= 8:
        track.track_id = struct.unpack_from(">I", box, 4)[0]
    elif kind == b"hdlr" and len(box) >= 12 and bytes(box[8:12]) == b"vide":
        found.video_tracks.add(track.track_id)
    elif kind == b"stsz" and len(box) >= 12:
        found.declare(track.track_id, struct.unpack_from(">I", box, 8)[0])
    elif kind == b"stz2" and len(box) >= 12:
        found.declare(track.track_id, struct.unpack_from(">I", box, 8)[0])
    elif kind == b"stts" and len(box) >= 8:
        entries = struct.unpack_from(">I", box, 4)[0]
        available = min(entries, (len(box) - 8) // 8)  # a table cannot hold more entries than its bytes
        counts = struct.unpack_from(f">{2 * available}I", box, 8)[0::2] if available else ()
        found.declare(track.track_id, sum(counts))
    elif kind == b"trun" and len(box) >= 8:
        found.add_fragment(track.track_id, struct.unpack_from(">I", box, 4)[0])
