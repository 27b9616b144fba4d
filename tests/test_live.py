"""Live streams through the handler in-process, as TorchServe's worker runs
it with sequence batching (a real ``ts.context.Context``, sequence ids in the
request headers): a recorded video sent live answers as its timeline does,
whatever the chunks' container and timestamps, with lossless or AAC sound;
streams never leak into each other; bad and hostile chunks are refused and
their stream goes on; a stream's state is dropped at its end, when idle and
by LRU, and the next chunk is told; memory stays bounded however long a
stream runs."""

from __future__ import annotations

import dataclasses
from itertools import combinations
from pathlib import Path

import pytest
import torch
import yaml

from devtools.worker import extract, handle, load_handler
from minimmf.serving.batch import PreparedBatch
from minimmf.serving.live import ChunkRequest, LiveStreams
from minimmf.serving.settings import SettingsError
from minimmf.serving.torchserve import archive_model
from tests.conftest import ROOT
from tests.live_media import FPS, chunks_of, recorded_video, remuxed

SCRIPT = "A person is at home."
WINDOW, EVERY = 2.0, 1.0


def live_config(**live) -> dict:
    config = yaml.safe_load((ROOT / "model-config-live.yaml").read_text())
    config["handler"]["live"].update(window_seconds=WINDOW, answer_every_seconds=EVERY, **live)
    return config


@pytest.fixture(scope="module")
def model_dir(small_model_dir, tmp_path_factory):
    """The live archive of an untrained tiny model, extracted as TorchServe does."""
    mar = archive_model(small_model_dir, tmp_path_factory.mktemp("store"), model_config=ROOT / "model-config-live.yaml",
                        handler=ROOT / "handler.py", name="MMF_model_live")
    return extract(mar, tmp_path_factory.mktemp("live_model"))


@pytest.fixture(scope="module")
def served(model_dir):
    return load_handler(model_dir, live_config(), name="MMF_model_live")


def fresh_streams(served, **live):
    """The served handler with no streams yet, ``live`` settings changed, and a
    clock the test moves (the handler's own streams are restored afterwards)."""
    handler, context = served
    kept, clock = handler.live, FakeClock()
    settings = dataclasses.replace(handler.settings, live=dataclasses.replace(handler.settings.live, **live))
    handler.live = LiveStreams(handler.predictor, settings, kept.idle_seconds, clock)
    yield handler, context, clock
    handler.live = kept


@pytest.fixture
def live(served):
    yield from fresh_streams(served)


@pytest.fixture
def quiet(served):
    """Streams whose first window ends after an hour: chunks are kept, no window goes through the model
    (for the tests of what streams hold, fast)."""
    yield from fresh_streams(served, answer_every_seconds=3600.0)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("recorded")
    return [recorded_video(folder / f"recorded{seed}.mkv", seed=seed) for seed in (0, 1)]


def chunk_request(data: bytes | None, number: int | None = None, script: str | None = SCRIPT) -> dict:
    request = {}
    if data is not None:
        request["data"] = bytearray(data)
    if script is not None:
        request["script"] = bytearray(script.encode())
    if number is not None:
        request["chunk"] = bytearray(str(number).encode())
    return request


def send(handler, context, *chunks: tuple[str, dict], end: bool = False) -> list[tuple[int, dict]]:
    """One batch: (stream id, request) pairs, as TorchServe's sequence batching hands them over."""
    headers = [{"ts_request_sequence_id": stream, **({"ts_request_sequence_end": "true"} if end else {})}
               for stream, _ in chunks]
    return handle(handler, context, [request for _, request in chunks], headers)


def stream(handler, context, stream_id: str, chunks) -> list[dict]:
    answers = []
    for chunk in chunks:
        (status, answer), = send(handler, context, (stream_id, chunk_request(chunk.data, chunk.number)))
        assert status == 200, answer
        answers.append(answer)
    return answers


