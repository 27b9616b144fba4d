"""Cutting a source into a live stream's chunks: the client side of live
streams (``request.py --live``, the tests, ``bench/live.py``). PyAV only, no
torch: the client stays light.

Anything PyAV opens is a source: a file, a file still being written
(``follow``), a camera device (``input_format="v4l2"``, ...), an RTSP or HTTP
URL. Each chunk is a Matroska file of the source's packets from one video key
frame to the next after ``chunk_seconds``, its sound the audio packets in
between (by their time), copied, not re-encoded: a chunk decodes on its own,
and the chunks together decode to the source's frames and samples. Each
chunk's sound starts with a copy of the audio packet before its own (the
previous chunk's last): it only primes the decoder, whose first frame is
otherwise wrong for codecs that overlap frames (AAC's first 1024 samples come
out at about half their level), and the server drops the sound that begins
before a chunk's first picture. Only a
source that does not allow this is re-encoded (H.264, a key frame every
chunk), from the moment it shows: uncompressed video (what most cameras
give), or key frames further apart than ``max_chunk_seconds``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

CHUNK_FORMAT = "matroska"
RAW_VIDEO_CODECS = ("rawvideo",)
# the encoder for sources that cannot be cut as they are
REENCODE_CODEC, REENCODE_OPTIONS = "libx264", {"preset": "veryfast", "tune": "zerolatency"}
DEFAULT_FPS = 30
# a cut chunk waits for sound up to this far behind the video, then goes without the rest
AUDIO_WAIT_SECONDS = 2.0


class ChunkingError(ValueError):
    """The source cannot be read or cut into chunks; the message says why."""


@dataclass(frozen=True)
class Chunk:
    """One chunk: its bytes, its number in the stream (0: the first), and the
    seconds of the source it spans (0: the first chunk's first frame)."""

    data: bytes
    number: int
    start: float
    end: float
    frames: int
    reencoded: bool


@dataclass
class _Pending:
    """The packets (or, re-encoding, the frames) of a chunk being collected."""

    start: float
    video: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    end: float | None = None  # set when the chunk is cut
    priming: av.Packet | None = None  # the sound packet before the chunk's own (a copy)


def open_source(source: str, options: dict[str, str] | None = None, input_format: str | None = None,
                follow: float | None = None) -> av.container.InputContainer:
    """``source`` opened for reading; ``follow`` (seconds) reads a file that is
    still being written until it has not grown for that long."""
    options = dict(options or {})
    if follow:
        options |= {"follow": "1", "rw_timeout": str(int(follow * 1e6))}
    try:
        return av.open(source, mode="r", format=input_format, options=options, timeout=30)
    except (av.FFmpegError, OSError) as error:
        raise ChunkingError(f"cannot open {source}: {error}") from None


def cut_chunks(container: av.container.InputContainer, chunk_seconds: float = 1.0,
               max_chunk_seconds: float | None = None) -> Iterator[Chunk]:
    """The chunks of ``container``'s first video stream (and first audio
    stream), as they become complete; key frames further apart than
    ``max_chunk_seconds`` (default: 4 x ``chunk_seconds``, 4 s at least) are re-encoded."""
    if not container.streams.video:
        raise ChunkingError("the source has no video stream")
    cutter = _Cutter(container, chunk_seconds, max_chunk_seconds or max(4 * chunk_seconds, 4.0))
    yield from cutter.run()


class _Cutter:
    def __init__(self, container: av.container.InputContainer, chunk_seconds: float, max_chunk_seconds: float):
        self.container, self.chunk_seconds, self.max_chunk_seconds = container, chunk_seconds, max_chunk_seconds
        self.video = container.streams.video[0]
        self.audio = container.streams.audio[0] if container.streams.audio else None
        self.fps = self.video.average_rate or self.video.guessed_rate or Fraction(DEFAULT_FPS)
        self.reencode = self.video.codec_context.name in RAW_VIDEO_CODECS
        self.origin: float | None = None  # source seconds of the stream's first frame
        self.current: _Pending | None = None
        self.cut: list[_Pending] = []  # cut, waiting for the audio to pass their end
        self.audio_seen = float("-inf")
        self.before_origin: list[av.Packet] = []  # sound demuxed before the first key frame
        self.video_seen = 0.0
        self.number = 0
        self.encoded_size: tuple[int, int] | None = None

    def run(self) -> Iterator[Chunk]:
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        try:
            for packet in self.container.demux(*streams):
                if packet.size == 0:
                    continue
                if packet.stream is self.video:
                    self._video_packet(packet)
                else:
                    self._audio_packet(packet)
                yield from self._ready()
        except av.FFmpegError as error:  # a live source that stops, or a file still being written that stopped
            if self.current is None:
                raise ChunkingError(f"cannot read the source: {error}") from None
        if self.reencode and self.current is not None:
            self._decoded_frames(None)
        if self.current is not None and self.current.video:
            self.current.end = self.current.start + len(self.current.video) / float(self.fps) \
                if self.reencode else self.video_seen
            self.cut.append(self.current)
        self.current = None
        self.audio_seen = float("inf")
        yield from self._ready()
        if self.number == 0:
            raise ChunkingError("the source gave no chunk: its video has no key frame with a timestamp")

    # ---------------------------------------------------------- packets

    def _time(self, packet: av.Packet) -> float | None:
        stamp = packet.pts if packet.pts is not None else packet.dts
        return float(stamp * packet.time_base) if stamp is not None else None

    def _video_packet(self, packet: av.Packet) -> None:
        time = self._time(packet)
        if time is None:
            return
        if self.origin is None:
            if not (packet.is_keyframe or self.reencode):
                return  # frames before the first key frame cannot be decoded
            self.origin = time
            self.current = _Pending(0.0)
            for early in self.before_origin:
                self._sound_before_origin(early)
            self.before_origin = []
        seconds = time - self.origin
        self.video_seen = max(self.video_seen, seconds + float((packet.duration or 0) * packet.time_base))
        if self.reencode:
            self._decoded_frames(packet)
            return
        length = seconds - self.current.start
        if packet.is_keyframe and length >= self.chunk_seconds - 0.5 / float(self.fps):
            self._cut(seconds)
        elif length > self.max_chunk_seconds:
            self._start_reencoding()
            self._decoded_frames(packet)
            return
        self.current.video.append(packet)

    def _overlaps_origin(self, packet: av.Packet) -> bool:
        return self._time(packet) + float((packet.duration or 0) * packet.time_base) > self.origin

    def _sound_before_origin(self, packet: av.Packet) -> None:
        """Sound from before the first frame: what overlaps it belongs to the
        first chunk, the latest packet before that primes it, the rest has no chunk."""
        if self._overlaps_origin(packet):
            self.current.audio.append(packet)
        elif self.current.start == 0.0 and (self.current.priming is None or
                                            self._time(packet) > self._time(self.current.priming)):
            self.current.priming = _copied(packet)

    def _audio_packet(self, packet: av.Packet) -> None:
        time = self._time(packet)
        if time is None:
            return
        if self.origin is None:
            self.before_origin = [*self.before_origin[-255:], packet]
            return
        if time < self.origin:
            self._sound_before_origin(packet)
            return
        seconds = time - self.origin
        self.audio_seen = max(self.audio_seen, seconds)
        # a late packet goes to the chunk its time falls in, when that one is still here
        owner = next((pending for pending in self.cut if pending.start <= seconds < pending.end), self.current)
        owner.audio.append(packet)

    def _cut(self, seconds: float) -> None:
        """End the current chunk at ``seconds``; sound already collected past it moves to the next."""
        self.current.end = seconds
        audio = self.current.audio
        following = _Pending(seconds, audio=[p for p in audio if self._time(p) - self.origin >= seconds])
        self.current.audio = [p for p in audio if self._time(p) - self.origin < seconds]
        self.cut.append(self.current)
        self.current = following

    def _ready(self) -> Iterator[Chunk]:
        """The cut chunks whose sound is complete (the audio has passed their end)."""
        while self.cut and (self.audio is None or self.audio_seen >= self.cut[0].end or
                            self.video_seen - self.cut[0].end > AUDIO_WAIT_SECONDS):
            yield self._chunk(self.cut.pop(0))

    # ---------------------------------------------------------- re-encoding

    def _start_reencoding(self) -> None:
        """From now on, decode and re-encode: the current chunk's packets first."""
        self.reencode = True
        packets, self.current.video = self.current.video, []
        for packet in packets:
            self._decoded_frames(packet)

    def _decoded_frames(self, packet: av.Packet | None) -> None:
        """Decode ``packet`` (None: flush the decoder) into the current chunk's
        frames, cutting a chunk every ``chunk_seconds`` of frames."""
        frames_per_chunk = max(1, round(self.chunk_seconds * float(self.fps)))
        try:
            frames = self.video.codec_context.decode(packet)
        except av.FFmpegError:
            return  # a damaged packet: its frame is lost, as a player would lose it
        for frame in frames:
            if len(self.current.video) >= frames_per_chunk:
                self._cut(self.current.start + len(self.current.video) / float(self.fps))
            self.current.video.append(frame)

    # ---------------------------------------------------------- muxing

    def _chunk(self, pending: _Pending) -> Chunk:
        if pending.audio:  # the next chunk's sound is primed by this one's last packet
            following = self.cut[0] if self.cut else self.current
            if following is not None:
                following.priming = _copied(max(pending.audio, key=self._time))
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format=CHUNK_FORMAT) as output:
            audio = output.add_stream_from_template(self.audio) if self.audio is not None and pending.audio else None
            if self.reencode:
                self._encode(output, pending.video)
            else:
                video = output.add_stream_from_template(self.video)
                for packet in pending.video:
                    packet.stream = video
                    output.mux(packet)
            for packet in ([pending.priming] if pending.priming is not None and audio is not None else []) + \
                    pending.audio:
                packet.stream = audio
                output.mux(packet)
        chunk = Chunk(buffer.getvalue(), self.number, pending.start, pending.end, len(pending.video), self.reencode)
        self.number += 1
        return chunk

    def _encode(self, output: av.container.OutputContainer, frames: list[av.VideoFrame]) -> None:
        if self.encoded_size is None:
            # the encoder wants even sizes
            self.encoded_size = (frames[0].width // 2 * 2, frames[0].height // 2 * 2)
        width, height = self.encoded_size
        stream = output.add_stream(REENCODE_CODEC, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(REENCODE_OPTIONS)
        # on the source's clock, as the copied sound is (from zero, the sound would lie past the pictures)
        first = round(frames[0].time * float(self.fps)) if frames[0].time is not None else 0
        for index, frame in enumerate(frames):
            converted = frame.reformat(width=width, height=height, format="yuv420p")
            converted.pts, converted.time_base = first + index, 1 / self.fps
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def _copied(packet: av.Packet) -> av.Packet:
    """A copy of ``packet`` (muxing empties the one it is given)."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
    copy.is_keyframe = packet.is_keyframe
    return copy
