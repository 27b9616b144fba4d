"""The clip cache (dataset_config.charades.cache_clips), build_dataset and the
DataLoader settings: hits and misses, invalidation, corrupt entries, writers
racing, and samples equal with and without the cache."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Subset

from minimmf.common.sample import Sample
from minimmf.datasets.video_clips import MMFClip
from minimmf.trainers.config_checks import check_config
from minimmf.trainers.mmf_trainer import MMFTrainer
from minimmf.utils.build import build_dataset, dataloader_options
from minimmf.utils.configuration import ConfigError, build_config
from tests.conftest import TINY_CONFIG

TINY = ["model=mmf_transformer", "dataset=charades"]


def tiny_config(data_dir, cache_dir, cache=True, *overrides):
    return build_config(TINY_CONFIG, [*TINY, f"env.data_dir={data_dir}", f"dataset_config.charades.cache_clips={cache}",
                                      f"dataset_config.charades.clip_cache_dir={cache_dir}", *overrides])


def make_dataset(data_dir, cache_dir, split="test", *overrides, cache=True):
    return build_dataset("charades", tiny_config(data_dir, cache_dir, cache, *overrides), split)


def count_decodes(dataset) -> list[int]:
    """Counts the decoder's calls (one per decoding pass over a video)."""
    calls = [0]
    decode = dataset.sample_maker.decode_plan

    def counting(source, plan):
        calls[0] += 1
        return decode(source, plan)

    dataset.sample_maker.decode_plan = counting
    return calls


def assert_same_sample(one: Sample, other: Sample) -> None:
    assert one.keys() == other.keys()
    for key, value in one.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == other[key].dtype and torch.equal(value, other[key]), key
        else:
            assert value == other[key], key


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.pt"))


@pytest.fixture
def private_data(synthetic_data_dir, tmp_path) -> Path:
    """A copy of the synthetic data that a test may change."""
    return Path(shutil.copytree(synthetic_data_dir, tmp_path / "data"))


# ---------------------------------------------------------------- hit / miss