def timeline(handler, context, video: Path, seconds: float) -> dict[tuple[float, float], dict[str, float]]:
    """The video's timeline through the same model, as a request for the whole video would have it."""
    saved, context.request_processor = handler.live, None
    handler.live = None  # the same handler answers whole videos when it is not live
    try:
        (status, answer), = handle(handler, context, [{"data": bytearray(video.read_bytes()), "script": SCRIPT,
                                                       "segment_seconds": str(seconds)}])
    finally:
        handler.live = saved
    assert status == 200, answer
    return {(window["start"], window["end"]): window["scores"] for window in answer["timeline"]}


def largest_difference(first: dict[str, float], second: dict[str, float]) -> float:
    return max(abs(first[name] - second[name]) for name in first)


def spans(answers: list[dict]) -> list[tuple[float, float] | None]:
    return [(a["window"]["start"], a["window"]["end"]) if a["window"] else None for a in answers]


# ------------------------------------------------------------ equivalence


@pytest.mark.parametrize("from_zero, audio_codec", [(False, "pcm_f32le"), (True, "pcm_f32le"), (False, "aac")],
                         ids=["stream timestamps", "each chunk from 0", "AAC sound"])
def test_a_recorded_video_sent_live_answers_as_its_timeline(live, videos, from_zero, audio_codec, tmp_path):
    handler, context, _ = live
    video = videos[0] if audio_codec == "pcm_f32le" else recorded_video(tmp_path / "aac.mkv", audio_codec="aac")
    chunks = chunks_of(video)
    assert [(c.start, c.end, c.frames) for c in chunks] == [(float(s), float(s + 1), FPS) for s in range(6)]
    if from_zero:
        chunks = [dataclasses.replace(chunk, data=remuxed(chunk.data, "matroska", from_zero=True))
                  for chunk in chunks]
    answers = stream(handler, context, "recorded", chunks)
    # a window ends every second and spans the 2 s before it (less at the start)
    assert spans(answers) == [(0.0, 1.0)] + [(end - 2.0, end) for end in range(2, 7)]
    assert [a["stream_seconds"] for a in answers] == [float(s) for s in range(1, 7)]
    expected = timeline(handler, context, video, WINDOW)
    assert list(expected) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    coinciding = {(a["window"]["start"], a["window"]["end"]): a["window"]["scores"] for a in answers
                  if (a["window"]["start"], a["window"]["end"]) in expected}
    assert coinciding.keys() == expected.keys()
    # the same scores to the answers' rounding (1e-6) and the model's batching, far within the 1e-3 asked for;
    # an untrained model's windows differ little, but a hundred times more than that
    for span, scores in coinciding.items():
        assert largest_difference(scores, expected[span]) < 1e-5, span
    assert min(largest_difference(a, b) for a, b in combinations(expected.values(), 2)) > 1e-4


@pytest.mark.parametrize("audio_codec, reencoded", [("pcm_f32le", False), ("aac", False), ("aac", True)],
                         ids=["lossless sound", "AAC sound", "AAC sound, re-encoded pictures"])
def test_live_windows_are_sampled_exactly_as_timeline_windows(live, audio_codec, reencoded, tmp_path):
    """The model inputs themselves: each live window that coincides with a timeline
    window has the same frames (through the same transforms) and audio, bit for bit.
    With AAC too, whose frames overlap: each chunk's priming packet makes its first
    frame decode as in the whole video (unprimed, at about half its level). A
    source with a single key frame is re-encoded (lossy pictures), its sound still
    copied: the same audio."""
    handler, _, _ = live
    # AAC in MP4, as the synthetic data has it: its priming packet has a negative timestamp
    video = recorded_video(tmp_path / ("v.mkv" if audio_codec == "pcm_f32le" else "v.mp4"), audio_codec=audio_codec,
                           keyframe_every=6 * FPS if reencoded else FPS)
    timeline_samples = handler.predictor.samples(video.read_bytes(), SCRIPT, WINDOW)
    expected = dict(zip(timeline_samples.spans, timeline_samples.windows, strict=True))
    matched = 0
    # re-encoded as make demo's stream is, in chunks of 0.5 s (where Matroska gave the pictures the sound's
    # start time: the first picture's is the video's smallest timestamp)
    chunks = chunks_of(video, 0.5 if reencoded else 1.0, max_chunk_seconds=1.0)
    assert all(chunk.reencoded for chunk in chunks) == reencoded
    for chunk in chunks:
        prepared = PreparedBatch(size=1)
        batch = handler.live.prepare({0: ChunkRequest("inputs", False, False, chunk_request(chunk.data))}, prepared)
        window = batch.results[0].window  # None: the chunk completes no window
        if window is not None and (window.start, window.end) in expected:
            sample, timeline_sample = prepared.samples[0], expected[(window.start, window.end)]
            assert reencoded or torch.equal(sample.video, timeline_sample.video)
            assert torch.equal(sample.audio, timeline_sample.audio)
            assert torch.equal(sample.input_ids, timeline_sample.input_ids)
            matched += 1
    assert matched == len(expected) == 3


