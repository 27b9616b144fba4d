"""The KServe v2 binary tensor extension (minimmf/serving/kserve_v2.py): the
byte layout, requests and answers both ways, and malformed messages."""

from __future__ import annotations

import json

import pytest

from minimmf.serving import kserve_v2


def test_bytes_elements_are_length_prefixed_little_endian():
    assert kserve_v2.serialize_bytes_tensor([b"ab", b"", b"\xff"]) == \
        b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00\xff"
    assert kserve_v2.deserialize_bytes_tensor(b"\x02\x00\x00\x00ab\x00\x00\x00\x00") == [b"ab", b""]


def test_binary_request_round_trips():
    video = bytes(range(256)) * 3
    tensors = {"data": [video], "script": ["Une personne éternue.".encode()], "labels": [b'["Sneezing"]']}
    body, header_length = kserve_v2.encode_request(tensors, ["predictions"], request_id="clip-1")
    header = json.loads(body[:header_length])
    assert header["id"] == "clip-1"
    assert [item["name"] for item in header["inputs"]] == ["data", "script", "labels"]
    for item in header["inputs"]:
        assert "data" not in item and item["datatype"] == "BYTES" and item["shape"] == [1]
        assert item["parameters"]["binary_data_size"] == 4 + len(tensors[item["name"]][0])
    assert header["outputs"] == [{"name": "predictions", "parameters": {"binary_data": True}}]
    assert kserve_v2.wants_binary_output(header)
    assert len(body) == header_length + sum(4 + len(elements[0]) for elements in tensors.values())
    decoded = kserve_v2.decode_body(body, header_length)
    assert {item["name"]: item["data"] for item in decoded["inputs"]} == tensors


def test_binary_and_json_answers_decode_alike():
    answer = json.dumps({"labels": ["Holding a book"], "scores": {"Holding a book": 0.9}}).encode()
    body, header_length = kserve_v2.encode_binary({"model_name": "MMF_model"}, "outputs", {"predictions": [answer]})
    headers = {"inference-header-content-length": str(header_length)}
    binary = kserve_v2.decode_body(body, kserve_v2.header_length_of(headers))
    plain = kserve_v2.decode_body(json.dumps({"outputs": [
        {"name": "predictions", "datatype": "BYTES", "shape": [1], "data": [answer.decode()]}]}).encode(), None)
    assert json.loads(binary["outputs"][0]["data"][0]) == json.loads(plain["outputs"][0]["data"][0])


def binary_message(datatype: str, binary_data_size: object, tail: bytes) -> tuple[bytes, int]:
    """A binary v2 message with one tensor: (body, its JSON header length)."""
    header = json.dumps({"outputs": [{"name": "predictions", "datatype": datatype, "shape": [1],
                                      "parameters": {"binary_data_size": binary_data_size}}]}).encode()
    return header + tail, len(header)


@pytest.mark.parametrize(("body", "header_length", "phrase"), [
    (binary_message("BYTES", 6, b"\x02\x00\x00\x00ab")[0], None, "not valid JSON"),  # header not announced
    (b'{"outputs": []}', 99, "but the body has 15 bytes"),
    (b'{"outputs": []}', 0, "but the body has 15 bytes"),
    (*binary_message("BYTES", 9, b"\x05\x00\x00\x00ab"), "past the end of the body"),
    (*binary_message("BYTES", 6, b"\x05\x00\x00\x00ab"), "runs past"),
    (*binary_message("BYTES", 5, b"\x02\x00\x00\x00a"), "runs past"),
    (*binary_message("BYTES", 3, b"\x02\x00\x00"), "cut short"),
    (*binary_message("BYTES", 6, b"\x02\x00\x00\x00ab++"), "add up to 6 bytes, but 8 follow"),
    (*binary_message("BYTES", -1, b""), "must be a number of bytes"),
    (*binary_message("FP32", 4, b"\x00\x00\x80?"), "only BYTES"),
    (b"[1, 2]", None, "not a v2 message"),
])
def test_malformed_messages_are_refused_saying_where(body, header_length, phrase):
    with pytest.raises(kserve_v2.V2FormatError, match=phrase):
        kserve_v2.decode_body(body, header_length)


def test_header_length_must_be_a_number():
    with pytest.raises(kserve_v2.V2FormatError, match="must be a number of bytes"):
        kserve_v2.header_length_of({"Inference-Header-Content-Length": "twelve"})
    assert kserve_v2.header_length_of({"Content-Type": "application/json"}) is None