def test_miss_then_hit(synthetic_data_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    dataset = make_dataset(synthetic_data_dir, cache_dir)
    decodes = count_decodes(dataset)
    first = dataset[0]
    assert decodes[0] == 1 and len(entries(cache_dir)) == 1
    again = dataset[0]
    assert decodes[0] == 1  # read from the cache
    assert_same_sample(first, again)
    # a later run (a new dataset over the same folder) reads it too
    later = make_dataset(synthetic_data_dir, cache_dir)
    later_decodes = count_decodes(later)
    assert_same_sample(later[0], first)
    assert later_decodes[0] == 0
    # a video not yet cached is a miss
    later[1]
    assert later_decodes[0] == 1 and len(entries(cache_dir)) == 2


def test_off_decodes_every_time_and_writes_nothing(synthetic_data_dir, tmp_path):
    dataset = make_dataset(synthetic_data_dir, tmp_path / "cache", cache=False)
    assert dataset.clip_cache is None
    decodes = count_decodes(dataset)
    dataset[0], dataset[0]
    assert decodes[0] == 2 and not (tmp_path / "cache").exists()


def test_entry_holds_what_the_decoder_returned(synthetic_data_dir, tmp_path):
    dataset = make_dataset(synthetic_data_dir, tmp_path / "cache")
    path = dataset.df.iloc[0]["path"]
    [decoded] = dataset.sample_maker.decode_plan(path, MMFClip(8))
    [cold] = dataset.decode_plan(path, MMFClip(8))
    [warm] = dataset.decode_plan(path, MMFClip(8))
    for clip in (cold, warm):
        assert clip.video.dtype == torch.float32 and clip.video.shape == (8, 3, 72, 96)
        assert torch.equal(clip.video, decoded.video) and torch.equal(clip.audio, decoded.audio)
        assert (clip.audio_sample_rate, clip.num_video_frames, clip.video_fps, clip.start, clip.end) == \
            (decoded.audio_sample_rate, decoded.num_video_frames, decoded.video_fps, decoded.start, decoded.end)
    assert decoded.audio.shape[1] == 1000  # only the samples the audio pipeline reads


# ------------------------------------------------- same samples with and without


@pytest.mark.parametrize("clips", [1, 3])
def test_eval_samples_are_bit_identical(synthetic_data_dir, tmp_path, clips):
    overrides = [f"dataset_config.charades.clips={clips}"]
    plain = make_dataset(synthetic_data_dir, tmp_path / "unused", "test", *overrides, cache=False)
    cached = make_dataset(synthetic_data_dir, tmp_path / "cache", "test", *overrides)
    for index in range(len(plain)):
        expected = plain[index]
        for _ in ("cold", "warm"):
            got = cached[index]
            if clips == 1:
                assert_same_sample(got, expected)
            else:
                assert len(got) == len(expected) == clips
                for one, other in zip(got, expected, strict=True):
                    assert_same_sample(one, other)
    assert len(entries(tmp_path / "cache")) == len(plain)


def seeded_draws(dataset, seed: int, indices: list[int]) -> list[Sample]:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return [dataset[index] for index in indices]


def test_training_samples_keep_their_random_crops_and_flips(synthetic_data_dir, tmp_path):
    """The random part of the training pipeline runs after the cache: under the
    same seeds, the same crops and flips with and without it (so the same crop
    distribution), and other seeds give other crops."""
    plain = make_dataset(synthetic_data_dir, tmp_path / "unused", "train", cache=False)
    cached = make_dataset(synthetic_data_dir, tmp_path / "cache", "train")
    indices = [0, 1, 0, 0, 1, 0]  # the same videos several times: cold, then warm
    expected = seeded_draws(plain, 5, indices)
    for got, want in zip(seeded_draws(cached, 5, indices), expected, strict=True):
        assert_same_sample(got, want)
    for got, want in zip(seeded_draws(cached, 5, indices), expected, strict=True):  # all warm
        assert_same_sample(got, want)
    # the crops and flips still vary from draw to draw
    videos = [sample.video for sample in seeded_draws(cached, 6, [0] * 6)]
    assert any(not torch.equal(videos[0], other) for other in videos[1:])


def test_uint8_entries_are_smaller_and_close(synthetic_data_dir, tmp_path):
    plain = make_dataset(synthetic_data_dir, tmp_path / "unused", cache=False)
    exact = make_dataset(synthetic_data_dir, tmp_path / "float32")
    small = make_dataset(synthetic_data_dir, tmp_path / "uint8", "test",
                         "dataset_config.charades.clip_cache_dtype=uint8")
    expected, _ = plain[0], exact[0]
    small[0]
    got = small[0]  # read from the uint8 entry
    [exact_entry], [small_entry] = entries(tmp_path / "float32"), entries(tmp_path / "uint8")
    assert small_entry.stat().st_size < exact_entry.stat().st_size / 3.5
    # within half a 1/255 step before normalisation (the smallest std is 0.216989)
    assert got.video.dtype == torch.float32
    assert float((got.video - expected.video).abs().max()) <= 0.5 / 255 / 0.216989 + 1e-6
    assert torch.equal(got.audio, expected.audio)


# ------------------------------------------------------------- invalidation


def test_a_changed_video_is_decoded_again_and_its_entry_replaced(private_data, tmp_path):
    cache_dir = tmp_path / "cache"
    dataset = make_dataset(private_data, cache_dir)
    decodes = count_decodes(dataset)
    before = dataset[0]
    [entry] = entries(cache_dir)
    video, other = Path(dataset.df.iloc[0]["path"]), Path(dataset.df.iloc[1]["path"])
    shutil.copyfile(other, video)
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = dataset[0]
    assert decodes[0] == 2
    assert not torch.equal(after.video, before.video)
    assert torch.equal(after.video, make_dataset(private_data, tmp_path / "unused", cache=False)[0].video)
    assert entries(cache_dir) == [entry]  # the stale entry was rebuilt in place
    # only the mtime changes: decoded again too
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    dataset[0]
    assert decodes[0] == 3
    dataset[0]
    assert decodes[0] == 3


@pytest.mark.parametrize("override", [
    "dataset_config.charades.processors.video_test_processor.params.transforms[1].params.size=[64,80]",
    "dataset_config.charades.processors.video_test_processor.params.transforms[1].params.antialias=true",
    "dataset_config.charades.processors.audio_processor.params.transforms[0].params.output_size=500",
    "dataset_config.charades.frames_per_clip=4",
    "dataset_config.charades.clip_cache_dtype=uint8",
])
def test_a_config_that_shapes_the_clips_has_its_own_entries(synthetic_data_dir, tmp_path, override):
    cache_dir = tmp_path / "cache"
    make_dataset(synthetic_data_dir, cache_dir)[0]
    changed = make_dataset(synthetic_data_dir, cache_dir, "test", override)
    decodes = count_decodes(changed)
    expected = make_dataset(synthetic_data_dir, tmp_path / "unused", "test", override, cache=False)[0]
    got = changed[0]
    assert decodes[0] == 1 and len(entries(cache_dir)) == 2
    if "uint8" not in override:
        assert_same_sample(got, expected)


def test_a_config_that_does_not_shape_the_clips_shares_them(synthetic_data_dir, tmp_path):
    """The crop, the normalisation and the text come after the cache: changing them reads the same entry."""
    cache_dir = tmp_path / "cache"
    make_dataset(synthetic_data_dir, cache_dir)[0]
    override = "dataset_config.charades.processors.video_test_processor.params.transforms[3].params.size=[48,48]"
    changed = make_dataset(synthetic_data_dir, cache_dir, "test", override)
    decodes = count_decodes(changed)
    sample = changed[0]
    assert decodes[0] == 0 and sample.video.shape == (3, 8, 48, 48)


def test_a_library_upgrade_rebuilds_the_entries(synthetic_data_dir, tmp_path, monkeypatch):
    from minimmf.datasets.builders.charades import clip_cache

    dataset = make_dataset(synthetic_data_dir, tmp_path / "cache")
    dataset[0]
    versions = clip_cache.library_versions()
    monkeypatch.setattr(clip_cache, "library_versions", lambda: {**versions, "av": "99.0"})
    decodes = count_decodes(dataset)
    dataset[0]
    assert decodes[0] == 1 and len(entries(tmp_path / "cache")) == 1


# ------------------------------------------------------------------ corrupt


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_a_byte(data: bytes) -> bytes:  # inside the tensors' bytes: torch.load does not notice
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF
    return bytes(changed)


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, lambda data: b"", lambda data: os.urandom(len(data))],
                         ids=["truncated", "flipped-byte", "empty", "random-bytes"])
