"""Live streams: what is happening now, on a video that is still being recorded.

A stream is a sequence of chunks, each a short, independently decodable
video (an MPEG-TS, fragmented MP4 or Matroska segment), sent to the live
model with TorchServe's sequence id; TorchServe's sequence batching gives a
stream's chunks to one worker, one at a time and in order, and batches
chunks of different streams together. A chunk is placed after the previous
one by its decoded duration: the stream's time counts its frames at the
first chunk's frame rate and its audio samples one after the other, as a
video's timeline counts a whole video's.

Windows end every ``answer_every_seconds`` of stream time and span the
``window_seconds`` before (less at the start); a chunk that completes one or
more is answered with the latest. A window takes its frames and audio by the
timeline's rules (``window_frame_indices``; the audio from its start), so a
recorded video sent live answers every window a timeline of it has as that
timeline does. Each stream keeps only what its coming windows need
(``LiveStream``): their frames, already through the dataset's per-frame
transform (the model's input size), and the audio their pipeline reads, so
its memory is bounded by the settings, never by how long it has run.

``LiveStreams`` holds one worker's streams: it drops a stream at its end, when
it has been idle for TorchServe's ``sequenceMaxIdleMSec``, and the least
recently used one beyond ``max_streams``, and says so to the stream's next
chunk. One stream's bad chunk changes nothing of any stream's state.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from minimmf.common.sample import Sample
from minimmf.datasets.base_dataset_builder import SampleMaker
from minimmf.datasets.video_clips import DecodedChunk, DecodedClip, VideoInfo, window_frame_indices
from minimmf.serving.answers import build_answer
from minimmf.serving.batch import PreparedBatch
from minimmf.serving.inputs import BadRequest, ParsedChunk, parse_chunk
from minimmf.serving.predictor import Predictor
from minimmf.serving.settings import HandlerSettings, SettingsError

# TorchServe's idle clock and ours start a moment apart: wait this much longer before dropping an idle stream
IDLE_GRACE_SECONDS = 1.0
# how many dropped streams are remembered (per stream held), to tell their next chunk why
FORGOTTEN_PER_STREAM = 4
# the frame size the memory estimate at start-up assumes (Charades' 480p)
TYPICAL_FRAME = (480, 854)


class DuplicateChunk(BadRequest):
    """A chunk the stream already has (a client's retry); answered with HTTP 409."""

    status = 409


@dataclass(frozen=True)
class ChunkRequest:
    """One request to the live model, as the handler reads it from TorchServe."""

    stream_id: str | None  # TorchServe's sequence id
    opened_by_server: bool  # TorchServe opened the sequence for this request (it came without an id)
    ends_stream: bool  # the client asked to end the stream (header ts_request_sequence_end)
    fields: dict[str, Any]  # the request's form fields


@dataclass(frozen=True)
class WindowGrid:
    """Where windows fall: window k (k = 1, 2, ...) ends at k x ``every``
    seconds and starts ``length`` seconds before (at 0 at the earliest)."""

    length: float
    every: float
    frames_per_clip: int

    def span(self, k: int) -> tuple[float, float]:
        end = k * self.every
        return max(0.0, end - self.length), end

    def latest(self, seconds: float) -> int:
        """The last window a stream of ``seconds`` has completed (0: none yet)."""
        return math.floor(seconds / self.every + 1e-9)

    def frames(self, k: int, fps: float) -> list[int]:
        """The stream's frame indices window k takes (the timeline's rule)."""
        start, end = self.span(k)
        return window_frame_indices(start, end, fps, sys.maxsize, self.frames_per_clip)

    def audio_start(self, k: int, rate: int) -> int:
        return round(self.span(k)[0] * rate)

    def starting_before(self, first: int, seconds: float) -> range:
        """Windows from ``first`` on that start before ``seconds``."""
        last = first
        while self.span(last)[0] < seconds:
            last += 1
        return range(first, last)


@dataclass(frozen=True)
class Window:
    """A window due for an answer: its seconds and model input."""

    start: float
    end: float
    clip: DecodedClip


@dataclass
class LiveStream:
    """What one stream keeps between chunks. ``frames`` and ``audio`` hold only
    what its unanswered windows need: frames by their index in the stream,
    audio slices by the sample each starts at (a window's audio is the slice
    at its start)."""

    stream_id: str
    script: str
    text: dict[str, Any]
    last_use: float
    expected_labels: list[str] | None = None  # the labels the client expects, if it sent any
    fps: float | None = None  # the first chunk's frame rate
    frame_size: tuple[int, int] | None = None  # the first chunk's frame size: later frames are scaled to it
    audio_format: tuple[int, str] | None = None  # (rate, layout) of the first chunk with sound
    audio_channels: int = 0
    frames_seen: int = 0
    audio_seen: int = 0  # samples placed so far
    frames: dict[int, torch.Tensor] = field(default_factory=dict)
    audio: dict[int, list[np.ndarray]] = field(default_factory=dict)
    answered: int = 0  # the last window answered (0: none yet)
    labels: list[str] = field(default_factory=list)  # the last answer's labels
    chunks: int = 0  # chunks received
    last_chunk: int | None = None  # the client's number of the last chunk received

    @property
    def seconds(self) -> float:
        return self.frames_seen / (self.fps or 1.0)

    def state_bytes(self) -> int:
        """Memory the kept frames and audio take (a tensor several indices share counted once)."""
        frames = {tensor.data_ptr(): tensor.nbytes for tensor in self.frames.values()}
        return sum(frames.values()) + sum(piece.nbytes for pieces in self.audio.values() for piece in pieces)

    def chunk_plan(self, grid: WindowGrid) -> Callable[[VideoInfo], set[int]]:
        """Which frames of the next chunk (given its frame count and rate) the stream keeps."""
        def plan(info: VideoInfo) -> set[int]:
            fps, first = self.fps or info.fps or 1.0, self.frames_seen
            stop = first + info.num_frames
            return {index - first for index in self._frames_needed(grid, fps, stop / fps) if first <= index < stop}
        return plan

    def _frames_needed(self, grid: WindowGrid, fps: float, seconds: float) -> set[int]:
        """The frames of the windows a stream of ``seconds`` keeps frames for:
        the latest one due (earlier unanswered ones are skipped) and those
        started but not ended."""
        first = max(self.answered + 1, grid.latest(seconds))
        return {index for k in grid.starting_before(first, seconds) for index in grid.frames(k, fps)}

    def after(self, chunk: DecodedChunk, grid: WindowGrid, audio_samples: int | None,
              now: float) -> tuple[LiveStream, Window | None]:
        """This stream with ``chunk`` added (self is left as it was), and the
        window it completes, if any."""
        fps = self.fps or chunk.info.fps or 1.0
        first, frames_seen = self.frames_seen, self.frames_seen + chunk.info.num_frames
        seconds = frames_seen / fps
        latest = grid.latest(seconds)
        due = latest if latest > self.answered else None
        needed = self._frames_needed(grid, fps, seconds)
        frames = {index: tensor for index, tensor in self.frames.items() if index in needed}
        # a copy of each new frame: the decoded ones are views of a batch of frames
        frames.update({first + index: tensor.clone(memory_format=torch.contiguous_format)
                       for index, tensor in chunk.frames.items() if first + index in needed})
        stream = dataclasses.replace(self, fps=fps, frame_size=self.frame_size or chunk.frame_size,
                                     frames_seen=frames_seen, frames=frames, last_use=now, chunks=self.chunks + 1)
        if stream.audio_format is None and chunk.audio is not None:  # the stream's sound starts with this chunk
            stream.audio_format, stream.audio_channels = chunk.audio_format, chunk.audio.shape[0]
            stream.audio_seen = round(first / fps * chunk.audio_format[0])
        if stream.audio_format is not None:
            stream._add_audio(chunk, grid, audio_samples, due if due is not None else self.answered + 1)
        window = stream._window(due, grid, audio_samples) if due is not None else None
        if window is not None:
            stream.answered = due
            stream._drop_answered(grid)
        return stream, window

    def _add_audio(self, chunk: DecodedChunk, grid: WindowGrid, audio_samples: int | None, first: int) -> None:
        """Place the chunk's audio right after the previous chunk's (silence
        for a chunk without sound) into the slices of windows ``first`` and on
        that start before its end."""
        rate = self.audio_format[0]
        samples = chunk.audio if chunk.audio is not None else \
            torch.zeros(self.audio_channels, round(chunk.info.num_frames / self.fps * rate))
        begin, end = self.audio_seen, self.audio_seen + samples.shape[1]
        audio = {start: list(pieces) for start, pieces in self.audio.items()}
        for k in self._windows_heard(grid, first, end):
            start = grid.audio_start(k, rate)
            stop = start + (audio_samples if audio_samples is not None else round(grid.span(k)[1] * rate) - start)
            pieces = audio.setdefault(start, [])
            filled = start + sum(piece.shape[1] for piece in pieces)
            if filled >= begin and min(end, stop) > filled:  # a copy: a slice would hold the whole chunk's audio
                pieces.append(samples[:, filled - begin:min(end, stop) - begin].numpy().copy())
        self.audio, self.audio_seen = audio, end

    def _windows_heard(self, grid: WindowGrid, first: int, samples: int) -> range:
        """Windows from ``first`` on whose audio starts before sample ``samples``."""
        last = first
        while grid.audio_start(last, self.audio_format[0]) < samples:
            last += 1
        return range(first, last)

    def _window(self, k: int, grid: WindowGrid, audio_samples: int | None) -> Window:
        start, end = grid.span(k)
        video = torch.stack([self.frames[index] for index in grid.frames(k, self.fps)])
        if self.audio_format is None:
            audio, rate = torch.zeros(1, 0), None
        else:
            rate = self.audio_format[0]
            pieces = self.audio.get(grid.audio_start(k, rate), [])
            audio = torch.from_numpy(np.concatenate(pieces, axis=1)) if pieces else \
                torch.zeros(self.audio_channels, 0)
            if audio_samples is None:  # a pipeline that reads all of it gets the window's audio
                audio = audio[:, :round(end * rate) - grid.audio_start(k, rate)]
        clip = DecodedClip(video=video, audio=audio, audio_sample_rate=rate, num_video_frames=self.frames_seen,
                           video_fps=self.fps, start=start, end=end)
        return Window(start, end, clip)

    def _drop_answered(self, grid: WindowGrid) -> None:
        """Keep only what the windows after the one just answered need."""
        needed = self._frames_needed(grid, self.fps, self.seconds)
        self.frames = {index: tensor for index, tensor in self.frames.items() if index in needed}
        if self.audio_format is not None:
            rate = self.audio_format[0]
            starts = {grid.audio_start(k, rate) for k in self._windows_heard(grid, self.answered + 1, self.audio_seen)}
            self.audio = {start: pieces for start, pieces in self.audio.items() if start in starts}


@dataclass
class ChunkResult:
    """What a request to the live model did, for its answer."""

    stream: LiveStream | None  # None: a request that ended a stream this worker did not hold
    stream_id: str
    chunk: int | None = None
    window: Window | None = None
    row: int | None = None  # the window's sample in the batch
    state_lost: str | None = None
    ended: bool = False


@dataclass
class LiveBatch:
    """A batch of requests to the live model: their errors and window samples
    (``prepared``, as a batch of whole videos has them) and what each did."""

    prepared: PreparedBatch
    results: dict[int, ChunkResult] = field(default_factory=dict)
    stream_ids: set[str | None] = field(default_factory=set)  # of every request, answered or refused
    decode_seconds: float = 0.0


class LiveStreams:
    """One worker's streams: ``prepare`` adds a batch's chunks to their streams
    and makes the samples of the windows they complete; ``answers`` turns the
    model's probabilities into each request's answer."""

    def __init__(self, predictor: Predictor, settings: HandlerSettings, idle_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        if settings.live is None:
            raise SettingsError("the live model needs sequenceBatching: true in model-config.yaml")
        self.predictor, self.settings, self.live = predictor, settings, settings.live
        self.maker: SampleMaker = predictor.sample_maker
        self.grid = WindowGrid(self.live.window_seconds, self.live.answer_every_seconds,
                               predictor.frames_per_clip)
        self.idle_seconds, self.clock = idle_seconds, clock
        self.streams: OrderedDict[str, LiveStream] = OrderedDict()  # least recently used first
        self.forgotten: OrderedDict[str, str] = OrderedDict()  # dropped stream -> why
        self._check_memory()

    def kept_frames_bound(self) -> int:
        """The most frames a stream keeps: those of the windows under way at once."""
        windows = math.ceil(self.live.window_seconds / self.live.answer_every_seconds) + 1
        return windows * self.grid.frames_per_clip

    def _check_memory(self) -> None:
        """Refuse settings under which a 480p stream would need more than
        ``max_stream_bytes`` (each chunk is also checked as it comes)."""
        frame = self.maker.transform_frames(np.zeros((1, *TYPICAL_FRAME, 3), dtype=np.uint8))[0]
        needed = self.kept_frames_bound() * frame.nbytes
        if needed > self.live.max_stream_bytes:
            raise SettingsError(f"handler.live: a 480p stream keeps up to {self.kept_frames_bound()} frames of "
                                f"{frame.nbytes:,} bytes ({needed:,} bytes), over handler.live.max_stream_bytes "
                                f"({self.live.max_stream_bytes:,}): raise it, or shorten window_seconds or "
                                "lengthen answer_every_seconds")

    # ------------------------------------------------------------ a batch

    def prepare(self, requests: dict[int, ChunkRequest], prepared: PreparedBatch) -> LiveBatch:
        """Each request's chunk (by its index in the batch ``prepared`` records
        the errors of) added to its stream (a failure is that request's answer,
        and leaves every stream as it was), with the samples of the windows the
        chunks complete."""
        now = self.clock()
        self._drop_idle(now)
        batch = LiveBatch(prepared, stream_ids={request.stream_id for request in requests.values()})
        for index, request in requests.items():
            with batch.prepared.catch(index):
                try:
                    result = self._receive(request, batch.stream_ids, now, batch)
                finally:
                    if request.ends_stream and request.stream_id:  # even when its last chunk is refused
                        self._end(request.stream_id)
                if result.window is not None:
                    result.row = len(batch.prepared.samples)
                    batch.prepared.samples.append(self._sample(result.stream, result.window))
                batch.results[index] = result
        return batch

    def answers(self, batch: LiveBatch, probabilities: torch.Tensor | None) -> dict[int, dict[str, Any]]:
        """The JSON answer of each request that has no error, by its index. The
        batch's streams were last used now: TorchServe's idle clock starts at the answer too."""
        now = self.clock()
        for stream_id in batch.stream_ids:
            if stream_id in self.streams:
                self.streams[stream_id].last_use = now
        return {index: self._answer(result, probabilities) for index, result in batch.results.items()}

    # ------------------------------------------------------------ streams

    def _receive(self, request: ChunkRequest, in_batch: set[str | None], now: float, batch: LiveBatch) -> ChunkResult:
        if not request.stream_id:
            raise BadRequest("a live chunk needs TorchServe's sequence id: register the live model with "
                             "sequenceBatching (model-config-live.yaml)")
        parsed = parse_chunk(request.fields, self.settings, request.ends_stream)
        stream_id = request.stream_id
        stream = self.streams.get(stream_id)
        if stream is not None:
            if parsed.chunk is not None and stream.last_chunk is not None and parsed.chunk <= stream.last_chunk:
                raise DuplicateChunk(f"chunk {parsed.chunk} of this stream was already received (the last was "
                                     f"{stream.last_chunk}): send each chunk once, in order")
        if parsed.video is None:  # a request that only ends the stream (prepare drops it)
            return ChunkResult(stream, stream_id, parsed.chunk, ended=True)
        lost = None
        if stream is None:
            lost = self._lost(stream_id, request, parsed)
            stream = self._new_stream(stream_id, parsed.script, lost, now)
        elif parsed.script is not None and parsed.script != stream.script:
            stream = dataclasses.replace(stream, script=parsed.script, text=self.maker.text_fields(parsed.script))
        if parsed.expected_labels is not None:
            stream = dataclasses.replace(stream, expected_labels=parsed.expected_labels)
        started = time.perf_counter()
        decoded = self.maker.decode_chunk(parsed.video, stream.chunk_plan(self.grid), stream.frame_size,
                                          stream.audio_format)
        batch.decode_seconds += time.perf_counter() - started
        updated, window = stream.after(decoded, self.grid, self.maker.audio_samples_needed, now)
        updated.last_chunk = parsed.chunk if parsed.chunk is not None else updated.last_chunk
        size = updated.state_bytes()
        if size > self.live.max_stream_bytes:
            raise BadRequest(f"this chunk would make the stream's state {size:,} bytes, over the limit of "
                             f"{self.live.max_stream_bytes:,} (handler.live.max_stream_bytes in the live model's "
                             "model-config.yaml): send smaller frames or fewer audio channels")
        self._keep(updated, in_batch)
        number = parsed.chunk if parsed.chunk is not None else updated.chunks - 1
        return ChunkResult(updated, stream_id, number, window, state_lost=lost, ended=request.ends_stream)

    def _lost(self, stream_id: str, request: ChunkRequest, parsed: ParsedChunk) -> str | None:
        """Why a stream this worker does not hold lost its state, or None for a stream that starts here."""
        why = self.forgotten.get(stream_id)
        if request.opened_by_server or parsed.chunk == 0:
            return None
        if why is None and parsed.chunk is None:
            return None  # a stream the client names, without numbering its chunks: it starts here
        why = why or ("this worker holds nothing of it: the worker was restarted, or TorchServe had ended the "
                      "stream and gave it to another worker")
        return (f"the stream's state was lost ({why}); it starts again with this chunk, whose stream time "
                "is 0")

    def _new_stream(self, stream_id: str, script: str | None, lost: str | None, now: float) -> LiveStream:
        if script is None:
            start = "this stream's state was lost, so its" if lost else "the"
            raise BadRequest(f"no script: {start} first chunk must carry the script (the form field 'script', or "
                             "an 'info' JSON); send it with every chunk to survive a lost state")
        return LiveStream(stream_id, script, self.maker.text_fields(script), now)

    def _keep(self, stream: LiveStream, in_batch: set[str | None]) -> None:
        """Store the stream's new state; a new stream over ``max_streams`` drops
        the least recently used one (never one of this batch)."""
        if stream.stream_id not in self.streams:
            for victim in [key for key in self.streams if key not in in_batch][:max(
                    0, len(self.streams) + 1 - self.live.max_streams)]:
                self._forget(victim, f"more than handler.live.max_streams ({self.live.max_streams}) streams were "
                                     "open on this worker, and it was the one least recently used")
        self.forgotten.pop(stream.stream_id, None)
        self.streams[stream.stream_id] = stream
        self.streams.move_to_end(stream.stream_id)

    def _end(self, stream_id: str) -> None:
        if self.streams.pop(stream_id, None) is not None:
            self._remember(stream_id, "the client ended it (ts_request_sequence_end)")

    def _drop_idle(self, now: float) -> None:
        for stream_id in [key for key, stream in self.streams.items()
                          if now - stream.last_use > self.idle_seconds + IDLE_GRACE_SECONDS]:
            self._forget(stream_id, f"it sent nothing for more than sequenceMaxIdleMSec ({self.idle_seconds:g} s)")

    def _forget(self, stream_id: str, why: str) -> None:
        del self.streams[stream_id]
        self._remember(stream_id, why)

    def _remember(self, stream_id: str, why: str) -> None:
        self.forgotten[stream_id] = why
        self.forgotten.move_to_end(stream_id)
        while len(self.forgotten) > FORGOTTEN_PER_STREAM * self.live.max_streams:
            self.forgotten.popitem(last=False)

    # ------------------------------------------------------------ answers

    def _sample(self, stream: LiveStream, window: Window) -> Sample:
        return self.maker.from_clip(window.clip, stream.script, stream.text)

    def _answer(self, result: ChunkResult, probabilities: torch.Tensor | None) -> dict[str, Any]:
        stream, predictor = result.stream, self.predictor
        answer: dict[str, Any] = {
            "stream": result.stream_id,
            "chunk": result.chunk,
            "stream_seconds": round(stream.seconds, 3) if stream is not None else None,
            "window": None,
            "started": [],
            "ended": [],
            "threshold": predictor.threshold,
            "state_lost": result.state_lost,
            "stream_ended": result.ended,
        }
        if result.window is not None:
            window = build_answer(probabilities[result.row], predictor.classes, predictor.threshold,
                                  self.settings.top_k, stream.expected_labels)
            del window["threshold"]  # the answer's
            answer["window"] = {"start": round(result.window.start, 3), "end": round(result.window.end, 3), **window}
            labels = window["labels"]
            answer["started"] = _missing_from(labels, stream.labels)
            answer["ended"] = _missing_from(stream.labels, labels)
            stream.labels = labels
        return answer


def _missing_from(labels: Iterable[str], others: Iterable[str]) -> list[str]:
    others = set(others)
    return [label for label in labels if label not in others]
