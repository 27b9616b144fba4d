"""TorchServe handler for MMF's MMFTransformer on Charades (video + audio + text).

A request is a multipart form, as in the pytorch/serve MMF example: ``data``
(the video file), ``script`` (its script), optional ``labels`` (a JSON list)
or ``info`` (an info.json instead of the last two) and ``segment_seconds``
(a timeline's window length); or a KServe v2 body with inputs of those
names. The answer is a JSON object: the labels at or above the threshold,
the class probabilities, with labels sent which were found, and with a
timeline asked for, each window's labels and probabilities (``timeline``). A
bad request gets HTTP 400 ``{"code": 400, "error": "..."}`` alone; the rest
of its batch is answered. Each request of a batch is handled on its own: a
describe request (``GET /models/<name>?customized=true``) gets the model's
description and an explanation request 501, beside the others' predictions
(TorchServe's ``BaseHandler`` decides for the whole batch from its first
request).

The work is done by ``minimmf.serving`` (settings, request parsing, the
predictor, answers); this file is the TorchServe glue. The archive holds the
weights, ``config.yaml`` (the complete config mmf_run saved), the class list,
the vocabulary and ``manifest.json``, which names them; model-config.yaml's
``handler:`` section holds the settings (``minimmf.serving.settings.HandlerSettings``).

Archived with model-config-live.yaml (sequence batching), the same handler
serves live streams: each request is a chunk of a stream, answered with what
its latest window shows (``handle_live``, ``minimmf.serving.live``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from ts.torch_handler.base_handler import BaseHandler

import minimmf
from minimmf.modules.predictions import pool_clip_probabilities
from minimmf.serving.answers import build_answer, build_timeline, v2_binary_response, v2_response
from minimmf.serving.batch import PreparedBatch
from minimmf.serving.inputs import parse_request
from minimmf.serving.kserve_v2 import HEADER_LENGTH
from minimmf.serving.live import ChunkRequest, LiveStreams
from minimmf.serving.predictor import Predictor
from minimmf.serving.settings import CompileSettings, HandlerSettings
from minimmf.utils.env import setup_imports
from minimmf.utils.logger import setup_very_basic_config

logger = logging.getLogger(__name__)


class MMFHandler(BaseHandler):
    """MMFTransformer activity recognition: video + audio + script -> Charades actions."""

    def initialize(self, context: Any) -> None:
        """Validate the settings, then build the predictor from the extracted archive."""
        started = time.perf_counter()
        setup_very_basic_config()
        setup_imports()
        properties = context.system_properties
        self.manifest = context.manifest
        model_yaml_config = getattr(context, "model_yaml_config", None)
        self.settings = HandlerSettings.from_model_yaml(model_yaml_config)
        self.predictor = Predictor.from_model_dir(Path(properties["model_dir"]),
                                                  self.manifest["model"]["serializedFile"], self.settings,
                                                  properties.get("gpu_id"),
                                                  CompileSettings.from_model_yaml(model_yaml_config))
        # the live model (sequenceBatching): its streams, dropped after TorchServe's idle time
        idle_seconds = (model_yaml_config or {}).get("sequenceMaxIdleMSec", 0) / 1000
        self.live = LiveStreams(self.predictor, self.settings, idle_seconds) if self.settings.live else None
        self.initialized = True
        logger.info("MMF handler ready in %.1f s on %s in %s: %d classes, threshold %.2f, minimmf %s, torch %s",
                    time.perf_counter() - started, self.predictor.device, self.settings.precision,
                    len(self.predictor.classes), self.predictor.threshold, minimmf.__version__, torch.__version__)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        """Every request of the batch through the hooks, each answered on its own."""
        started = time.perf_counter()
        self.context = context
        output = self.handle_live(data) if self.live is not None else \
            self.postprocess(self.inference(self.preprocess(data)))
        self._add_time("HandlerTime", time.perf_counter() - started)
        return output

    def handle_live(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A batch of live streams' chunks (README, "Live streams"): each added to
        its stream, the windows they complete through the model together, and
        each answer with its stream's sequence id (and its end, when it ended)."""
        started, context = time.perf_counter(), self.context
        batch, chunks = PreparedBatch(size=len(data)), {}
        for index, request in enumerate(data):
            if self._header(index, "describe"):
                batch.describe.add(index)
            elif self._header(index, "explain"):
                batch.errors[index] = (501, "this model gives no explanations; send the request to /predictions")
            else:
                chunks[index] = self._chunk_request(index, request)
        live = self.live.prepare(chunks, batch)
        self._add_time("DecodeTime", live.decode_seconds)
        self._add_time("PreprocessTime", time.perf_counter() - started)
        _, probabilities = self.inference(batch)
        answers = self.live.answers(live, probabilities)
        for index, request in chunks.items():
            if request.stream_id:
                context.set_response_header(index, context.header_key_sequence_id, request.stream_id)
                if request.ends_stream:  # TorchServe frees the stream's place when the answer says so
                    context.set_response_header(index, context.header_key_sequence_end, request.stream_id)
        return [self.describe_handle() if index in batch.describe
                else self._error(index, *batch.errors[index]) if index in batch.errors
                else answers[index] for index in range(batch.size)]

    def preprocess(self, data: list[dict[str, Any]]) -> PreparedBatch:
        """Parse and decode each request; a failure is kept as that request's answer."""
        batch, decode_seconds, started = PreparedBatch(size=len(data)), 0.0, time.perf_counter()
        for index, request in enumerate(data):
            if self._header(index, "describe"):
                batch.describe.add(index)
                continue
            if self._header(index, "explain"):
                batch.errors[index] = (501, "this model gives no explanations; send the request to /predictions")
                continue
            with batch.catch(index):
                parsed = parse_request(request, self.settings, self._v2_header_length(index))
                samples = self.predictor.samples(parsed.video, parsed.script, parsed.segment_seconds)
                decode_seconds += samples.decode_seconds
                batch.add(index, parsed, samples)
        self._add_time("DecodeTime", decode_seconds)
        self._add_time("PreprocessTime", time.perf_counter() - started)
        return batch

    def inference(self, batch: PreparedBatch, *args: Any, **kwargs: Any) -> tuple[PreparedBatch, torch.Tensor | None]:
        """Probabilities of every sample of the usable requests (None when there are none)."""
        if not batch.samples:
            return batch, None
        started = time.perf_counter()
        probabilities = self.predictor.predict(batch.samples)
        self._add_time("ModelTime", time.perf_counter() - started)
        return batch, probabilities

    def postprocess(self, inference_output: tuple[PreparedBatch, torch.Tensor | None]) -> list[dict[str, Any] | bytes]:
        """One answer per request, in order: its error, or its JSON (v2-wrapped for v2 requests)."""
        batch, probabilities = inference_output
        return [self.describe_handle() if index in batch.describe
                else self._error(index, *batch.errors[index]) if index in batch.errors
                else self._answer(index, batch, probabilities) for index in range(batch.size)]

    def describe_handle(self) -> dict[str, Any]:
        """``GET /models/<name>?customized=true``: labels, settings, config summary, versions."""
        return {**self.predictor.describe(), "top_k": self.settings.top_k,
                "versions": {"minimmf": minimmf.__version__, "torch": torch.__version__,
                             "transformers": transformers.__version__}}

    def _answer(self, index: int, batch: PreparedBatch, probabilities: torch.Tensor) -> dict[str, Any] | bytes:
        rows = batch.rows[index]
        request, predictor = rows.request, self.predictor
        video = pool_clip_probabilities(probabilities[rows.clips.start:rows.clips.stop], self.settings.clip_pooling)
        answer = build_answer(video, predictor.classes, predictor.threshold, self.settings.top_k,
                              request.expected_labels)
        if rows.windows:
            answer.update(build_timeline(probabilities[rows.windows.start:rows.windows.stop], rows.spans,
                                         rows.window_seconds, predictor.classes, predictor.threshold,
                                         self.settings.top_k))
        if request.v2_id is None:
            return answer
        model = self.manifest["model"]
        envelope = (answer, request.v2_id or self.context.get_request_id(index), model.get("modelName", "MMF_model"),
                    model.get("modelVersion"))
        if not request.v2_binary_output:
            return v2_response(*envelope)
        body, header_length = v2_binary_response(*envelope)
        self.context.set_response_header(index, HEADER_LENGTH, str(header_length))
        self.context.set_response_content_type(index, "application/octet-stream")
        return body

    def _chunk_request(self, index: int, request: dict[str, Any]) -> ChunkRequest:
        """A live chunk, its sequence id, and whether TorchServe opened the sequence for it or the client ends it."""
        context = self.context
        ends = context.get_request_header(index, context.header_key_sequence_end)
        return ChunkRequest(context.get_sequence_id(index),
                            context.get_request_header(index, context.header_key_sequence_start) == "true",
                            bool(ends) and str(ends).lower() not in ("false", "0"), request)

    def _error(self, index: int, status: int, message: str) -> dict[str, Any]:
        if status < 500:  # the reason only: messages never quote the request's content
            logger.warning("request %s answered %d: %s", self.context.get_request_id(index), status, message)
        self.context.set_response_status(code=status, phrase=message[:200], idx=index)
        return {"code": status, "error": message}

    def _header(self, index: int, name: str) -> bool:
        return self.context.get_request_header(index, name) == "True"

    def _v2_header_length(self, index: int) -> str | None:
        """The request's Inference-Header-Content-Length (KServe v2 binary), as sent or lower-cased."""
        return self.context.get_request_header(index, HEADER_LENGTH) or \
            self.context.get_request_header(index, HEADER_LENGTH.lower())

    def _add_time(self, name: str, seconds: float) -> None:
        metrics = getattr(getattr(self, "context", None), "metrics", None)
        if metrics is not None:
            metrics.add_time(name, round(seconds * 1000, 2), None, "ms")
