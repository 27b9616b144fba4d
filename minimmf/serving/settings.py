"""The handler's settings: model-config.yaml's ``handler:`` section, checked
once when the worker starts, then read as plain typed attributes.

``HandlerSettings`` is the one declaration: each field's default and its
description; ``LiveSettings`` declares the live model's ``handler.live``
section the same way. model-config.yaml's ``handler:`` block, the live
model's (model-config-live.yaml, with ``live:``) and README's settings tables
are generated from them (``python -m minimmf.serving.settings yaml``,
``yaml-live``, ``markdown`` or ``markdown-live``), and a test checks that each
is what they generate.
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

PRECISIONS = ("fp32", "bf16", "int8")
MAX_SEGMENT_SECONDS = 3600.0
# settings renamed so that evaluation and serving use one name: old name -> new name
RENAMED = {"threshold": "prediction_threshold"}
# settings whose work another one does now: old name -> what to set instead
REPLACED = {"quantize_bert": "precision: int8 (PyTorch's x86 int8 path, PT2E; needs pt2 compile)"}


class SettingsError(ValueError):
    """A ``handler:`` setting in model-config.yaml is unknown or has a bad value."""


def setting(default: Any, doc: str, group: str = "") -> Any:
    """A field with its description (``group`` starts a commented group of settings)."""
    return field(default=default, metadata={"doc": doc, "group": group})


@dataclass(frozen=True)
class LiveSettings:
    """The live model's streams (README, "Live streams"): what each answer is about, and what one worker
    holds."""

    window_seconds: float = setting(
        4.0, "each answer is about the stream's last this many seconds, sampled as a timeline window of this "
             "length is (frames_per_clip frames spread over it, the audio from its start)")
    answer_every_seconds: float = setting(
        1.0, "a window ends every this many seconds of stream time; a chunk that completes one or more is "
             "answered with the latest of them")
    max_streams: int = setting(
        16, "streams one worker holds; beyond it, the least recently used one is dropped (keep it at "
            "maxNumSequence or above)")
    max_stream_bytes: int = setting(
        64 * 2**20, "memory one stream's state may take (the frames and audio its coming windows need); a chunk "
                    "that would need more gets HTTP 400")

    @classmethod
    def from_model_yaml(cls, model_yaml_config: Mapping[str, Any], section: Any) -> LiveSettings:
        """The settings of ``handler.live`` (``section``), checked against the
        model's sequence batching settings in ``model_yaml_config``."""
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise SettingsError(f"model-config.yaml: 'handler.live' must be a mapping of settings, got {section!r}")
        settings = cls(**_typed_values(cls, dict(section), "handler.live"))
        settings._check(model_yaml_config)
        return settings

    def _check(self, model_yaml_config: Mapping[str, Any]) -> None:
        for name in ("window_seconds", "answer_every_seconds"):
            if not 0 < getattr(self, name) <= MAX_SEGMENT_SECONDS:
                raise SettingsError(f"handler.live.{name} must be seconds > 0 and at most {MAX_SEGMENT_SECONDS}, "
                                    f"not {getattr(self, name)}")
        for name in ("max_streams", "max_stream_bytes"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"handler.live.{name} must be > 0, not {getattr(self, name)}")
        idle = model_yaml_config.get("sequenceMaxIdleMSec")
        if isinstance(idle, bool) or not isinstance(idle, int) or idle <= 0:
            raise SettingsError(f"sequenceBatching needs sequenceMaxIdleMSec > 0 in model-config.yaml (milliseconds "
                                f"a stream may pause before it ends), not {idle!r}: without it TorchServe 0.12 "
                                "answers every request with HTTP 500")
        batch = int(model_yaml_config.get("batchSize", 1))
        # with continuous batching TorchServe puts up to twice batchSize streams in one batch
        per_batch = 2 * batch if model_yaml_config.get("continuousBatching") else batch
        if self.max_streams < per_batch:
            raise SettingsError(f"handler.live.max_streams ({self.max_streams}) must hold at least the {per_batch} "
                                f"streams one batch may bring (batchSize {batch}"
                                f"{', twice with continuousBatching' if per_batch > batch else ''})")
        if not model_yaml_config.get("continuousBatching"):
            logger.warning("model-config.yaml: sequenceBatching without continuousBatching: a stream's end "
                           "(ts_request_sequence_end) frees its maxNumSequence slot only after "
                           "sequenceMaxIdleMSec")
        sequences = int(model_yaml_config.get("maxNumSequence", 1))
        workers = int(model_yaml_config.get("maxWorkers", model_yaml_config.get("minWorkers", 1)))
        if sequences > self.max_streams * workers:
            logger.warning("model-config.yaml: maxNumSequence %d is more than handler.live.max_streams %d x %d "
                           "workers: live streams may be dropped to make room for others", sequences,
                           self.max_streams, workers)


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
        True, "channels-last convolution weights: the same fp32 answers (to ~1e-6), faster kernels (compiled: the 3-D "
              "convolutions only)",
        "Speed (README, \"Precision and compilation\"; bench/precision.py measures the modes against fp32).")
    precision: str = setting(
        "fp32", "fp32; bf16 (the model converted to bfloat16: fast on CPUs with AMX or AVX512-BF16 and on GPUs "
                "from Ampere on); int8 (PyTorch's x86 path, PT2E: dynamic int8 linear layers, the rest fp32; x86 "
                "CPUs, needs pt2 compile). The answers move slightly, within README's figures")
    compile_cache_dir: str | None = setting(
        None, "where compiled models are kept (with pt2 compile): a restarted or second worker loads the model "
              "compiled there instead of compiling again; null = $TORCHINDUCTOR_CACHE_DIR, else torch's default "
              "(/tmp/torchinductor_<user>)")
    # handler.live, the live model's streams: set only when model-config.yaml turns sequenceBatching on
    live: LiveSettings | None = field(default=None, metadata={"section": LiveSettings})

    @classmethod
    def from_model_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> HandlerSettings:
        """The settings of model-config.yaml's ``handler:`` section (defaults for absent keys)."""
        section = (model_yaml_config or {}).get("handler") or {}
        if not isinstance(section, Mapping):
            raise SettingsError(f"model-config.yaml: 'handler' must be a mapping of settings, got {section!r}")
        section = _replaced(_renamed(dict(section)))
        live = section.pop("live", None)
        if model_yaml_config and model_yaml_config.get("sequenceBatching"):
            section["live"] = LiveSettings.from_model_yaml(model_yaml_config, live)
        elif live is not None:
            raise SettingsError("model-config.yaml: handler.live is for a live model: it needs sequenceBatching: "
                                "true (see model-config-live.yaml)")
        settings = cls(**_typed_values(cls, section, "handler"))
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        threshold = self.prediction_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SettingsError(f"handler.prediction_threshold must be a probability in [0, 1] or null, "
                                f"not {threshold}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"handler.precision must be one of {PRECISIONS}, not {self.precision!r}")
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


# torch.compile's modes (torch._inductor.list_mode_options), as TorchServe's pt2 section names them
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_KEYS = ("enable", "backend", "mode", "options")


@dataclass(frozen=True)
class CompileSettings:
    """model-config.yaml's ``pt2`` section, in TorchServe's convention
    (``pt2: {compile: {enable: true, backend: inductor, mode: ...}}``): whether
    the predictor's model is compiled by ``torch.compile``, with Inductor's
    mode and options. The handler compiles it itself (TorchServe's
    BaseHandler, which reads ``pt2``, does not load this model) and warms it
    up at initialize (``minimmf.serving.compiled``; README, "Precision and
    compilation")."""

    enable: bool = False
    backend: str = "inductor"
    mode: str = "default"
    options: Mapping[str, Any] = field(default_factory=dict)  # Inductor config keys, checked when compiling

    def torch_kwargs(self) -> dict[str, Any]:
        """``torch.compile``'s mode and options as given (torch takes one or the other)."""
        kwargs: dict[str, Any] = {}
        if self.mode != "default":
            kwargs["mode"] = self.mode
        if self.options:
            kwargs["options"] = dict(self.options)
        return kwargs

    @classmethod
    def from_model_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> CompileSettings:
        """The ``pt2`` section's settings (not compiled without one)."""
        section = (model_yaml_config or {}).get("pt2")
        if section is None:
            return cls()
        if isinstance(section, str) or (isinstance(section, Mapping) and section and
                                         set(section) <= {"backend", "mode", "options"}):
            logger.warning("model-config.yaml: pt2 given as %r is TorchServe's deprecated form; write "
                           "pt2: {compile: {enable: true, backend: ..., mode: ...}}", section)
            return cls._checked({"enable": True, **({"backend": section} if isinstance(section, str) else section)})
        if not isinstance(section, Mapping):
            raise SettingsError(f"model-config.yaml: pt2 must be a mapping such as {{compile: {{enable: true}}}}, "
                                f"not {section!r}")
        if "export" in section:
            raise SettingsError("model-config.yaml: pt2.export (TorchServe's loading of a precompiled .so) does not "
                                "apply to this handler, which compiles the model itself: use pt2: {compile: "
                                "{enable: true}}")
        unknown = sorted(set(section) - {"compile"})
        if unknown:
            raise SettingsError(f"model-config.yaml: unknown pt2 key(s) {unknown}; this handler reads pt2.compile")
        compile_section = section.get("compile")
        if not isinstance(compile_section, Mapping):
            raise SettingsError(f"model-config.yaml: pt2.compile must be a mapping such as {{enable: true}}, not "
                                f"{compile_section!r}")
        return cls._checked(dict(compile_section))

    @classmethod
    def _checked(cls, section: dict[str, Any]) -> CompileSettings:
        unknown = sorted(set(section) - set(COMPILE_KEYS))
        if unknown:
            raise SettingsError(f"model-config.yaml: unknown pt2.compile key(s) {unknown}; known: {list(COMPILE_KEYS)} "
                                "(the whole model is always compiled, with a dynamic batch dimension)")
        if not isinstance(section.get("enable"), bool):
            raise SettingsError(f"model-config.yaml: pt2.compile.enable must be true or false, not "
                                f"{section.get('enable')!r}")
        backend = section.get("backend", "inductor")
        if backend != "inductor":
            raise SettingsError(f"model-config.yaml: pt2.compile.backend {backend!r} is not supported: the handler "
                                "compiles with Inductor (freezing, int8 lowering and its on-disk cache need it); use "
                                "inductor or leave it out")
        mode = section.get("mode") or "default"
        if mode not in COMPILE_MODES:
            raise SettingsError(f"model-config.yaml: pt2.compile.mode must be one of {COMPILE_MODES}, not {mode!r}")
        if mode != "default" and section.get("options"):
            raise SettingsError("model-config.yaml: pt2.compile takes mode or options, not both (torch.compile "
                                "refuses both)")
        options = section.get("options") or {}
        if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
            raise SettingsError(f"model-config.yaml: pt2.compile.options must map Inductor config names to values, "
                                f"not {options!r}")
        return cls(section["enable"], backend, mode, dict(options))


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


def _typed_values(cls: type, section: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``section``'s values checked against ``cls``'s fields (``prefix``: where
    the section is, for the messages); a nested section's value is already built."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise SettingsError(f"model-config.yaml: unknown {prefix} setting(s) {unknown}; known: {sorted(known)}")
    return {name: value if "section" in known[name].metadata else _checked(f"{prefix}.{name}", value,
                                                                            known[name].type)
            for name, value in section.items()}


def _replaced(section: dict[str, Any]) -> dict[str, Any]:
    """``section`` without the settings whose work another does now: one left
    at its old default is dropped with a warning, one turned on is refused,
    naming what to set instead."""
    for old, instead in REPLACED.items():
        if old not in section:
            continue
        if section[old]:
            raise SettingsError(f"model-config.yaml: handler.{old} is no longer a setting; set handler.{instead} "
                                "instead (README, \"Precision and compilation\")")
        logger.warning("model-config.yaml: handler.%s is no longer a setting (handler.%s does its work); please "
                       "remove it", old, instead)
        del section[old]
    return section


def _checked(name: str, value: Any, annotation: str) -> Any:
    """``value`` as the type the field's annotation names, or a SettingsError
    naming the setting (``name``: its full name, ``handler.top_k``)."""
    optional = annotation.endswith("| None")
    if value is None:
        if optional:
            return None
        raise SettingsError(f"{name} must not be null")
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
        raise TypeError(f"setting {name}: unsupported annotation {annotation!r}")
    raise SettingsError(f"{name} must be {'a ' + base if base != 'int' else 'an int'}"
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


def _documented(cls: type) -> list[dataclasses.Field]:
    """``cls``'s settings (its nested sections left out)."""
    return [entry for entry in dataclasses.fields(cls) if "section" not in entry.metadata]


def _yaml_lines(cls: type, indent: str) -> list[str]:
    lines: list[str] = []
    for index, entry in enumerate(_documented(cls)):
        if entry.metadata["group"]:
            if index:
                lines.append("")
            lines += _wrapped_comment(entry.metadata["group"], indent)
        lines += _wrapped_comment(entry.metadata["doc"], indent)
        lines.append(f"{indent}{entry.name}: {_yaml_value(entry.default)}")
    return lines


def yaml_section(live: bool = False) -> str:
    """model-config.yaml's ``handler:`` block: every setting, its default and
    description; with ``live``, the live model's, ending with ``live:``."""
    lines = ["handler:", *_yaml_lines(HandlerSettings, "  ")]
    if live:
        group = " ".join(LiveSettings.__doc__.split())
        lines += ["", *_wrapped_comment(group, "  "), "  live:", *_yaml_lines(LiveSettings, "    ")]
    return "\n".join(lines) + "\n"


def markdown_table(cls: type = HandlerSettings) -> str:
    """README's table of the settings (``LiveSettings``: of ``handler.live``)."""
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    for entry in _documented(cls):
        default = entry.default
        shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) and default > 9999 \
            else _yaml_value(default)
        rows.append(f"| `{entry.name}` | {shown} | {entry.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimmf.serving.settings",
                                     description="print the handler settings as model-config.yaml's handler: "
                                                 "block (yaml-live: the live model's) or as README's table "
                                                 "(markdown-live: of handler.live)")
    parser.add_argument("form", choices=tuple(FORMS))
    args = parser.parse_args(argv)
    sys.stdout.write(FORMS[args.form]())
    return 0


FORMS = {"yaml": yaml_section, "yaml-live": lambda: yaml_section(live=True), "markdown": markdown_table,
         "markdown-live": lambda: markdown_table(LiveSettings)}


if __name__ == "__main__":
    sys.exit(main())