def test_a_corrupt_entry_is_rebuilt(synthetic_data_dir, tmp_path, caplog, damage):
    cache_dir = tmp_path / "cache"
    dataset = make_dataset(synthetic_data_dir, cache_dir)
    expected = dataset[0]
    [entry] = entries(cache_dir)
    entry.write_bytes(damage(entry.read_bytes()))
    decodes = count_decodes(dataset)
    with caplog.at_level(logging.WARNING):
        got = dataset[0]
    assert decodes[0] == 1 and "rebuilding it" in caplog.text
    assert_same_sample(got, expected)
    dataset[0]
    assert decodes[0] == 1  # the rebuilt entry is good


def test_an_unwritable_cache_is_logged_once_and_decoding_goes_on(synthetic_data_dir, tmp_path, caplog):
    (tmp_path / "a_file").write_text("not a folder")
    dataset = make_dataset(synthetic_data_dir, tmp_path / "a_file" / "cache")
    expected = make_dataset(synthetic_data_dir, tmp_path / "unused", cache=False)
    with caplog.at_level(logging.WARNING):
        for index in range(2):
            assert_same_sample(dataset[index], expected[index])
    assert caplog.text.count("cannot write") == 1


# --------------------------------------------------------- writers at once


def _write_repeatedly(cache, path, key, clips, barrier, times):
    barrier.wait()
    for _ in range(times):
        cache.store(path, key, clips)


def test_two_workers_writing_the_same_entry(synthetic_data_dir, tmp_path, caplog):
    """Two processes rewrite one entry over and over while this one reads it:
    every read is whole, and no temporary file is left."""
    dataset = make_dataset(synthetic_data_dir, tmp_path / "cache")
    cache, plan = dataset.clip_cache, MMFClip(8)
    video = Path(dataset.df.iloc[0]["path"]).resolve()
    clips = dataset.sample_maker.decode_plan(str(video), plan)
    key, path = cache.key(video, plan), cache.entry_path(video, plan)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    writers = [context.Process(target=_write_repeatedly, args=(cache, path, key, clips, barrier, 30))
               for _ in range(2)]
    for writer in writers:
        writer.start()
    barrier.wait()
    reads = 0
    with caplog.at_level(logging.WARNING):
        while any(writer.is_alive() for writer in writers):
            loaded = cache.load(path, key)
            if loaded is not None:
                reads += 1
                assert torch.equal(loaded[0].video, clips[0].video)
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert reads > 0 and "rebuilding" not in caplog.text
    assert list(cache.directory.iterdir()) == [path]
    assert cache.load(path, key) is not None


def first_of(items):
    return items[0]


def worker_samples(dataset, indices: list[int]) -> list[Sample]:
    return list(DataLoader(Subset(dataset, indices), batch_size=1, num_workers=2, collate_fn=first_of))


