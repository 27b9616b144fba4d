"""The KServe v2 (open inference protocol) binary tensor extension, both
ways: how ``request.py`` sends and reads it and how the handler reads and
answers it.

A binary message is a JSON header followed by raw tensor data. The header's
length travels in the HTTP header ``Inference-Header-Content-Length``; each
tensor sent in binary has ``parameters.binary_data_size`` (its bytes after
the header, in the order the tensors are listed) and no ``data``. A BYTES
tensor's binary form is each element as a 4-byte little-endian length, then
its bytes. Outputs are asked for in binary with ``parameters.binary_data``
on an output, or ``parameters.binary_data_output`` on the request.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from typing import Any

HEADER_LENGTH = "Inference-Header-Content-Length"
# the one output of the handler's v2 answers: the JSON answer, as BYTES
ANSWER_OUTPUT = "predictions"


class V2FormatError(ValueError):
    """A v2 message that does not follow the protocol; the message says where."""


def serialize_bytes_tensor(elements: list[bytes]) -> bytes:
    """A BYTES tensor's binary form: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def deserialize_bytes_tensor(blob: bytes | memoryview, max_elements: int | None = None) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(blob):
        if max_elements is not None and len(elements) == max_elements:
            raise V2FormatError(f"a BYTES tensor has more than {max_elements} elements")
        if offset + 4 > len(blob):
            raise V2FormatError("a BYTES element's 4-byte length is cut short")
        (length,) = struct.unpack_from("<I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise V2FormatError(f"a BYTES element of {length} bytes runs past the tensor's data")
        elements.append(bytes(blob[offset:offset + length]))
        offset += length
    return elements


def encode_binary(header: dict[str, Any], key: str, tensors: Mapping[str, list[bytes]]) -> tuple[bytes, int]:
    """``header`` with the BYTES ``tensors`` (name -> elements) added under
    ``key`` ("inputs" or "outputs") in binary: (body, JSON header length)."""
    blobs = {name: serialize_bytes_tensor(elements) for name, elements in tensors.items()}
    header = {**header, key: [{"name": name, "datatype": "BYTES", "shape": [len(tensors[name])],
                               "parameters": {"binary_data_size": len(blob)}} for name, blob in blobs.items()]}
    json_header = json.dumps(header).encode("utf-8")
    return json_header + b"".join(blobs.values()), len(json_header)


def encode_request(inputs: Mapping[str, list[bytes]], outputs: list[str],
                   request_id: str | None = None) -> tuple[bytes, int]:
    """A v2 inference request with binary BYTES ``inputs`` that asks for ``outputs`` in binary too."""
    header: dict[str, Any] = {"outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]}
    if request_id is not None:
        header["id"] = request_id
    return encode_binary(header, "inputs", inputs)


def handler_inputs(video: bytes, script: str, labels: list[str] | None = None,
                   segment_seconds: float | None = None) -> dict[str, list[bytes]]:
    """The v2 inputs the handler reads: data (the video), script, labels (a
    JSON list as text), segment_seconds (a number as text)."""
    tensors = {"data": [video], "script": [script.encode("utf-8")]}
    if labels is not None:
        tensors["labels"] = [json.dumps(labels).encode("utf-8")]
    if segment_seconds is not None:
        tensors["segment_seconds"] = [str(segment_seconds).encode("ascii")]
    return tensors


def encode_json_request(inputs: Mapping[str, list[bytes]], request_id: str | None = None) -> dict[str, Any]:
    """A v2 JSON inference request: BYTES elements as text, the video (``data``) base64-encoded."""
    def as_text(name: str, element: bytes) -> str:
        return base64.b64encode(element).decode("ascii") if name == "data" else element.decode("utf-8")

    message: dict[str, Any] = {"inputs": [
        {"name": name, "datatype": "BYTES", "shape": [len(elements)],
         "data": [as_text(name, element) for element in elements]} for name, elements in inputs.items()]}
    if request_id is not None:
        message["id"] = request_id
    return message


def header_length_of(headers: Mapping[str, str]) -> int | None:
    """The ``Inference-Header-Content-Length`` of HTTP headers (any case), or None."""
    value = next((value for name, value in headers.items() if name.lower() == HEADER_LENGTH.lower()), None)
    return parse_header_length(value) if value is not None else None


def parse_header_length(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise V2FormatError(f"{HEADER_LENGTH} must be a number of bytes, not {value[:40]!r}") from None


def split_binary(body: bytes | memoryview, header_length: int) -> tuple[bytes, memoryview]:
    """(JSON header bytes, the binary data after it)."""
    if not 0 < header_length <= len(body):
        raise V2FormatError(f"{HEADER_LENGTH} is {header_length}, but the body has {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:header_length]), view[header_length:]


def attach_binary_data(message: dict[str, Any], binary: memoryview, max_elements: int | None = None) -> dict[str, Any]:
    """Fill in the ``data`` of every tensor of a decoded JSON header that has
    a ``binary_data_size``, from ``binary``; the sizes must add up to it."""
    tensors = (message.get("inputs") or []) + (message.get("outputs") or [])
    if not isinstance(tensors, list) or not all(isinstance(tensor, dict) for tensor in tensors):
        raise V2FormatError("the JSON header is not a v2 message (an object with lists of 'inputs' or 'outputs')")
    offset = 0
    for tensor in tensors:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        name = tensor.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise V2FormatError(f"tensor {name!r}: binary_data_size must be a number of bytes, not {size!r}")
        if tensor.get("datatype") != "BYTES":
            raise V2FormatError(f"tensor {name!r} is {tensor.get('datatype')}: only BYTES tensors are read")
        if offset + size > len(binary):
            raise V2FormatError(f"tensor {name!r} says {size} binary bytes, past the end of the body")
        tensor["data"] = deserialize_bytes_tensor(binary[offset:offset + size], max_elements)
        offset += size
    if offset != len(binary):
        raise V2FormatError(f"the tensors' binary_data_size add up to {offset} bytes, but {len(binary)} follow "
                            "the JSON header")
    return message


def decode_body(body: bytes, header_length: int | None) -> dict[str, Any]:
    """A whole v2 message (JSON, or binary when ``header_length`` is given),
    its binary tensors' ``data`` filled in (BYTES elements as bytes)."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        header, binary = split_binary(body, header_length)
    try:
        message = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise V2FormatError(f"the JSON header is not valid JSON ({error})") from None
    if not isinstance(message, dict):
        raise V2FormatError("the JSON header is not a v2 message (an object with lists of 'inputs' or 'outputs')")
    return attach_binary_data(message, binary)


def wants_binary_output(message: dict[str, Any]) -> bool:
    """Whether a request asks for its outputs in binary."""
    if (message.get("parameters") or {}).get("binary_data_output") is True:
        return True
    outputs = message.get("outputs") or []
    return any(isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") is True for o in outputs)
