"""The handler's settings: model-config.yaml's ``handler:`` section, checked
once when the worker starts, then read as plain typed attributes.

``HandlerSettings`` is the one declaration: each field's default and its
description. model-config.yaml's ``handler:`` block and README's settings
table are generated from it (``python -m minimmf.serving.settings yaml`` or
``markdown``), and a test checks that both are what it generates.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minimmf.modules.predictions import CLIP_POOLINGS

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
MAX_SEGMENT_SECONDS = 3600.0
# settings renamed so that evaluation and serving use one name: old name -> new name
RENAMED = {"threshold": "prediction_threshold"}


class SettingsError(ValueError):
    """A ``handler:`` setting in model-config.yaml is unknown or has a bad value."""


def setting(default: Any, doc: str, group: str = "") -> Any:
    """A field with its description (``group`` starts a commented group of settings)."""
    return field(default=default, metadata={"doc": doc, "group": group})


@dataclass(frozen=True)
class HandlerSettings:
    prediction_threshold: float | None = setting(
        None, "labels at or above this probability are returned; null = the archived config's "
              "dataset_config.<dataset>.prediction_threshold (0.5), the threshold evaluation uses",
        "What an answer holds.")
    top_k: int = setting(0, "how many class scores an answer holds, highest first; 0 = all of them")
    max_video_bytes: int = setting(
        200_000_000, "bytes of video, checked before anything else (keep below config.properties' "
                     "max_request_size)",
        "What one request may make the worker do (README, \"Bounded input\"). A request over a limit gets\n"
        "HTTP 400 naming the limit. Charades clips are about 30 s of 480p.")
    max_frame_pixels: int = setting(
        1920 * 1080, "pixels per frame (1920x1080): the size the container declares, before decoding; then "
                     "every decoded frame")
    max_frames: int = setting(
        18_000, "frames in the video (10 min at 30 fps): an MP4's sample tables before FFmpeg reads them, "
                "then the packets while counting")
    max_decode_seconds: float = setting(20.0, "wall-clock seconds to decode one video")
    max_script_chars: int = setting(20_000, "characters of the script")
    max_json_bytes: int = setting(256 * 1024, "bytes of the info and labels JSON fields")
    max_json_depth: int = setting(16, "nesting depth of the JSON fields")
    max_labels: int = setting(200, "expected labels one request may send")
    segment_seconds: float = setting(
        0.0, "the timeline's window length in seconds (0 = off; a request's form field segment_seconds turns "
             "it on for that request)",
        "When, not only what (README, \"Timeline\"); dataset_config.<dataset> has the same names for evaluation.")
    max_segments: int = setting(64, "at most this many timeline windows (a longer video gets longer windows)")
    clips: int = setting(1, "the video-level answer pools this many clips spread over the video (1 = MMF's "
                            "single clip over the whole video)")
    clip_pooling: str = setting("max", f"how clips are pooled: {' or '.join(CLIP_POOLINGS)} (max is Charades' "
                                       "convention)")
    max_model_batch: int = setting(16, "at most this many clips and windows go through the model at once")
    channels_last: bool = setting(
        True, "channels-last convolution weights: the same fp32 answers (to ~1e-6), faster kernels",
        "Speed (bench/precision.py measures the modes against fp32).")
    precision: str = setting("fp32", f"{' or '.join(PRECISIONS)}: bf16 autocast changes the answers slightly")
    quantize_bert: bool = setting(False, "int8 dynamic quantization of the transformer's linear layers (CPU, "
                                         "fp32 only)")

    @classmethod
    def from_model_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> HandlerSettings:
        """The settings of model-config.yaml's ``handler:`` section (defaults for absent keys)."""
        section = (model_yaml_config or {}).get("handler") or {}
        if not isinstance(section, Mapping):
            raise SettingsError(f"model-config.yaml: 'handler' must be a mapping of settings, got {section!r}")
        section = _renamed(dict(section))
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise SettingsError(f"model-config.yaml: unknown handler setting(s) {unknown}; known: {sorted(known)}")
        values = {name: _checked(name, value, known[name].type) for name, value in section.items()}
        settings = cls(**values)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        threshold = self.prediction_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SettingsError(f"handler.prediction_threshold must be a probability in [0, 1] or null, "
                                f"not {threshold}")
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


def _renamed(section: dict[str, Any]) -> dict[str, Any]:
    """``section`` with renamed settings under their new names (the old ones still work, with a warning)."""
    for old, new in RENAMED.items():
        if old not in section:
            continue
        if new in section:
            raise SettingsError(f"model-config.yaml: handler.{old} is the old name of handler.{new}; set only {new}")
        logger.warning("model-config.yaml: handler.%s is now called handler.%s; please rename it", old, new)
        section[new] = section.pop(old)
    return section


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


# ------------------------------------------------ the generated documentation


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _wrapped_comment(text: str, indent: str, width: int = 100) -> list[str]:
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            if line and len(indent) + 2 + len(line) + 1 + len(word) > width:
                lines.append(f"{indent}# {line}")
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(f"{indent}# {line}")
    return lines


def yaml_section() -> str:
    """model-config.yaml's ``handler:`` block: every setting, its default and description."""
    lines = ["handler:"]
    for index, entry in enumerate(dataclasses.fields(HandlerSettings)):
        if entry.metadata["group"]:
            if index:
                lines.append("")
            lines += _wrapped_comment(entry.metadata["group"], "  ")
        lines += _wrapped_comment(entry.metadata["doc"], "  ")
        lines.append(f"  {entry.name}: {_yaml_value(entry.default)}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """README's table of the settings."""
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    for entry in dataclasses.fields(HandlerSettings):
        default = entry.default
        shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) and default > 9999 \
            else _yaml_value(default)
        rows.append(f"| `{entry.name}` | {shown} | {entry.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimmf.serving.settings",
                                     description="print the handler settings as model-config.yaml's handler: "
                                                 "block or as README's table")
    parser.add_argument("form", choices=("yaml", "markdown"))
    args = parser.parse_args(argv)
    sys.stdout.write(yaml_section() if args.form == "yaml" else markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
