"""The model behind the handler: built from the archived config through the
registry, with the archived weights, on the device TorchServe assigned, with
the serving speed-ups the settings ask for; and the sample maker that turns
a video and its script into model inputs exactly as evaluation does."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from minimmf.common.sample import Sample, SampleList
from minimmf.datasets.builders.charades._utils import read_action_labels
from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker
from minimmf.datasets.builders.charades.video_clips import (
    ClipPlan,
    DecodeLimits,
    SpreadClips,
    TimelineWindows,
    Together,
    window_seconds,
)
from minimmf.datasets.processors.bert_processors import VOCAB_FILE_NAME
from minimmf.serving.settings import HandlerSettings
from minimmf.utils.build import build_model, build_processors
from minimmf.utils.checkpoint import load_checkpoint_file

logger = logging.getLogger(__name__)

# the reference example shipped the labels file with this spelling too
LABEL_FILE_NAMES = ("charades_action_labels.csv", "charades_action_lables.csv")
DATASET = "charades"


def select_device(gpu_id: Any) -> torch.device:
    """The GPU TorchServe assigned, when there is one; else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", int(gpu_id))
    return torch.device("cpu")


def find_labels_file(model_dir: Path) -> Path:
    for name in LABEL_FILE_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise FileNotFoundError(f"no {LABEL_FILE_NAMES[0]} in the archive ({model_dir}); pass it with --extra-files")


def load_serving_config(model_dir: Path) -> DictConfig:
    """config.yaml from the archive, with the tokenizer pointed at the archived
    vocabulary and the encoders' pretrained weights off (the archive has them)."""
    config_path = model_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no config.yaml in the archive ({model_dir}); pass save/config.yaml with --extra-files"
        )
    config = OmegaConf.load(config_path)
    for modality in config.model_config[config.model].get("modalities", []):
        encoder_params = (modality.get("encoder") or {}).get("params")
        if encoder_params is not None and encoder_params.get("pretrained"):
            encoder_params.pretrained = False  # the archive's weights replace them: nothing to fetch
    vocab = model_dir / VOCAB_FILE_NAME
    if vocab.is_file():
        text_params = config.dataset_config[DATASET].processors.text_processor.params
        text_params.tokenizer_config.type = str(vocab)
    return config


def use_channels_last(model: torch.nn.Module) -> None:
    """Channels-last weights for the convolutional encoders: the same fp32 results
    (to ~1e-6), faster oneDNN/cuDNN kernels, and batches that pay on a CPU."""
    for encoder in model.encoders.values():
        convolutions = [m for m in encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
        if any(isinstance(m, torch.nn.Conv3d) for m in convolutions):
            encoder.to(memory_format=torch.channels_last_3d)
        elif convolutions:
            encoder.to(memory_format=torch.channels_last)


def quantize_bert(model: torch.nn.Module) -> None:
    """Dynamic int8 quantization of the BERT encoder's linear layers (CPU only)."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which this stack does not pin
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        from torch.ao.quantization import quantize_dynamic

        model.backend.transformer = quantize_dynamic(model.backend.transformer, {torch.nn.Linear},
                                                     dtype=torch.qint8)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision: bf16``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_for_serving(model: torch.nn.Module, device: torch.device, settings: HandlerSettings) -> torch.nn.Module:
    """The eval-mode model on ``device`` with the speed-ups ``settings`` ask for."""
    model = model.to(device).eval()
    if settings.channels_last:
        use_channels_last(model)
    if settings.quantize_bert:
        if device.type == "cpu":
            quantize_bert(model)
        else:
            logger.warning("handler.quantize_bert is for CPU serving; ignored on %s", device)
    return model


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
                 settings: HandlerSettings):
        self.config, self.classes, self.device, self.settings = config, classes, device, settings
        dataset_config = config.dataset_config[DATASET]
        model = build_model(config)
        num_labels = model.heads[0].num_labels
        if num_labels != len(classes):
            raise ValueError(f"the model has {num_labels} outputs but the labels file defines {len(classes)} "
                             "classes; archive the labels CSV of the dataset the model was trained on")
        model.load_state_dict(state_dict)
        self.model = prepare_for_serving(model, device, settings)
        self.frames_per_clip = int(dataset_config.get("frames_per_clip", 16))
        limits = DecodeLimits(settings.max_frame_pixels, settings.max_frames, settings.max_decode_seconds,
                              setting_prefix="handler.")
        self.sample_maker = CharadesSampleMaker(build_processors(dataset_config.processors), "test",
                                                self.frames_per_clip, limits)
        self.video_clips = SpreadClips(settings.clips, self.frames_per_clip)
        default_threshold = float(dataset_config.get("prediction_threshold", 0.5))
        self.threshold = settings.threshold if settings.threshold is not None else default_threshold

    @classmethod
    def from_model_dir(cls, model_dir: Path, serialized_file: str, settings: HandlerSettings,
                       gpu_id: Any = None) -> Predictor:
        """The predictor of an extracted archive: config.yaml, the labels CSV,
        the vocabulary and the serialized weights."""
        return cls(load_serving_config(model_dir), read_action_labels(find_labels_file(model_dir)),
                   load_checkpoint_file(model_dir / serialized_file, map_location="cpu"), select_device(gpu_id),
                   settings)

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
        """The model in brief: its labels, threshold, device and the config's main sizes."""
        model_config = self.config.model_config[self.config.model]
        bert = self.model.backend.transformer_config
        text_params = self.config.dataset_config[DATASET].processors.text_processor.params
        return {
            "model": "MMFTransformer (text + video + audio)",
            "labels": self.classes,
            "threshold": self.threshold,
            "device": str(self.device),
            "config": {
                "transformer_base": model_config.transformer_base,
                "hidden_size": bert.hidden_size,
                "num_hidden_layers": bert.num_hidden_layers,
                "modalities": [{"key": m.key, "encoder": m.get("encoder", {}).get("type", "identity")}
                               for m in model_config.modalities],
                "frames_per_clip": self.frames_per_clip,
                "max_seq_length": int(text_params.max_seq_length),
            },
        }

    def predict(self, samples: list[Sample]) -> torch.Tensor:
        """Per-class probabilities (len(samples), classes), float32 on the CPU,
        through the model ``max_model_batch`` samples at a time."""
        step = self.settings.max_model_batch
        return torch.cat([self._predict_batch(samples[first:first + step]) for first in range(0, len(samples), step)])

    def _predict_batch(self, samples: list[Sample]) -> torch.Tensor:
        batch = SampleList(samples)
        batch.dataset_name, batch.dataset_type = DATASET, "test"
        with torch.inference_mode(), autocast_for(self.device, self.settings.precision):
            scores = self.model(batch.to(self.device, non_blocking=True))["scores"]
            return torch.sigmoid(scores.float()).cpu()
