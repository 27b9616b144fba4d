"""From per-class probabilities to answers: the JSON answer of a request
(its labels by ``minimmf.modules.predictions``, the rule evaluation uses
too), its timeline, and its KServe v2 envelope."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from minimmf.modules.predictions import labels_above
from minimmf.serving import kserve_v2
from minimmf.serving.kserve_v2 import ANSWER_OUTPUT


def top_scores(probabilities: torch.Tensor, classes: Sequence[str], top_k: int) -> dict[str, float]:
    """The ``top_k`` highest probabilities by class name (0: all), highest first."""
    order = torch.argsort(probabilities, descending=True, stable=True).tolist()
    return {classes[i]: round(float(probabilities[i]), 6) for i in order[: top_k or len(classes)]}


def build_answer(probabilities: torch.Tensor, classes: Sequence[str], threshold: float, top_k: int,
                 expected: list[str] | None) -> dict[str, Any]:
    """One request's JSON answer: ``labels``, ``scores`` (the ``top_k`` highest,
    0 = all), ``threshold``, and with expected labels ``found``/``missed``/``unknown_labels``."""
    labels = labels_above(probabilities, classes, threshold)
    answer: dict[str, Any] = {
        "labels": labels,
        "scores": top_scores(probabilities, classes, top_k),
        "threshold": threshold,
    }
    if expected is not None:
        known = set(classes)
        answer["expected_labels"] = expected
        answer["found"] = [label for label in expected if label in labels]
        answer["missed"] = [label for label in expected if label in known and label not in labels]
        answer["unknown_labels"] = [label for label in expected if label not in known]
    return answer


def build_timeline(probabilities: torch.Tensor, spans: list[tuple[float, float]], window_seconds: float,
                   classes: Sequence[str], threshold: float, top_k: int) -> dict[str, Any]:
    """The ``timeline`` of an answer: for each window, in order, its start and
    end (seconds), its labels and its scores (``top_k`` as the video's), with
    the window length it used (``segment_seconds``)."""
    return {
        "segment_seconds": round(window_seconds, 3),
        "timeline": [{"start": round(start, 3), "end": round(end, 3),
                      "labels": labels_above(row, classes, threshold), "scores": top_scores(row, classes, top_k)}
                     for row, (start, end) in zip(probabilities, spans, strict=True)],
    }


def v2_response(answer: dict[str, Any], request_id: str | None, model_name: str,
                model_version: str | None) -> dict[str, Any]:
    """A KServe v2 inference response whose one output, ``predictions``, is the JSON answer."""
    return {
        "id": request_id,
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [{"name": ANSWER_OUTPUT, "datatype": "BYTES", "shape": [1], "data": [json.dumps(answer)]}],
    }


def v2_binary_response(answer: dict[str, Any], request_id: str | None, model_name: str,
                       model_version: str | None) -> tuple[bytes, int]:
    """The same response with the binary tensor extension: (body, JSON header length)."""
    header = {"id": request_id, "model_name": model_name, "model_version": model_version}
    return kserve_v2.encode_binary(header, "outputs", {ANSWER_OUTPUT: [json.dumps(answer).encode("utf-8")]})
