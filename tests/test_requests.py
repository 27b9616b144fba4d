"""parse_request on its own (no model): what each field becomes, and the
400 every malformed or oversized field gets, with the setting it names."""

from __future__ import annotations

import base64
import json

import pytest

from minimmf.serving import kserve_v2
from minimmf.serving.inputs import BadRequest, json_depth, parse_json, parse_request
from minimmf.serving.settings import HandlerSettings

SETTINGS = HandlerSettings(max_video_bytes=1000)
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"v" * 100  # parse_request never decodes


def test_multipart_fields():
    parsed = parse_request({"data": bytearray(VIDEO), "script": bytearray("un café".encode()),
                            "labels": bytearray(b'["Opening a door"]'), "segment_seconds": bytearray(b"0.5")},
                           SETTINGS)
    assert parsed.video == VIDEO and parsed.script == "un café"
    assert parsed.expected_labels == ["Opening a door"] and parsed.segment_seconds == 0.5
    assert parsed.v2_id is None and not parsed.v2_binary_output


def test_info_json_stands_for_script_and_labels():
    info = json.dumps({"script": "A person sits.", "action_labels": ["Sitting in a chair"]}).encode()
    parsed = parse_request({"data": VIDEO, "info": bytearray(info)}, SETTINGS)
    assert parsed.script == "A person sits." and parsed.expected_labels == ["Sitting in a chair"]


@pytest.mark.parametrize("labels, expected", [
    (b"Opening a door", ["Opening a door"]),  # one plain label
    (b'"Opening a door"', ["Opening a door"]),
    (b"[]", []),
    (b"", []),
])
def test_label_forms(labels, expected):
    assert parse_request({"data": VIDEO, "script": "s", "labels": labels}, SETTINGS).expected_labels == expected


@pytest.mark.parametrize("request_fields, message", [
    ({"script": b"s"}, "no video: send the video file's bytes in the form field 'data'"),
    ({"data": b"", "script": b"s"}, "the video is empty"),
    ({"data": "text", "script": b"s"}, "must be the video file's bytes, not text"),
    ({"data": b"x" * 1001, "script": b"s"}, "(handler.max_video_bytes in model-config.yaml)"),
    ({"data": VIDEO}, "no script"),
    ({"data": VIDEO, "script": b"\xff\xfe"}, "field 'script' is not UTF-8 text"),
    ({"data": VIDEO, "script": "x" * 20_001}, "handler.max_script_chars"),
    ({"data": VIDEO, "script": "s", "labels": b'{"a": 1}'}, "JSON list of action names"),
    ({"data": VIDEO, "script": "s", "labels": b"[1]"}, "JSON list of action names"),
    ({"data": VIDEO, "script": "s", "labels": json.dumps(["a"] * 201)}, "handler.max_labels"),
    ({"data": VIDEO, "info": b"{not json"}, "field 'info' is not valid JSON"),
    ({"data": VIDEO, "info": b"[1]"}, "field 'info' must be a JSON object"),
    ({"data": VIDEO, "info": b"[" * 17 + b"]" * 17}, "handler.max_json_depth"),
    ({"data": VIDEO, "info": b" " * (256 * 1024 + 1)}, "handler.max_json_bytes"),
    ({"data": VIDEO, "script": "s", "segment_seconds": b"soon"}, "must be a number of seconds"),
    ({"data": VIDEO, "script": "s", "segment_seconds": b"nan"}, "must be a number of seconds > 0"),
    ({"data": VIDEO, "script": "s", "segment_seconds": b"0"}, "must be a number of seconds > 0"),
    ({"data": VIDEO, "script": "s", "segment_seconds": True}, "must be a number of seconds > 0"),
])
def test_bad_fields_are_bad_requests(request_fields, message):
    with pytest.raises(BadRequest) as error:
        parse_request(request_fields, SETTINGS)
    assert message in str(error.value)


@pytest.mark.parametrize("text, depth", [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[[", "]]"]', 1), ('{"a\\"[": 1}', 1),
])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text) == depth


def test_parse_json_bounds_before_parsing():
    with pytest.raises(BadRequest, match="over the limit of 10"):
        parse_json("[" * 11, "field 'x'", max_bytes=10, max_depth=100)
    assert parse_json(b'{"a": [1]}', "field 'x'", max_bytes=100, max_depth=2) == {"a": [1]}


def test_kserve_v2_json_body():
    body = {"id": "r1", "inputs": [
        {"name": "data", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(VIDEO).decode()]},
        {"name": "script", "datatype": "BYTES", "shape": [1], "data": ["A person sits."]},
        {"name": "labels", "datatype": "BYTES", "shape": [1], "data": ['["Sitting in a chair"]']}]}
    parsed = parse_request({"body": bytearray(json.dumps(body).encode())}, SETTINGS)
    assert (parsed.video, parsed.script, parsed.expected_labels) == (VIDEO, "A person sits.", ["Sitting in a chair"])
    assert parsed.v2_id == "r1" and not parsed.v2_binary_output


def test_kserve_v2_binary_body():
    body, header_length = kserve_v2.encode_request({"data": [VIDEO], "script": [b"s"]}, ["predictions"], "b1")
    parsed = parse_request({"body": bytearray(body)}, SETTINGS, str(header_length))
    assert parsed.video == VIDEO and parsed.script == "s" and parsed.v2_id == "b1" and parsed.v2_binary_output


@pytest.mark.parametrize("body, header_length, message", [
    (json.dumps({"inputs": [{"name": "data", "data": ["%%%"]}]}).encode(), None, "must be the base64 of the video"),
    (json.dumps({"inputs": [{"data": []}]}).encode(), None, "needs a 'name'"),
    (json.dumps({"inputs": [{"name": f"x{i}"} for i in range(17)]}).encode(), None, "at most 16 inputs"),
    (b'{"inputs": []}', "999", "KServe v2 binary request"),
    (b'[1, 2]', "6", "JSON header must be an object"),
])
def test_malformed_kserve_v2_bodies(body, header_length, message):
    with pytest.raises(BadRequest) as error:
        parse_request({"body": bytearray(body)}, SETTINGS, header_length)
    assert message in str(error.value)


def test_a_body_that_is_not_v2_is_a_form_without_a_video():
    with pytest.raises(BadRequest, match="no video"):
        parse_request({"body": bytearray(b"plain bytes")}, SETTINGS)
