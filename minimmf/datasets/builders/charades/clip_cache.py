"""A disk cache of decoded clips (``dataset_config.charades.cache_clips``).

MMF's clip sampling is deterministic per video: the same frames every epoch,
and the same audio samples. What ``CharadesSampleMaker.decode_plan`` returns
for a video file and a plan (the kept frames through the deterministic
per-frame part of the video pipeline, the raw audio samples the audio
pipeline reads, and the clip's frame count, rate and span) is therefore the
same every time, and is what an entry stores; the rest of the pipeline
(normalisation, random crops and flips in training, the audio and text
processors) runs on it each time, as without the cache.

Correctness rules:

- An entry's file name is a hash of what it is for: the video's absolute
  path, the plan (its ``repr``), the fingerprint of the pipeline that shapes
  the tensors and the stored dtype. Inside, the entry carries its full key,
  which adds the video's size and ``mtime_ns`` and the versions of the
  libraries that decode and resize (PyAV/FFmpeg, torch, torchvision), and a
  CRC32 of every tensor. A key that differs (the video or a library changed:
  a stale entry) or an entry that does not load or check (a corrupt one) is
  rebuilt from the video and overwritten, never used.
- An entry is written to a temporary file in the same folder, then renamed
  over the entry's name (``os.replace``, atomic on POSIX): a reader sees the
  old entry, the new one or none, never a partial one, so DataLoader workers
  and DDP ranks that write the same entry at once are safe (the last rename
  wins; both wrote the same content).
- A cache that cannot be written (read-only or full disk) is logged once and
  training goes on decoding; it never fails a sample.

``dtype`` "float32" (the default) stores exactly what the pipeline computed,
so samples are bit-identical with and without the cache. "uint8" stores a
float pipeline's frames (values in [0, 1]) rounded to 1/255 steps: 4x
smaller, not bit-identical (each value within 1/510 of the exact one before
normalisation).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minimmf.datasets.video_clips import ClipPlan, DecodedClip, VideoSource
from minimmf.utils.file_io import atomic_save

logger = logging.getLogger(__name__)

# bump when the entry layout or what the decoder returns changes
CACHE_FORMAT = 1
DTYPES = ("float32", "uint8")
_CLIP_FIELDS = ("video", "audio", "audio_sample_rate", "num_video_frames", "video_fps", "start", "end")


@functools.cache
def library_versions() -> dict[str, str]:
    """The versions of what decodes, converts and resizes the frames."""
    import av
    import torchvision

    # plain str (torch.__version__ is a str subclass that weights_only loading refuses)
    return {"av": str(av.__version__), "ffmpeg": str(getattr(av, "ffmpeg_version_info", "")),
            "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def tensor_crc(tensor: torch.Tensor) -> int:
    """CRC32 of a CPU tensor's bytes."""
    array = np.ascontiguousarray(tensor.detach().cpu().numpy())
    return zlib.crc32(array.reshape(-1).view(np.uint8))


class CorruptEntry(ValueError):
    pass


