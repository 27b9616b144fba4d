"""TorchServe handler for MMF's MMFTransformer on Charades (video + audio + text).

Each request is a multipart form, as in the pytorch/serve MMF example:

    data    the video file's bytes (any container/codec FFmpeg reads)
    script  the video's script (UTF-8 text)
    labels  optional: the expected action labels (a JSON list, or one label)
    info    optional: an info.json ({"script": ..., "action_labels": [...]})
            instead of the two fields above

and the answer is JSON: the labels whose probability reaches the threshold,
the per-class probabilities, and, when labels were sent, which were found.
A bad request gets HTTP 400 with {"code": 400, "error": "..."} for that
request alone; the others of its batch are answered normally. A KServe v2
inference request (a JSON body with "inputs" named data, script, labels or
info; the video base64-encoded as BYTES) gets a v2 response whose output
"predictions" holds the same JSON answer.

Everything the handler reads comes from the extracted archive (``model_dir``):
the serialized weights, ``config.yaml`` (the complete config mmf_run saved),
``charades_action_labels.csv`` and the tokenizer's ``vocab.txt``. Settings in
the ``handler:`` section of model-config.yaml: ``threshold``, ``top_k``
(0 = every class), ``max_video_bytes``, ``max_script_chars``, ``channels_last``,
and the opt-in faster modes ``precision: bf16`` and ``quantize_bert: true``
(measured by bench/precision.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from ts.torch_handler.base_handler import BaseHandler

import minimmf
from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades._utils import VideoDecodeError, read_action_labels
from minimmf.datasets.builders.charades.dataset import CharadesSampleMaker
from minimmf.datasets.processors.bert_processors import VOCAB_FILE_NAME
from minimmf.models.mmf_transformer import MMFTransformer
from minimmf.utils.build import build_processors
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.env import setup_imports
from minimmf.utils.logger import setup_very_basic_config

logger = logging.getLogger(__name__)

# the reference example shipped the labels file with this spelling too
LABEL_FILE_NAMES = ("charades_action_labels.csv", "charades_action_lables.csv")
DEFAULT_SETTINGS = {"threshold": None, "top_k": 0, "max_video_bytes": 200 * 1024 * 1024, "max_script_chars": 20_000,
                    "channels_last": True, "precision": "fp32", "quantize_bert": False}


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
    """Opt-in: dynamic int8 quantization of the BERT encoder's linear layers (CPU only)."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which this stack does not pin
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        from torch.ao.quantization import quantize_dynamic

        model.backend.transformer = quantize_dynamic(model.backend.transformer, {torch.nn.Linear},
                                                     dtype=torch.qint8)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision: bf16`` (opt-in), else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"handler.precision must be fp32 or bf16, not {precision!r}")
    return contextlib.nullcontext()


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
    """config.yaml from the archive, with the tokenizer pointed at the archived vocabulary."""
    config_path = model_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no config.yaml in the archive ({model_dir}); pass save/config.yaml with --extra-files"
        )
    config = OmegaConf.load(config_path)
    vocab = model_dir / VOCAB_FILE_NAME
    if vocab.is_file():
        text_params = config.dataset_config.charades.processors.text_processor.params
        text_params.tokenizer_config.type = str(vocab)
    return config


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MMFHandler.BadRequest(f"field '{name}' is not UTF-8 text") from None
    raise MMFHandler.BadRequest(f"field '{name}' must be text, got {type(value).__name__}")


def _labels(value: Any) -> list[str]:
    if isinstance(value, (bytes, bytearray, str)):
        text = _text(value, "labels").strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return [text] if text else []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise MMFHandler.BadRequest("field 'labels' must be a JSON list of action names")