def test_the_chunks_container_does_not_matter(live, videos, tmp_path):
    """The same H.264 and AAC packets as MPEG-TS, fragmented MP4 or Matroska chunks: the same answers."""
    handler, context, _ = live
    video = recorded_video(tmp_path / "aac.mp4", audio_codec="aac")
    chunks = chunks_of(video)[:3]
    answers = {}
    for container in ("mpegts", "mp4", "matroska"):
        remuxed_chunks = [dataclasses.replace(chunk, data=remuxed(chunk.data, container)) for chunk in chunks]
        answers[container] = stream(handler, context, container, remuxed_chunks)
    for container in ("mpegts", "mp4"):
        assert spans(answers[container]) == spans(answers["matroska"])
        for mine, theirs in zip(answers[container], answers["matroska"], strict=True):
            assert mine["window"]["scores"] == theirs["window"]["scores"], container


def test_started_and_ended_follow_the_labels(live, videos):
    handler, context, _ = live
    answers = stream(handler, context, "changes", chunks_of(videos[1])[:4])
    previous: list[str] = []
    for answer in answers:
        labels = answer["window"]["labels"]
        assert answer["started"] == [label for label in labels if label not in previous]
        assert answer["ended"] == [label for label in previous if label not in labels]
        assert labels == [name for name, p in answer["window"]["scores"].items() if p >= answer["threshold"]]
        previous = labels


# ------------------------------------------------------------ streams apart


def test_interleaved_streams_answer_as_each_alone(live, videos):
    handler, context, _ = live
    alone = [stream(handler, context, f"alone{i}", chunks_of(video)[:4]) for i, video in enumerate(videos)]
    first, second = (chunks_of(video)[:4] for video in videos)
    together = []
    for one, other in zip(first, second, strict=True):  # in the same batches, in both orders
        pair = [("A", chunk_request(one.data, one.number)), ("B", chunk_request(other.data, other.number))]
        results = send(handler, context, *(pair if one.number % 2 else pair[::-1]))
        assert [status for status, _ in results] == [200, 200]
        together.append({answer["stream"]: answer for _, answer in results})
    for name, own in zip("AB", alone, strict=True):
        for shared, single in zip((batch[name] for batch in together), own, strict=True):
            # the same to the model's batching (a batch of two, not one)
            assert largest_difference(shared["window"]["scores"], single["window"]["scores"]) < 1e-5
            assert spans([shared]) == spans([single]) and shared["chunk"] == single["chunk"]
    assert all(largest_difference(a["window"]["scores"], b["window"]["scores"]) > 1e-4
               for a, b in zip(*alone, strict=True))  # the two videos answer differently


def test_a_bad_chunk_is_refused_and_its_stream_goes_on(live, videos):
    handler, context, _ = live
    chunks = chunks_of(videos[0])[:4]
    reference = stream(handler, context, "reference", chunks)
    bad = chunk_request(chunks[2].data[:500], 2)
    answers = stream(handler, context, "bad", chunks[:2])
    (status, error), (other_status, other) = send(handler, context, ("bad", bad),
                                                  ("other", chunk_request(chunks[0].data, 0)))
    assert status == 400 and error["code"] == 400 and "video" in error["error"]
    assert other_status == 200 and other["window"] == reference[0]["window"]
    answers += stream(handler, context, "bad", chunks[2:])
    assert [a["window"] for a in answers] == [a["window"] for a in reference]