class ClipCache:
    """Decoded clips of video files, one entry per (video, plan), under
    ``directory``. ``fingerprint``: JSON-able values that, with the plan, fix
    what the decoder returns for a video (the per-frame transforms, the audio
    samples read)."""

    def __init__(self, directory: str | os.PathLike, fingerprint: Mapping[str, Any], dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"clip cache dtype {dtype!r}: use {' or '.join(DTYPES)}")
        self.directory = Path(directory)
        self.fingerprint = json.dumps(dict(fingerprint), sort_keys=True)
        self.dtype = dtype
        self.write_failed = False

    # ------------------------------------------------------------------ keys

    def entry_path(self, video: Path, plan: ClipPlan) -> Path:
        """Where the entry of ``video`` (absolute) and ``plan`` is."""
        identity = json.dumps({"format": CACHE_FORMAT, "video": str(video), "plan": repr(plan),
                               "fingerprint": self.fingerprint, "dtype": self.dtype}, sort_keys=True)
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:40]}.pt"

    def key(self, video: Path, plan: ClipPlan) -> dict[str, Any]:
        """Everything the entry's content depends on (raises OSError when the video cannot be read)."""
        stat = video.stat()
        return {"format": CACHE_FORMAT, "video": str(video), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "plan": repr(plan), "fingerprint": self.fingerprint, "dtype": self.dtype,
                "versions": library_versions()}

    # ------------------------------------------------------------- get / put

    def clips(self, source: VideoSource, plan: ClipPlan,
              decode: Callable[[], list[DecodedClip]]) -> list[DecodedClip]:
        """The clips of ``plan`` for the video file ``source``: from its entry
        when it is valid, else from ``decode()`` (then stored). Sources that
        are not files (bytes, file objects) are decoded, never cached."""
        if not isinstance(source, (str, os.PathLike)):
            return decode()
        video = Path(source).resolve()
        try:
            key = self.key(video, plan)
        except OSError:
            return decode()  # the decoder says what is wrong with the file
        path = self.entry_path(video, plan)
        cached = self.load(path, key)
        if cached is not None:
            return cached
        clips = decode()
        try:
            unchanged = self.key(video, plan) == key
        except OSError:
            unchanged = False
        if unchanged:  # the video did not change while it was decoded
            self.store(path, key, clips)
        return clips

    def load(self, path: Path, key: dict[str, Any]) -> list[DecodedClip] | None:
        """The entry's clips, or None when it is missing, stale or corrupt."""
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 - any unreadable file is rebuilt
            logger.warning("clip cache: %s does not load (%s); rebuilding it", path, error)
            return None
        try:
            if not isinstance(entry, dict) or entry.get("key") != key:
                logger.debug("clip cache: %s is stale; rebuilding it", path)
                return None
            return self._clips_of(entry)
        except (CorruptEntry, KeyError, TypeError, ValueError, AttributeError) as error:
            logger.warning("clip cache: %s is corrupt (%s); rebuilding it", path, error)
            return None

    def _clips_of(self, entry: dict[str, Any]) -> list[DecodedClip]:
        clips, checksums = entry["clips"], entry["checksums"]
        if not isinstance(clips, list) or not clips or len(checksums) != len(clips):
            raise CorruptEntry("no clips")
        decoded = []
        for fields, (video_crc, audio_crc) in zip(clips, checksums, strict=True):
            video, audio = fields["video"], fields["audio"]
            if not isinstance(video, torch.Tensor) or not isinstance(audio, torch.Tensor):
                raise CorruptEntry("a clip without its tensors")
            if tensor_crc(video) != video_crc or tensor_crc(audio) != audio_crc:
                raise CorruptEntry("checksum mismatch")
            if entry["quantized"]:
                video = video.float() / 255.0
            decoded.append(DecodedClip(**{**{name: fields[name] for name in _CLIP_FIELDS}, "video": video}))
        return decoded

    def store(self, path: Path, key: dict[str, Any], clips: list[DecodedClip]) -> None:
        """Write the entry atomically (temporary file, then rename over ``path``)."""
        quantized = self.dtype == "uint8" and all(clip.video.is_floating_point() for clip in clips)
        stored = []
        for clip in clips:
            video = clip.video
            if quantized:
                video = torch.round(video.clamp(0, 1) * 255.0).to(torch.uint8)
            stored.append({name: _own_storage(getattr(clip, name)) for name in _CLIP_FIELDS} | {
                "video": _own_storage(video)})
        entry = {"key": key, "quantized": quantized, "clips": stored,
                 "checksums": [(tensor_crc(c["video"]), tensor_crc(c["audio"])) for c in stored]}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # no fsync: an entry lost to a power cut is decoded again, and a torn one fails its CRC
            atomic_save(entry, path, fsync=False)
        except OSError as error:
            if not self.write_failed:
                logger.warning("clip cache: cannot write in %s (%s); decoding the videos without caching them",
                               self.directory, error)
            self.write_failed = True


def _own_storage(value: Any) -> Any:
    """A tensor that holds only its own bytes (torch.save writes a view's whole storage)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous()
        if value.untyped_storage().nbytes() != value.nbytes:
            value = value.clone()
    return value
