"""From probabilities to the JSON answer, its timeline and its KServe v2
envelope; and the shared prediction rules (threshold, clip pooling)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minimmf.modules.predictions import labels_above, pool_clip_logits, pool_clip_probabilities, predicted
from minimmf.serving import kserve_v2
from minimmf.serving.answers import build_answer, build_timeline, top_scores, v2_binary_response, v2_response

CLASSES = ["Closing a door", "Holding a book", "Opening a door", "Sitting in a chair"]


def test_labels_reach_the_threshold_inclusively_most_probable_first():
    probabilities = torch.tensor([0.5, 0.9, 0.49999, 0.7])
    assert labels_above(probabilities, CLASSES, 0.5) == ["Holding a book", "Sitting in a chair", "Closing a door"]
    assert predicted(probabilities, 0.5).tolist() == [True, True, False, True]


def test_ties_keep_the_class_order():
    assert labels_above(torch.tensor([0.6, 0.6, 0.1, 0.6]), CLASSES, 0.5) == [CLASSES[0], CLASSES[1], CLASSES[3]]


def test_top_scores():
    scores = top_scores(torch.tensor([0.1, 0.4, 0.3, 0.2]), CLASSES, 2)
    assert list(scores) == ["Holding a book", "Opening a door"]
    assert len(top_scores(torch.tensor([0.1, 0.4, 0.3, 0.2]), CLASSES, 0)) == 4


def test_answer_with_expected_labels():
    answer = build_answer(torch.tensor([0.1, 0.9, 0.2, 0.8]), CLASSES, 0.5, 0,
                          ["Holding a book", "Opening a door", "Juggling"])
    assert answer["labels"] == ["Holding a book", "Sitting in a chair"] and answer["threshold"] == 0.5
    assert answer["found"] == ["Holding a book"] and answer["missed"] == ["Opening a door"]
    assert answer["unknown_labels"] == ["Juggling"]
    assert set(build_answer(torch.tensor([0.1, 0.9, 0.2, 0.8]), CLASSES, 0.5, 0, None)) == \
        {"labels", "scores", "threshold"}


def test_timeline_windows():
    rows = torch.tensor([[0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.9, 0.1]])
    timeline = build_timeline(rows, [(0.0, 1.0), (1.0, 1.5)], 1.0, CLASSES, 0.5, 1)
    assert timeline["segment_seconds"] == 1.0
    assert [(w["start"], w["end"], w["labels"]) for w in timeline["timeline"]] == \
        [(0.0, 1.0, ["Closing a door"]), (1.0, 1.5, ["Opening a door"])]
    assert all(len(w["scores"]) == 1 for w in timeline["timeline"])


def test_v2_envelopes_carry_the_same_answer():
    answer = {"labels": ["Holding a book"], "scores": {"Holding a book": 0.9}, "threshold": 0.5}
    response = v2_response(answer, "r1", "MMF_model", "1.0")
    assert response["outputs"][0]["name"] == kserve_v2.ANSWER_OUTPUT == "predictions"
    assert json.loads(response["outputs"][0]["data"][0]) == answer
    body, header_length = v2_binary_response(answer, "r1", "MMF_model", "1.0")
    decoded = kserve_v2.decode_body(body, header_length)
    assert decoded["id"] == "r1" and decoded["model_name"] == "MMF_model"
    assert json.loads(decoded["outputs"][0]["data"][0]) == answer


def test_clip_pooling_of_probabilities_and_of_logits_agree():
    logits = torch.tensor([[2.0, -1.0, 30.0], [0.5, 3.0, 40.0]])
    for pooling in ("max", "mean"):
        pooled = pool_clip_probabilities(torch.sigmoid(logits.double()), pooling)
        assert torch.sigmoid(pool_clip_logits(logits, pooling).double()) == pytest.approx(pooled, abs=1e-12)
    # max of logits keeps the order saturated probabilities lose (sigmoid(30), sigmoid(40) are both 1.0 in float32)
    assert pool_clip_logits(logits, "max").tolist() == [2.0, 3.0, 40.0]
    assert not math.isinf(float(pool_clip_logits(logits, "mean")[2]))
    assert pool_clip_logits(logits[:1], "mean").tolist() == logits[0].tolist()
    with pytest.raises(ValueError, match="use max or mean"):
        pool_clip_probabilities(logits, "median")
