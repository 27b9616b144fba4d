"""The handler's settings: model-config.yaml's ``handler:`` section, checked
once when the worker starts, then read as plain typed attributes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "bf16")
CLIP_POOLINGS = ("max", "mean")
MAX_SEGMENT_SECONDS = 3600.0


class SettingsError(ValueError):
    """A ``handler:`` setting in model-config.yaml is unknown or has a bad value."""


@dataclass(frozen=True)
class HandlerSettings:
    # labels at or above this probability are returned; None = the config's prediction_threshold
    threshold: float | None = None
    # how many class scores an answer holds, highest first; 0 = all of them
    top_k: int = 0
    # what one request may make the worker do (see README, "Bounded input"): bytes in, ...
    max_video_bytes: int = 200_000_000
    # ... pixels per frame (1080p), frames (10 min at 30 fps) and decoding time per video, ...
    max_frame_pixels: int = 1920 * 1080
    max_frames: int = 18_000
    max_decode_seconds: float = 20.0
    # ... and the size of the text fields
    max_script_chars: int = 20_000
    max_json_bytes: int = 256 * 1024
    max_json_depth: int = 16
    max_labels: int = 200
    # when, not only what: a timeline of windows of this many seconds (0 = off; a request's
    # segment_seconds field overrides it), at most max_segments windows (longer ones for a long video)
    segment_seconds: float = 0.0
    max_segments: int = 64
    # the video-level answer pools this many clips spread over the video (1 = MMF's one clip)
    clips: int = 1
    clip_pooling: str = "max"
    # at most this many clips and windows go through the model at once
    max_model_batch: int = 16
    # channels-last convolution weights: the same fp32 answers (to ~1e-6), faster kernels
    channels_last: bool = True
    # opt-in modes that change the answers slightly (bench/precision.py measures them)
    precision: str = "fp32"
    quantize_bert: bool = False

    @classmethod
    def from_model_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> HandlerSettings:
        """The settings of model-config.yaml's ``handler:`` section (defaults for absent keys)."""
        section = (model_yaml_config or {}).get("handler") or {}
        if not isinstance(section, Mapping):
            raise SettingsError(f"model-config.yaml: 'handler' must be a mapping of settings, got {section!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise SettingsError(f"model-config.yaml: unknown handler setting(s) {unknown}; known: {sorted(known)}")
        values = {name: _checked(name, value, known[name].type) for name, value in section.items()}
        settings = cls(**values)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise SettingsError(f"handler.threshold must be a probability in [0, 1] or null, not {self.threshold}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"handler.precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.quantize_bert and self.precision != "fp32":
            raise SettingsError("handler.quantize_bert works with precision fp32 only (int8 kernels take fp32 input)")
        if self.top_k < 0:
            raise SettingsError(f"handler.top_k must be >= 0, not {self.top_k}")
        if not 0 <= self.segment_seconds <= MAX_SEGMENT_SECONDS:
            raise SettingsError(f"handler.segment_seconds must be 0 (off) or seconds up to {MAX_SEGMENT_SECONDS}, "
                                f"not {self.segment_seconds}")
        if self.clip_pooling not in CLIP_POOLINGS:
            raise SettingsError(f"handler.clip_pooling must be one of {CLIP_POOLINGS}, not {self.clip_pooling!r}")
        for name in ("max_video_bytes", "max_frame_pixels", "max_frames", "max_decode_seconds", "max_script_chars",
                     "max_json_bytes", "max_json_depth", "max_labels", "max_segments", "clips", "max_model_batch"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"handler.{name} must be > 0, not {getattr(self, name)}")


def _checked(name: str, value: Any, annotation: str) -> Any:
    """``value`` as the type the field's annotation names, or a SettingsError naming the setting."""
    optional = annotation.endswith("| None")
    if value is None:
        if optional:
            return None
        raise SettingsError(f"handler.{name} must not be null")
    base = annotation.removesuffix("| None").strip()
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base == "str":
        if isinstance(value, str):
            return value
    else:  # a field type this checker does not know: a programming error, not a user's
        raise TypeError(f"HandlerSettings.{name}: unsupported annotation {annotation!r}")
    raise SettingsError(f"handler.{name} must be {'a ' + base if base != 'int' else 'an int'}"
                        f"{' or null' if optional else ''}, not {value!r}")
