"""The client's chunker on real encoded videos: cut at key frames without
re-encoding, the chunks decode (as the server decodes them) to exactly the
source's frames and samples, AAC sound too, each chunk primed by the sound
packet before its own; re-encoded only when it must be (key frames too far
apart, uncompressed video); and request.py --live's local errors."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np
import pytest

from minimmf.datasets.video_clips import decode_chunk
from minimmf.serving.chunking import ChunkingError, cut_chunks, open_source
from minimmf.utils.video_writer import write_video
from tests.conftest import ROOT
from tests.live_media import FPS, chunks_of, recorded_video
from tests.media import decode_all_audio, decode_all_frames


def server_sound(chunk) -> np.ndarray:
    """A chunk's sound as the server keeps it: without its priming packet's."""
    return decode_chunk(io.BytesIO(chunk.data), lambda info: [0]).audio.numpy()


def frames_and_sound(chunks) -> tuple[np.ndarray, np.ndarray]:
    pieces = [(decode_all_frames(io.BytesIO(c.data)), server_sound(c)) for c in chunks]
    return np.concatenate([f for f, _ in pieces]), np.concatenate([a for _, a in pieces], axis=1)


def sound_times(source) -> list[int]:
    """When each audio packet starts, in milliseconds after the first picture
    (Matroska keeps milliseconds; a muxer may move every stream's clock)."""
    with av.open(source) as container:
        stamps = [(packet.stream.type, float(packet.pts * packet.time_base)) for packet in container.demux()
                  if packet.size and packet.pts is not None]
    # the first picture: the smallest video timestamp (a short chunk's start_time can be the sound's)
    start = min(time for kind, time in stamps if kind == "video")
    return [round((time - start) * 1000) for kind, time in stamps if kind == "audio"]


def test_chunks_are_the_source_cut_at_key_frames(tmp_path):
    video = recorded_video(tmp_path / "v.mkv", seconds=6, keyframe_every=FPS // 2)
    chunks = chunks_of(video, 1.0)
    assert [(c.number, c.start, c.end, c.frames, c.reencoded) for c in chunks] == \
        [(n, float(n), float(n + 1), FPS, False) for n in range(6)]
    for chunk in chunks:
        with av.open(io.BytesIO(chunk.data)) as container:
            assert container.format.name == "matroska,webm"
            first = next(p for p in container.demux(video=0) if p.size)
            assert first.is_keyframe
    frames, sound = frames_and_sound(chunks)
    assert np.array_equal(frames, decode_all_frames(str(video)))  # the packets themselves, not re-encoded
    assert np.array_equal(sound, decode_all_audio(str(video)))


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_aac_chunks_are_primed_by_the_packet_before_their_own(tmp_path, suffix):
    """AAC frames overlap: a chunk's first frame decodes whole only after the
    packet before it. Each chunk carries that packet too (the previous chunk's
    last; for the first, the encoder's priming packet), and the server drops
    its sound: the chunks' sound is the source's, sample for sample."""
    video = recorded_video(tmp_path / f"v.{suffix}", seconds=3, audio_codec="aac")
    chunks = chunks_of(video)
    source = sound_times(str(video))
    for chunk in chunks:
        start, end = round(chunk.start * 1000), round(chunk.end * 1000)
        own = [time - start for time in source if start <= time < end]
        before = [time - start for time in source if time < start][-1]
        assert sound_times(io.BytesIO(chunk.data)) == [before, *own]
    _, sound = frames_and_sound(chunks)
    assert np.array_equal(sound, decode_all_audio(str(video)))


def test_half_second_chunks_and_a_short_tail(tmp_path):
    video = recorded_video(tmp_path / "v.mkv", seconds=3, keyframe_every=FPS // 2)
    chunks = chunks_of(video, 0.5)
    assert [c.frames for c in chunks] == [FPS // 2] * 6
    chunks = chunks_of(video, 2.0)
    assert [(c.start, c.end, c.frames) for c in chunks] == [(0.0, 2.0, 2 * FPS), (2.0, 3.0, FPS)]


def test_key_frames_too_far_apart_are_re_encoded(tmp_path):
    video = recorded_video(tmp_path / "sparse.mkv", seconds=8, keyframe_every=1000)
    chunks = chunks_of(video, 1.0)
    assert all(c.reencoded for c in chunks) and [c.frames for c in chunks] == [FPS] * 8
    frames, sound = frames_and_sound(chunks)
    original = decode_all_frames(str(video))
    assert frames.shape == original.shape
    assert np.abs(frames.astype(int) - original.astype(int)).mean() < 12  # lossy, but the same pictures
    assert np.array_equal(sound, decode_all_audio(str(video)))  # the sound is still copied
    for chunk in chunks:  # the new pictures keep the clock of the copied sound
        with av.open(io.BytesIO(chunk.data)) as container:
            first_picture = next(container.decode(video=0)).time
        with av.open(io.BytesIO(chunk.data)) as container:
            first_sound = next(container.decode(audio=0)).time
        assert first_picture == pytest.approx(chunk.start, abs=1 / FPS)
        assert first_sound == pytest.approx(chunk.start, abs=0.1)


def test_uncompressed_video_is_re_encoded(tmp_path):
    frames = [np.full((48, 64, 3), 10 * i, dtype=np.uint8) for i in range(25)]
    video = write_video(tmp_path / "raw.mkv", frames, fps=FPS, video_codec="rawvideo", pix_fmt="yuv420p")
    chunks = chunks_of(video, 1.0)
    assert [c.frames for c in chunks] == [10, 10, 5] and all(c.reencoded for c in chunks)
    assert sum(len(c.data) for c in chunks) < video.stat().st_size / 5
    with av.open(io.BytesIO(chunks[0].data)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_a_source_without_video_is_refused(tmp_path):
    sound = write_video(tmp_path / "sound.mkv", None, audio=np.zeros((1, 16000), np.float32), audio_codec="aac")
    with open_source(str(sound)) as container, pytest.raises(ChunkingError, match="no video stream"):
        list(cut_chunks(container))
    with pytest.raises(ChunkingError, match="cannot open"):
        open_source(str(tmp_path / "missing.mkv"))


@pytest.mark.parametrize(("args", "code", "phrase"), [
    (["--live", "missing.mkv"], 2, "cannot open missing.mkv"),
    (["--live", "v.mkv", "--segment-seconds", "1"], 2, "--segment-seconds is for whole videos"),
    (["--live", "v.mkv", "--chunk-seconds", "0"], 2, "--chunk-seconds must be > 0"),
    (["--live", "v.mkv"], 3, "cannot connect to TorchServe"),
])
def test_request_live_local_errors(tmp_path, args, code, phrase):
    recorded_video(tmp_path / "v.mkv", seconds=2)
    (tmp_path / "demo.info.json").write_text('{"script": "A person."}')
    result = subprocess.run([sys.executable, str(ROOT / "request.py"), *args, "--no-token", "--url",
                             "http://127.0.0.1:9"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == code, result.stderr
    assert phrase in result.stderr and "Traceback" not in result.stderr