def _info(value: Any) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray, str)):
        try:
            value = json.loads(_text(value, "info"))
        except json.JSONDecodeError as error:
            raise MMFHandler.BadRequest(f"field 'info' is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise MMFHandler.BadRequest('field \'info\' must be a JSON object like {"script": ..., "action_labels": [...]}')
    return value


def kserve_v2_fields(request: dict[str, Any]) -> dict[str, Any] | None:
    """The fields of a KServe v2 inference request ({"inputs": [{"name", "datatype",
    "data"}, ...]}, the video as base64 BYTES), or None for any other request."""
    body = request.get("body", request.get("data"))
    if isinstance(body, (bytes, bytearray)) and body[:1] == b"{":
        try:
            body = json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return None
    fields: dict[str, Any] = {"v2_id": body.get("id") or ""}
    for item in body["inputs"]:
        if not isinstance(item, dict) or "name" not in item:
            raise MMFHandler.BadRequest("each KServe v2 input needs a 'name', a 'datatype' and 'data'")
        values = item.get("data")
        value = values[0] if isinstance(values, list) and values else values
        if item["name"] in ("data", "video") and isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise MMFHandler.BadRequest("KServe v2 input 'data' must be the base64 of the video file") from None
        fields[item["name"]] = value
    return fields


def parse_request(request: dict[str, Any], max_video_bytes: int, max_script_chars: int) -> MMFHandler.ParsedRequest:
    """The video, script and optional labels of one request: multipart fields,
    or the inputs of a KServe v2 request."""
    v2_fields = kserve_v2_fields(request)
    request = v2_fields if v2_fields is not None else request
    info = _info(request["info"]) if request.get("info") is not None else {}
    video = request.get("data", request.get("video"))
    if video is None:
        raise MMFHandler.BadRequest("no video: send the video file's bytes in the form field 'data'")
    if isinstance(video, str):
        raise MMFHandler.BadRequest("field 'data' must be the video file's bytes, not text")
    if not isinstance(video, (bytes, bytearray)):
        raise MMFHandler.BadRequest(f"field 'data' must be the video file's bytes, got {type(video).__name__}")
    if len(video) == 0:
        raise MMFHandler.BadRequest("the video is empty (0 bytes)")
    if len(video) > max_video_bytes:
        raise MMFHandler.BadRequest(f"the video is {len(video):,} bytes, over the limit of {max_video_bytes:,} "
                                    "(handler.max_video_bytes in model-config.yaml)")
    script = request.get("script", info.get("script"))
    if script is None:
        raise MMFHandler.BadRequest("no script: send the video's script in the form field 'script' (or an 'info' JSON)")
    script = _text(script, "script")
    if len(script) > max_script_chars:
        raise MMFHandler.BadRequest(
            f"the script has {len(script):,} characters, over the limit of {max_script_chars:,}")
    labels = request.get("labels", info.get("action_labels", info.get("labels")))
    return MMFHandler.ParsedRequest(bytes(video), script, _labels(labels) if labels is not None else None,
                                    request.get("v2_id"))


class MMFHandler(BaseHandler):
    """MMFTransformer activity recognition: video + audio + script -> Charades actions."""

    # TorchServe wants exactly one class per handler module: the helpers live inside it

    class BadRequest(ValueError):
        """A request the handler cannot use; answered with HTTP 400 and this message."""

    @dataclass
    class ParsedRequest:
        video: bytes
        script: str
        expected_labels: list[str] | None
        v2_id: str | None = None  # set for KServe v2 requests: answered in the v2 format

    @dataclass
    class PreparedBatch:
        """The usable requests of a batch, collated, and the errors of the others."""

        size: int
        samples: SampleList | None = None
        rows: list[int] = field(default_factory=list)  # request index of each sample
        expected: dict[int, list[str] | None] = field(default_factory=dict)
        errors: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (status, message)
        v2_ids: dict[int, str] = field(default_factory=dict)  # KServe v2 requests and their ids

    def initialize(self, context: Any) -> None:
        started = time.perf_counter()
        setup_very_basic_config()
        setup_imports()
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        self.manifest = context.manifest
        self.device = select_device(properties.get("gpu_id"))
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = {**DEFAULT_SETTINGS, **(yaml_config.get("handler") or {})}
        self.config = load_serving_config(model_dir)
        self.classes = read_action_labels(find_labels_file(model_dir))
        self.model = self._load_model(model_dir)
        dataset_config = self.config.dataset_config.charades
        processors = build_processors(dataset_config.processors)
        self.sample_maker = CharadesSampleMaker(processors, "test", int(dataset_config.get("frames_per_clip", 16)))
        threshold = self.settings["threshold"]
        self.threshold = float(threshold if threshold is not None else dataset_config.get("prediction_threshold", 0.5))
        self.initialized = True
        logger.info("MMF handler ready in %.1f s on %s: %d classes, threshold %.2f, minimmf %s, torch %s, "
                    "transformers %s", time.perf_counter() - started, self.device, len(self.classes), self.threshold,
                    minimmf.__version__, torch.__version__, transformers.__version__)

    def _load_model(self, model_dir: Path) -> MMFTransformer:
        model = MMFTransformer(self.config.model_config.mmf_transformer)
        model.build()
        model.init_losses()
        num_labels = model.heads[0].num_labels
        if num_labels != len(self.classes):
            raise ValueError(f"the model has {num_labels} outputs but the labels file defines {len(self.classes)} "
                             "classes; archive the labels CSV of the dataset the model was trained on")
        serialized_file = self.manifest["model"]["serializedFile"]
        model.load_state_dict(load_checkpoint_file(model_dir / serialized_file, map_location="cpu"))
        model = model.to(self.device).eval()
        if self.settings["channels_last"]:
            use_channels_last(model)
        if self.settings["quantize_bert"]:
            if self.settings["precision"] != "fp32":
                raise ValueError("handler.quantize_bert works with precision fp32 only (int8 kernels take fp32 input)")
            if self.device.type == "cpu":
                quantize_bert(model)
            else:
                logger.warning("handler.quantize_bert is for CPU serving; ignored on %s", self.device)
        autocast_for(self.device, self.settings["precision"])  # reject a bad value at start
        return model

    # ------------------------------------------------------------ the hooks

    def preprocess(self, data: list[dict[str, Any]]) -> MMFHandler.PreparedBatch:
        batch = self.PreparedBatch(size=len(data))
        samples, decode_ms, started = [], 0.0, time.perf_counter()
        for index, request in enumerate(data):
            try:
                parsed = parse_request(request, int(self.settings["max_video_bytes"]),
                                       int(self.settings["max_script_chars"]))
                decode_start = time.perf_counter()
                clip = self.sample_maker.decode(parsed.video)
                decode_ms += (time.perf_counter() - decode_start) * 1000
                samples.append(self.sample_maker.from_clip(clip, parsed.script))
            except (self.BadRequest, VideoDecodeError) as error:
                batch.errors[index] = (400, str(error))
                continue
            except Exception:  # one broken request must not fail the others
                logger.exception("request %d of the batch failed in preprocessing", index)
                batch.errors[index] = (500, "the request could not be processed; see the model log")
                continue
            batch.rows.append(index)
            batch.expected[index] = parsed.expected_labels
            if parsed.v2_id is not None:
                batch.v2_ids[index] = parsed.v2_id
        if samples:
            batch.samples = SampleList(samples)
            batch.samples.dataset_name, batch.samples.dataset_type = "charades", "test"
        self._add_time("DecodeTime", decode_ms)
        self._add_time("PreprocessTime", (time.perf_counter() - started) * 1000)
        return batch

    def inference(self, batch: MMFHandler.PreparedBatch, *args: Any,
                  **kwargs: Any) -> tuple[MMFHandler.PreparedBatch, torch.Tensor | None]:
        if batch.samples is None:
            return batch, None
        started = time.perf_counter()
        with torch.inference_mode(), autocast_for(self.device, self.settings["precision"]):
            scores = self.model(batch.samples.to(self.device, non_blocking=True))["scores"]
            probabilities = torch.sigmoid(scores.float()).cpu()
        self._add_time("ModelTime", (time.perf_counter() - started) * 1000)
        return batch, probabilities

    def postprocess(self, inference_output: tuple[MMFHandler.PreparedBatch, torch.Tensor | None],
                    ) -> list[dict[str, Any]]:
        batch, probabilities = inference_output
        responses: list[dict[str, Any]] = []
        row_of = {index: row for row, index in enumerate(batch.rows)}
        for index in range(batch.size):
            if index in batch.errors:
                status, message = batch.errors[index]
                self.context.set_response_status(code=status, phrase=message[:200], idx=index)
                responses.append({"code": status, "error": message})
            elif index in batch.v2_ids:
                answer = self.answer(probabilities[row_of[index]], batch.expected[index])
                responses.append(self.v2_response(answer, batch.v2_ids[index] or self.context.get_request_id(index)))
            else:
                responses.append(self.answer(probabilities[row_of[index]], batch.expected[index]))
        return responses

    def v2_response(self, answer: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        """A KServe v2 inference response whose one output is the JSON answer."""
        return {
            "id": request_id,
            "model_name": self.manifest["model"].get("modelName", "MMF_model"),
            "model_version": self.manifest["model"].get("modelVersion"),
            "outputs": [{"name": "predictions", "datatype": "BYTES", "shape": [1], "data": [json.dumps(answer)]}],
        }

    def answer(self, probabilities: torch.Tensor, expected: list[str] | None) -> dict[str, Any]:
        """One request's JSON answer."""
        order = torch.argsort(probabilities, descending=True).tolist()
        labels = [self.classes[i] for i in order if probabilities[i] >= self.threshold]
        top_k = int(self.settings["top_k"]) or len(self.classes)
        response: dict[str, Any] = {
            "labels": labels,
            "scores": {self.classes[i]: round(float(probabilities[i]), 6) for i in order[:top_k]},
            "threshold": self.threshold,
        }
        if expected is not None:
            response["expected_labels"] = expected
            response["found"] = [label for label in expected if label in labels]
            response["missed"] = [label for label in expected if label in self.classes and label not in labels]
            response["unknown_labels"] = [label for label in expected if label not in self.classes]
        return response

    def describe_handle(self) -> dict[str, Any]:
        model_config = self.config.model_config.mmf_transformer
        bert = self.model.backend.transformer_config
        return {
            "model": "MMFTransformer (text + video + audio)",
            "labels": self.classes,
            "threshold": self.threshold,
            "top_k": int(self.settings["top_k"]),
            "device": str(self.device),
            "config": {
                "transformer_base": model_config.transformer_base,
                "hidden_size": bert.hidden_size,
                "num_hidden_layers": bert.num_hidden_layers,
                "modalities": [{"key": m.key, "encoder": m.get("encoder", {}).get("type", "identity")}
                               for m in model_config.modalities],
                "frames_per_clip": int(self.config.dataset_config.charades.get("frames_per_clip", 16)),
                "max_seq_length": int(self.config.dataset_config.charades.processors.text_processor.params
                                      .max_seq_length),
            },
            "versions": {"minimmf": minimmf.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__},
        }

    def _add_time(self, name: str, milliseconds: float) -> None:
        metrics = getattr(getattr(self, "context", None), "metrics", None)
        if metrics is not None:
            metrics.add_time(name, round(milliseconds, 2), None, "ms")