def test_dataloader_workers_filling_the_same_entry(synthetic_data_dir, tmp_path):
    """Both workers miss, decode and write the video's entry at once; then they read it.
    (The expected sample is made in workers too: PyTorch's resize differs in the last
    bit between thread counts, and workers run one thread each.)"""
    cache_dir = tmp_path / "cache"
    dataset = make_dataset(synthetic_data_dir, cache_dir)
    [expected] = worker_samples(make_dataset(synthetic_data_dir, tmp_path / "unused", cache=False), [0])
    for sample in worker_samples(dataset, [0] * 6):
        assert_same_sample(sample, expected)
    assert len(entries(cache_dir)) == 1 and list(cache_dir.iterdir()) == entries(cache_dir)


# ---------------------------------------------------- training uses the cache


def test_training_fills_the_cache(trained, mmf_cache_dir):
    """tiny.yaml turns the cache on: the run cached its 12 training and 4 validation videos."""
    config = OmegaConf.load(trained / "config.yaml")
    assert config.dataset_config.charades.cache_clips is True
    assert config.dataset_config.charades.clip_cache_dir == str(mmf_cache_dir / "charades_clips")
    assert len(entries(mmf_cache_dir / "charades_clips")) >= 16


# ------------------------------------------------------------- build_dataset


def test_build_dataset_as_mmf(synthetic_data_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_data_dir, tmp_path / "cache", False)
    for given in (config, config.dataset_config, config.dataset_config.charades):
        dataset = build_dataset("charades", given, "test")
        assert len(dataset) == 4 and isinstance(dataset[0], Sample) and dataset.dataset_type == "test"
    # without a config: the dataset's defaults (MMF's full-size pipeline), env from MMF_* variables
    monkeypatch.setenv("MMF_DATA_DIR", str(synthetic_data_dir))
    dataset = build_dataset("charades", dataset_type="train")
    assert len(dataset) == 12 and dataset.clip_cache is None
    sample = dataset[0]
    assert sample.video.shape == (3, 16, 112, 112) and sample.audio.shape == (1, 224, 224)
    assert sample.input_ids.shape == (128,)


# ------------------------------------------------------ DataLoader settings


def test_dataloader_options_follow_mmf():
    training = OmegaConf.create({"num_workers": 3, "pin_memory": True, "persistent_workers": True,
                                 "prefetch_factor": 5})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dataloader_options({}, training, cuda) == {"num_workers": 3, "pin_memory": True,
                                                      "persistent_workers": True, "prefetch_factor": 5}
    assert dataloader_options({}, training, cpu)["pin_memory"] is False  # pinning is for CUDA copies
    # no workers: nothing persists, nothing is prefetched
    assert dataloader_options({"num_workers": 0}, training, cuda) == {"num_workers": 0, "pin_memory": True,
                                                                      "persistent_workers": False}
    # the dataset's config wins over training's, as in MMF
    options = dataloader_options({"persistent_workers": False, "prefetch_factor": None}, training, cuda)
    assert options["persistent_workers"] is False and options["prefetch_factor"] == 5
    training.prefetch_factor = None
    assert "prefetch_factor" not in dataloader_options({}, training, cuda)


def test_the_trainer_builds_its_loaders_with_them(synthetic_data_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, tmp_path / "cache", True, "training.num_workers=2",
                         "training.prefetch_factor=3", "training.persistent_workers=false",
                         "training.pin_memory=true", "training.device=cpu")
    trainer = MMFTrainer(config)
    trainer.dataset_name, trainer.device, trainer.batch_size, trainer.seed = "charades", torch.device("cpu"), 2, 0
    trainer.datasets = {"train": build_dataset("charades", config, "train")}
    loader = trainer.dataloader("train", shuffle=True)
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers, loader.pin_memory) == \
        (2, 3, False, False)
    batch = next(iter(loader))
    assert batch.video.shape == (2, 3, 8, 64, 64)


@pytest.mark.parametrize("override, message", [
    ("training.prefetch_factor=0", "training.prefetch_factor=0"),
    ("dataset_config.charades.clip_cache_dtype=float16", r"use float32 \(exact\) or uint8"),
    ("dataset_config.charades.cache_clips=maybe", "expected true or false"),
    ("dataset_config.charades.clip_cache_dir=''", "needs dataset_config.charades.clip_cache_dir"),
])
def test_bad_cache_and_loader_settings_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(build_config(TINY_CONFIG, [*TINY, override]))