@pytest.mark.slow
def test_hostile_chunks_touch_no_stream(live, videos, tmp_path):
    """Every upload of README's "Bounded input" as a chunk: its documented answer,
    beside a good chunk of another stream, and its stream goes on as if it had
    never come (a hostile upload that is a video, the resolution change, goes to
    a stream of its own)."""
    from devtools.hostile_inputs import hostile_requests

    handler, context, _ = live
    chunks = chunks_of(videos[0])
    reference = stream(handler, context, "reference", chunks)
    stream(handler, context, "victim", chunks[:1])
    for index, (name, hostile) in enumerate(hostile_requests(tmp_path, chunks[0].data, SCRIPT, 200_000_000).items()):
        request = {key: bytearray(value[1].encode() if isinstance(value[1], str) else value[1])
                   for key, value in hostile.files.items()}  # as TorchServe hands form parts over
        good = chunks[index % len(chunks)]
        target = "victim" if hostile.status == 400 else f"hostile{index}"
        (status, answer), (good_status, good_answer) = send(handler, context, (target, request),
                                                            (f"good{index}", chunk_request(good.data)))
        assert status == hostile.status, (name, answer)
        if hostile.status == 400:
            assert hostile.error_names in answer["error"], (name, answer)
        assert good_status == 200 and good_answer["stream_seconds"] == 1.0, name
    assert stream(handler, context, "victim", chunks[1:]) == [{**a, "stream": "victim"} for a in reference[1:]]


def test_a_chunk_sent_twice_is_refused(quiet, videos):
    handler, context, _ = quiet
    chunks = chunks_of(videos[0])
    stream(handler, context, "twice", chunks[:2])
    (status, error), = send(handler, context, ("twice", chunk_request(chunks[1].data, 1)))
    assert status == 409 and "already received" in error["error"]
    assert handler.live.streams["twice"].frames_seen == 2 * FPS


def test_the_first_chunk_needs_a_script(quiet, videos):
    handler, context, _ = quiet
    (status, error), = send(handler, context, ("mute", chunk_request(chunks_of(videos[0])[0].data, 0, script=None)))
    assert status == 400 and "script" in error["error"]
    assert "mute" not in handler.live.streams


# ------------------------------------------------------------ state dropped


def test_the_end_of_a_stream_drops_its_state(quiet, videos):
    handler, context, _ = quiet
    chunks = chunks_of(videos[0])
    stream(handler, context, "ending", chunks[:2])
    (status, answer), = send(handler, context, ("ending", {}), end=True)
    assert status == 200 and answer["stream_ended"] and answer["window"] is None
    assert context.request_processor[0].get_response_headers()["ts_request_sequence_end"] == "ending"
    assert "ending" not in handler.live.streams
    (status, answer), = send(handler, context, ("ending", chunk_request(chunks[2].data, 2)))
    assert status == 200 and "the client ended it" in answer["state_lost"]
    assert answer["stream_seconds"] == 1.0  # it starts again with this chunk


def test_a_last_chunk_may_end_its_stream(live, videos):
    handler, context, _ = live
    chunks = chunks_of(videos[0])
    stream(handler, context, "last", chunks[:1])
    (status, answer), = send(handler, context, ("last", chunk_request(chunks[1].data, 1)), end=True)
    assert status == 200 and answer["stream_ended"] and answer["window"]["end"] == 2.0  # answered, then ended
    assert "last" not in handler.live.streams


def test_a_refused_last_chunk_still_ends_its_stream(quiet, videos):
    handler, context, _ = quiet
    chunks = chunks_of(videos[0])
    stream(handler, context, "refused", chunks[:1])
    (status, error), = send(handler, context, ("refused", chunk_request(b"not a video", 1)), end=True)
    assert status == 400 and "refused" not in handler.live.streams
    assert context.request_processor[0].get_response_headers()["ts_request_sequence_end"] == "refused"


def test_an_idle_stream_is_dropped_and_told(quiet, videos):
    handler, context, clock = quiet
    chunks = chunks_of(videos[0])
    stream(handler, context, "idle", chunks[:2])
    stream(handler, context, "busy", chunks[:1])
    clock.now += handler.live.idle_seconds / 2
    stream(handler, context, "busy", chunks[1:2])
    clock.now += handler.live.idle_seconds / 2 + 2
    answers = stream(handler, context, "busy", chunks[2:3])
    assert answers[0]["state_lost"] is None and answers[0]["stream_seconds"] == 3.0
    (status, answer), = send(handler, context, ("idle", chunk_request(chunks[2].data, 2)))
    assert status == 200 and "sequenceMaxIdleMSec" in answer["state_lost"]


