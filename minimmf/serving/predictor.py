"""The model behind the handler: built from the archived config through the
registry, with the archived weights, on the device TorchServe assigned,
prepared for inference as the settings ask; and the dataset's sample maker,
which turns a video and its script into model inputs exactly as evaluation
does. The model and the dataset are reached only through their interfaces
(``BaseModel``, ``BaseDatasetBuilder``): nothing here knows MMFTransformer
or Charades."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from minimmf.common.registry import registry
from minimmf.common.sample import Sample, SampleList
from minimmf.datasets.video_clips import ClipPlan, DecodeLimits, SpreadClips, TimelineWindows, Together, window_seconds
from minimmf.serving.compiled import DTYPES, ModelRunner
from minimmf.serving.model_files import dataset_builder, read_config, run_manifest
from minimmf.serving.settings import CompileSettings, HandlerSettings
from minimmf.utils.build import build_model
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import dataset_names
from minimmf.utils.env import setup_imports
from minimmf.utils.hardware import detect

logger = logging.getLogger(__name__)


def select_device(gpu_id: Any) -> torch.device:
    """The GPU TorchServe assigned, when there is one; else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", int(gpu_id))
    return torch.device("cpu")


def inference_config(config: DictConfig, vocabulary: Path | None) -> DictConfig:
    """The archived config with the edits serving needs, which the model's class and
    the dataset's builder say (the archived vocabulary, no pretrained downloads)."""
    setup_imports()
    config = config.copy()
    model_class = registry.require("model", config.model)
    config.model_config[config.model] = model_class.config_for_inference(config.model_config[config.model])
    name = dataset_names(config)[0]
    config.dataset_config[name] = dataset_builder(config).config_for_inference(config.dataset_config[name],
                                                                              vocabulary)
    return config


@dataclass
class RequestSamples:
    """The model inputs of one request: its video-level clips (pooled into
    one answer), and its timeline's windows with the seconds each spans."""

    clips: list[Sample]
    windows: list[Sample] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    window_seconds: float | None = None  # the length the timeline used (None: no timeline)
    decode_seconds: float = 0.0  # of the time to make them, what decoding the video took


class Predictor:
    """Video + script -> the request's samples (``samples``);
    samples -> probabilities (``predict``)."""

    def __init__(self, config: DictConfig, classes: list[str], state_dict: dict[str, Any], device: torch.device,
                 settings: HandlerSettings, compile_settings: CompileSettings | None = None):
        self.config, self.classes, self.device, self.settings = config, classes, device, settings
        self.dataset_name = dataset_names(config)[0]
        dataset_config = config.dataset_config[self.dataset_name]
        model = build_model(config)
        if model.num_labels != len(classes):
            raise ValueError(f"the model has {model.num_labels} outputs but the labels file defines {len(classes)} "
                             "classes; archive the labels CSV of the dataset the model was trained on")
        model.load_state_dict(state_dict)
        compile_settings = compile_settings or CompileSettings()
        self.model = model.to(device).prepare_for_inference(settings.channels_last, DTYPES[settings.precision],
                                                            compiled=compile_settings.enable)
        limits = DecodeLimits(settings.max_frame_pixels, settings.max_frames, settings.max_decode_seconds,
                              setting_prefix="handler.")
        builder = dataset_builder(config)
        self.sample_maker = builder.inference_sample_maker(dataset_config, limits)
        self.inputs = builder.describe_inputs(dataset_config)
        self.frames_per_clip = self.sample_maker.frames_per_clip
        self.video_clips = SpreadClips(settings.clips, self.frames_per_clip)
        default_threshold = float(dataset_config.get("prediction_threshold", 0.5))
        chosen = settings.prediction_threshold
        self.threshold = chosen if chosen is not None else default_threshold
        self.runner = ModelRunner(self.model, device, settings.precision, compile_settings, detect(device),
                                  self.blank_inputs, settings.max_model_batch, settings.compile_cache_dir)

    def blank_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Model inputs of ``batch_size`` blank samples (for the warm-up)."""
        return model_inputs(SampleList([self.sample_maker.blank_sample() for _ in range(batch_size)]))

    @classmethod
    def from_model_dir(cls, model_dir: Path, serialized_file: str, settings: HandlerSettings,
                       gpu_id: Any = None, compile_settings: CompileSettings | None = None) -> Predictor:
        """The predictor of an extracted archive: its config, class list,
        vocabulary (as its manifest names them) and serialized weights."""
        manifest = run_manifest(model_dir)
        config_path, labels = manifest.path(model_dir, "config"), manifest.path(model_dir, "labels")
        if labels is None or not labels.is_file():
            raise FileNotFoundError(f"no class list in the archive ({model_dir}); archive the labels CSV mmf_run "
                                    "saved (--extra-files)")
        config = read_config(config_path)
        config = inference_config(config, manifest.path(model_dir, "vocabulary"))
        classes = dataset_builder(config).read_class_list(labels)
        return cls(config, classes, load_checkpoint_file(model_dir / serialized_file, map_location="cpu"),
                   select_device(gpu_id), settings, compile_settings)

    def plan(self, segment_seconds: float) -> ClipPlan:
        """What to decode from one video: the ``clips`` video-level clips (first)
        and, with ``segment_seconds`` > 0, the timeline's windows."""
        if segment_seconds <= 0:
            return self.video_clips
        windows = TimelineWindows(segment_seconds, self.settings.max_segments, self.frames_per_clip)
        return Together((self.video_clips, windows))

    def samples(self, video: bytes, script: str, segment_seconds: float | None = None) -> RequestSamples:
        """Decode the video once and build every sample a request needs, as
        evaluation builds them: the video-level clips and the timeline's windows."""
        seconds = self.settings.segment_seconds if segment_seconds is None else segment_seconds
        started = time.perf_counter()
        decoded = self.sample_maker.decode_plan(video, self.plan(seconds))
        decode_seconds = time.perf_counter() - started
        text = self.sample_maker.text_fields(script)
        samples = [self.sample_maker.from_clip(clip, script, text) for clip in decoded]
        if seconds <= 0:
            return RequestSamples(samples, decode_seconds=decode_seconds)
        clips = self.settings.clips
        return RequestSamples(samples[:clips], samples[clips:], [(clip.start, clip.end) for clip in decoded[clips:]],
                              window_seconds(decoded[0].video_duration, seconds, self.settings.max_segments),
                              decode_seconds)

    def describe(self) -> dict[str, Any]:
        """The model in brief: its labels, threshold, device and main sizes."""
        model = self.model.describe()
        return {
            "model": model.pop("model"),
            "dataset": self.dataset_name,
            "labels": self.classes,
            "threshold": self.threshold,
            "device": str(self.device),
            **self.runner.describe(),
            "config": {**model, **self.inputs},
        }

    def predict(self, samples: list[Sample]) -> torch.Tensor:
        """Per-class probabilities (len(samples), classes), float32 on the CPU,
        through the model ``max_model_batch`` samples at a time."""
        step = self.settings.max_model_batch
        return torch.cat([self._predict_batch(samples[first:first + step]) for first in range(0, len(samples), step)])

    def _predict_batch(self, samples: list[Sample]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(self.runner(model_inputs(SampleList(samples)))).cpu()


def model_inputs(batch: SampleList) -> dict[str, torch.Tensor]:
    """The tensors of a batch: what the (compiled) model takes."""
    return {name: value for name, value in batch.items() if isinstance(value, torch.Tensor)}
