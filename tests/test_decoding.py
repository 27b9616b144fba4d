"""The streaming clip decoder on real files (../shared/data), on videos of
several containers and codecs made with PyAV, and on broken input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from minimmf.datasets.video_clips import (
    MMFClip,
    SpreadClips,
    TimelineWindows,
    Together,
    VideoDecodeError,
    VideoInfo,
    clip_frame_indices,
    count_video_frames,
    decode_clip,
    decode_clips,
    window_seconds,
)
from tests.media import decode_all_audio, decode_all_frames, encode_video


def test_clip_indices_are_mmf_linspace():
    assert clip_frame_indices(310, 16) == [0, 21, 41, 62, 82, 103, 124, 144, 165, 185, 206, 227, 247, 268, 288, 309]
    assert clip_frame_indices(3, 16) == [0] * 4 + [1] * 8 + [2] * 4
    assert clip_frame_indices(1, 16) == [0] * 16


def test_real_mkv_with_opus_audio(shared_data):
    path = shared_data / "flipping_a_pancake.mkv"
    clip = decode_clip(path, 16, max_audio_samples=1000)
    everything = decode_all_frames(str(path))
    assert clip.num_video_frames == len(everything) == 310
    assert clip.video.shape == (16, 240, 426, 3) and clip.video.dtype == torch.uint8
    np.testing.assert_array_equal(clip.video.numpy(), everything[clip_frame_indices(310, 16)])
    assert clip.audio_sample_rate == 48000 and clip.audio.dtype == torch.float32
    np.testing.assert_allclose(clip.audio.numpy(), decode_all_audio(str(path))[:, :1000])
    # same answer from in-memory bytes
    from_bytes = decode_clip(path.read_bytes(), 16, max_audio_samples=1000)
    assert torch.equal(from_bytes.video, clip.video) and torch.equal(from_bytes.audio, clip.audio)


def test_real_mov_with_three_frames_and_rotation_metadata(shared_data):
    path = shared_data / "video_90.mov"
    clip = decode_clip(path, 16, max_audio_samples=1000)
    everything = decode_all_frames(str(path))
    assert clip.num_video_frames == 3
    # frames are returned as stored (MMF ignores the rotation metadata too)
    assert clip.video.shape == (16, 320, 568, 3)
    np.testing.assert_array_equal(clip.video.numpy(), everything[clip_frame_indices(3, 16)])
    assert clip.audio.shape == (1, 0) and clip.audio_sample_rate is None


@pytest.mark.parametrize("suffix, video_codec, audio_codec, pix_fmt", [
    ("mp4", "libx264", "aac", "yuv420p"),
    ("mkv", "libvpx-vp9", "libopus", "yuv420p"),
    ("webm", "libvpx-vp9", "libopus", "yuv420p"),
    ("avi", "mpeg4", "pcm_s16le", "yuv420p"),
    ("mov", "mjpeg", "pcm_s16le", "yuvj420p"),
])
def test_containers_and_codecs(tmp_path, suffix, video_codec, audio_codec, pix_fmt):
    audio_rate = 48000 if audio_codec == "libopus" else 16000
    path = encode_video(tmp_path / f"clip.{suffix}", frames=37, video_codec=video_codec, audio_codec=audio_codec,
                        pix_fmt=pix_fmt, audio_rate=audio_rate, audio_layout="stereo")
    clip = decode_clip(path, 16, max_audio_samples=1000)
    everything = decode_all_frames(str(path))
    assert clip.num_video_frames == len(everything) == 37
    np.testing.assert_array_equal(clip.video.numpy(), everything[clip_frame_indices(37, 16)])
    assert clip.audio.shape == (2, 1000) and clip.audio_sample_rate == audio_rate
    np.testing.assert_allclose(clip.audio.numpy(), decode_all_audio(str(path))[:, :1000], atol=1e-6)
    assert float(clip.audio.abs().max()) <= 1.0


def test_one_frame_video(tmp_path):
    path = encode_video(tmp_path / "one.mp4", frames=1)
    clip = decode_clip(path, 16)
    assert clip.num_video_frames == 1 and clip.video.shape == (16, 48, 64, 3)
    assert all(torch.equal(frame, clip.video[0]) for frame in clip.video)


def test_video_without_audio_gives_empty_audio(tmp_path):
    path = encode_video(tmp_path / "silent.mp4", frames=20, audio_codec=None)
    clip = decode_clip(path, 16, max_audio_samples=1000)
    assert clip.audio.shape == (1, 0) and clip.video.shape[0] == 16


def test_all_audio_when_unbounded(tmp_path):
    path = encode_video(tmp_path / "long_audio.mp4", frames=10, audio_seconds=3.0)
    clip = decode_clip(path, 4, max_audio_samples=None)
    assert clip.audio.shape[1] >= 3 * 16000


@pytest.mark.parametrize("case", ["empty", "text", "audio_only", "truncated", "header_only", "random_bytes",
                                  "missing_file"])
def test_unusable_input_raises_a_clear_error(tmp_path, case):
    good = encode_video(tmp_path / "good.mp4", frames=30).read_bytes()
    inputs = {
        "empty": b"",
        "text": b"This is a plain text file, not a video.\n" * 20,
        "audio_only": encode_video(tmp_path / "audio.mp4", frames=0, video_codec=None).read_bytes(),
        "truncated": good[: len(good) // 2],
        "header_only": good[:48],
        "random_bytes": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "missing_file": tmp_path / "does_not_exist.mp4",
    }
    with pytest.raises(VideoDecodeError) as error:
        decode_clip(inputs[case], 16, max_audio_samples=1000)
    assert str(error.value)  # a message a user can act on
    if case == "audio_only":
        assert "no video stream" in str(error.value)


def test_corrupted_middle_decodes_or_fails_cleanly(tmp_path):
    data = bytearray(encode_video(tmp_path / "good.mp4", frames=60).read_bytes())
    rng = np.random.default_rng(1)
    for start in range(len(data) // 3, 2 * len(data) // 3, 97):
        data[start] = int(rng.integers(0, 256))
    try:
        clip = decode_clip(bytes(data), 16, max_audio_samples=1000)
    except VideoDecodeError:
        return
    assert clip.video.shape[0] == 16


def test_file_object_input(tmp_path):
    path = encode_video(tmp_path / "clip.mp4", frames=12)
    with open(path, "rb") as handle:
        clip = decode_clip(handle, 8)
    assert clip.video.shape[0] == 8
    assert decode_clip(io.BytesIO(path.read_bytes()), 8).video.equal(clip.video)
    assert count_video_frames(path) == 12


# ------------------------------------------------ several clips in one pass

def test_one_spread_clip_is_mmfs_clip():

    info = VideoInfo(num_frames=310, fps=30.0)
    assert SpreadClips(1, 16)(info) == MMFClip(16)(info)
    three = SpreadClips(3, 4)(info)
    parts = [(0, 103), (103, 206), (206, 310)]  # three equal parts of 310 frames
    assert [clip.frame_indices for clip in three] == [[first + i for i in clip_frame_indices(end - first, 4)]
                                                      for first, end in parts]


def test_timeline_windows_cover_the_video_in_order():

    windows = TimelineWindows(2.0, 64, 4)(VideoInfo(num_frames=75, fps=10.0))  # 7.5 s
    assert [(w.start, w.end) for w in windows] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 7.5)]  # last shorter
    for window in windows:
        first, stop = round(window.start * 10), round(window.end * 10)
        assert window.frame_indices == [first + i for i in clip_frame_indices(stop - first, 4)]


def test_a_video_shorter_than_one_window_is_one_window():

    (window,) = TimelineWindows(2.0, 64, 8)(VideoInfo(num_frames=3, fps=10.0))
    assert (window.start, window.end) == (0.0, pytest.approx(0.3)) and window.frame_indices == [0, 0, 1, 1, 1, 1, 2, 2]


def test_max_segments_lengthens_the_windows():

    windows = TimelineWindows(1.0, 10, 4)(VideoInfo(num_frames=300, fps=10.0))  # 30 s
    assert len(windows) == 10 and window_seconds(30.0, 1.0, 10) == 3.0
    assert [w.start for w in windows] == [3.0 * i for i in range(10)]


def test_one_pass_gives_each_clip_its_frames_and_its_audio(tmp_path):

    path = encode_video(tmp_path / "clip.mp4", frames=40, fps=10, audio_seconds=4.0)
    everything, sound = decode_all_frames(str(path)), decode_all_audio(str(path))

    info, clips = decode_clips(path, Together((MMFClip(16), TimelineWindows(1.0, 64, 4))), max_audio_samples=1000)
    assert info.num_frames == 40 and info.fps == 10.0 and len(clips) == 5
    assert torch.equal(clips[0].video, torch.from_numpy(everything[clip_frame_indices(40, 16)]))
    for window, clip in enumerate(clips[1:]):
        assert (clip.start, clip.end) == (window * 1.0, window * 1.0 + 1.0)
        indices = [10 * window + i for i in clip_frame_indices(10, 4)]
        np.testing.assert_array_equal(clip.video.numpy(), everything[indices])
        first = round(clip.start * 16000)
        np.testing.assert_allclose(clip.audio.numpy(), sound[:, first:first + 1000])
    # the video-level clip is the same as decoding it alone
    alone = decode_clip(path, 16, max_audio_samples=1000)
    assert torch.equal(alone.video, clips[0].video) and torch.equal(alone.audio, clips[0].audio)