def test_more_streams_than_max_streams_drop_the_least_recently_used(quiet, videos):
    handler, context, _ = quiet
    chunks = chunks_of(videos[0])
    limit = handler.live.live.max_streams
    for index in range(limit):
        stream(handler, context, f"s{index}", chunks[:1])
    stream(handler, context, "s0", chunks[1:2])  # s1 is now the least recently used
    stream(handler, context, "newcomer", chunks[:1])
    assert len(handler.live.streams) == limit and "s1" not in handler.live.streams
    (status, answer), = send(handler, context, ("s1", chunk_request(chunks[1].data, 1)))
    assert status == 200 and "handler.live.max_streams" in answer["state_lost"]


def test_a_worker_that_never_saw_the_stream_says_it_starts_again(quiet, videos):
    """What a restarted worker answers: a chunk that is not a stream's first, of a stream it does not hold."""
    handler, context, _ = quiet
    chunk = chunks_of(videos[0])[5]
    (status, answer), = send(handler, context, ("elsewhere", chunk_request(chunk.data, 5)))
    assert status == 200 and "the worker was restarted" in answer["state_lost"]
    assert "starts again with this chunk" in answer["state_lost"] and answer["stream_seconds"] == 1.0
    # a first chunk, or one TorchServe opened the sequence for, is a stream that starts: nothing was lost
    (status, answer), = send(handler, context, ("fresh", chunk_request(chunk.data, 0)))
    assert answer["state_lost"] is None
    (status, answer), = handle(handler, context, [chunk_request(chunk.data, 7)],
                               [{"ts_request_sequence_id": "ts-seq-1", "ts_request_sequence_start": "true"}])
    assert answer["state_lost"] is None


# ------------------------------------------------------------ memory


def prepare(handler, stream_id: str, chunk, number: int):
    """A chunk through the streams alone (its window's sample made, not run through the model)."""
    prepared = PreparedBatch(size=1)
    batch = handler.live.prepare({0: ChunkRequest(stream_id, False, False, chunk_request(chunk.data, number))},
                                 prepared)
    assert not prepared.errors, prepared.errors
    return batch.results[0]


def test_state_stays_bounded_however_long_the_stream(live, videos):
    handler, _, _ = live
    chunks = chunks_of(videos[0])
    sizes = []
    for second in range(30):
        result = prepare(handler, "long", chunks[second % len(chunks)], second)
        assert result.window.end == second + 1.0
        state = handler.live.streams["long"]
        assert len(state.frames) <= handler.live.kept_frames_bound()
        sizes.append(state.state_bytes())
    assert max(sizes[6:]) <= max(sizes[:6])  # it stops growing once its windows are under way
    assert 0 < max(sizes) < handler.settings.live.max_stream_bytes


def test_max_stream_bytes_is_checked_at_start_and_for_every_chunk(model_dir, live, videos):
    # at start: a 480p stream under way keeps up to (2 s / 1 s + 1) x 8 frames of 3 x 72 x 96 floats: 2.0 MB
    with pytest.raises(SettingsError, match="handler.live.max_stream_bytes"):
        load_handler(model_dir, live_config(max_stream_bytes=1_000_000), name="MMF_model_live")
    # for every chunk: a limit lower than any stream under way needs
    handler, context, _ = live
    chunks = chunks_of(videos[0])
    prepare(handler, "big", chunks[0], 0)
    limit = handler.live.live
    handler.live.live = dataclasses.replace(limit, max_stream_bytes=1)
    (status, error), = send(handler, context, ("big", chunk_request(chunks[1].data, 1)))
    assert status == 400 and "handler.live.max_stream_bytes" in error["error"]
    assert handler.live.streams["big"].frames_seen == FPS  # as it was
    handler.live.live = limit
    assert prepare(handler, "big", chunks[1], 1).window.end == 2.0
