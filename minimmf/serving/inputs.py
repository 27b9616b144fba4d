"""One request's inputs: the video, the script and the optional expected
labels, from a multipart form (the reference's fields) or a KServe v2 body.

Multipart fields: ``data`` (the video file's bytes), ``script`` (UTF-8
text), ``labels`` (a JSON list, or one label as text) or ``info`` (an
info.json ``{"script": ..., "action_labels": [...]}`` instead of the last
two). A KServe v2 body has ``inputs`` of those names: in JSON, the video as
base64 BYTES; or with the binary tensor extension (``kserve_v2.py``), raw.
``parse_chunk`` reads a live stream's chunk the same way. Anything
unusable raises ``BadRequest`` (answered with HTTP 400): every
field is bounded (``HandlerSettings``: bytes, characters, JSON size
and nesting depth, number of labels) and every parse failure is a
``BadRequest``, never an exception of the parser's own.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from minimmf.serving import kserve_v2
from minimmf.serving.settings import MAX_SEGMENT_SECONDS, HandlerSettings


class BadRequest(ValueError):
    """A request the handler cannot use; answered with HTTP 400 and this message."""


@dataclass(frozen=True)
class ParsedRequest:
    video: bytes
    script: str
    expected_labels: list[str] | None
    v2_id: str | None = None  # set for KServe v2 requests: answered in the v2 format
    v2_binary_output: bool = False  # the v2 request asked for its answer in binary
    segment_seconds: float | None = None  # a timeline's window length asked for (None: the setting's)


MAX_V2_INPUTS = 16
MAX_V2_ELEMENTS = 16  # per BYTES tensor; the handler reads the first
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]")


def parse_request(request: dict[str, Any], settings: HandlerSettings,
                  v2_header_length: str | None = None) -> ParsedRequest:
    """The video, script and optional labels of one request as TorchServe
    hands it over; ``v2_header_length`` is its Inference-Header-Content-Length
    header, if any (a v2 binary request)."""
    v2_fields = kserve_v2_fields(request, settings, v2_header_length)
    fields = v2_fields if v2_fields is not None else request
    info = _info(fields["info"], settings) if fields.get("info") is not None else {}
    video = _video(fields.get("data", fields.get("video")), settings.max_video_bytes)
    script = fields.get("script", info.get("script"))
    if script is None:
        raise BadRequest("no script: send the video's script in the form field 'script' (or an 'info' JSON)")
    script = _script(script, settings)
    labels = fields.get("labels", info.get("action_labels", info.get("labels")))
    segment_seconds = fields.get("segment_seconds")
    return ParsedRequest(video, script, _labels(labels, settings) if labels is not None else None,
                         fields.get("v2_id"), fields.get("v2_binary_output", False),
                         _segment_seconds(segment_seconds) if segment_seconds is not None else None)


@dataclass(frozen=True)
class ParsedChunk:
    """One request to the live model: a chunk of a stream and its script, either may be absent."""

    video: bytes | None  # None: a request that only ends the stream
    script: str | None  # None: the stream's script so far
    chunk: int | None  # the chunk's number in its stream, as the client counts (0: the first)
    expected_labels: list[str] | None = None  # None: the stream's so far


MAX_CHUNK_NUMBER = 10**12


def parse_chunk(request: dict[str, Any], settings: HandlerSettings, ends_stream: bool = False) -> ParsedChunk:
    """A live stream's chunk as TorchServe hands it over: a multipart form with
    ``data`` (the chunk's bytes; optional in a request that ends the stream),
    and optionally ``script`` and ``labels`` (or ``info``) and ``chunk`` (its
    number). The limits of ``parse_request`` apply."""
    if request.get("body"):
        raise BadRequest("send a live stream's chunk as a multipart form (its bytes in the field 'data', with "
                         "'script'); the live model takes no other body")
    if request.get("segment_seconds") is not None:
        raise BadRequest("the live model answers windows of handler.live.window_seconds; segment_seconds is for "
                         "whole videos (send them to the model without sequence batching)")
    info = _info(request["info"], settings) if request.get("info") is not None else {}
    value = request.get("data", request.get("video"))
    if value is None and not ends_stream:
        raise BadRequest("no chunk: send the chunk's bytes in the form field 'data' (a request without one must "
                         "end the stream: header ts_request_sequence_end)")
    script = request.get("script", info.get("script"))
    labels = request.get("labels", info.get("action_labels", info.get("labels")))
    number = request.get("chunk")
    return ParsedChunk(_video(value, settings.max_video_bytes) if value is not None else None,
                       _script(script, settings) if script is not None else None,
                       _chunk_number(number) if number is not None else None,
                       _labels(labels, settings) if labels is not None else None)


def _script(value: Any, settings: HandlerSettings) -> str:
    script = _text(value, "field 'script'")
    if len(script) > settings.max_script_chars:
        raise BadRequest(f"the script has {len(script):,} characters, over the limit of "
                         f"{settings.max_script_chars:,} (handler.max_script_chars in model-config.yaml)")
    return script


def _chunk_number(value: Any) -> int:
    text = _text(value, "field 'chunk'").strip()[:40] if isinstance(value, (bytes, bytearray, str)) else value
    if isinstance(text, str):
        if not text.isdigit():
            raise BadRequest(f"field 'chunk' must be the chunk's number in its stream (0, 1, ...), not {text!r}")
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or not 0 <= text < MAX_CHUNK_NUMBER:
        raise BadRequest(f"field 'chunk' must be the chunk's number in its stream (0, 1, ...), not {str(text)[:40]}")
    return text


def parse_json(value: bytes | bytearray | str, what: str, max_bytes: int, max_depth: int) -> Any:
    """JSON text (``what``: "field 'info'", ...) -> a value, refusing text over
    ``max_bytes`` or nested deeper than ``max_depth``."""
    size = len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    if size > max_bytes:
        raise BadRequest(f"{what} is {size:,} bytes, over the limit of {max_bytes:,} "
                         "(handler.max_json_bytes in model-config.yaml)")
    text = _text(value, what)
    if json_depth(text) > max_depth:
        raise BadRequest(f"{what} nests JSON deeper than {max_depth} levels "
                         "(handler.max_json_depth in model-config.yaml)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadRequest(f"{what} is not valid JSON ({error})") from None


def json_depth(text: str) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _NOT_A_BRACKET.sub("", _JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def kserve_v2_fields(request: dict[str, Any], settings: HandlerSettings,
                     header_length: str | None = None) -> dict[str, Any] | None:
    """The fields of a KServe v2 inference request (``{"inputs": [{"name",
    "datatype", "data"}, ...]}``: JSON with the video as base64 BYTES, or
    binary with ``header_length``), or None for any other request."""
    body = request.get("body")  # a request that is not a multipart form
    if body is None and isinstance(request.get("data"), dict):  # a form part TorchServe decoded as JSON
        body = request["data"]
    if header_length is not None and isinstance(body, (bytes, bytearray)):
        message = _v2_binary_message(body, header_length, settings)
    elif isinstance(body, (bytes, bytearray)):
        if body[:1] != b"{":
            return None
        # the base64 video makes the body a third larger than the video
        message = parse_json(body, "the KServe v2 body", settings.max_video_bytes * 4 // 3 + settings.max_json_bytes,
                             settings.max_json_depth)
    else:
        message = body
    if not isinstance(message, dict) or not isinstance(message.get("inputs"), list):
        if header_length is not None:
            raise BadRequest("a KServe v2 binary request needs a JSON header with a list of 'inputs'")
        return None
    return _v2_inputs(message)


def _v2_binary_message(body: bytes | bytearray, header_length: str, settings: HandlerSettings) -> dict[str, Any]:
    try:
        json_header, binary = kserve_v2.split_binary(body, kserve_v2.parse_header_length(header_length))
        message = parse_json(json_header, "the KServe v2 JSON header", settings.max_json_bytes,
                             settings.max_json_depth)
        if not isinstance(message, dict):
            raise BadRequest("the KServe v2 JSON header must be an object with a list of 'inputs'")
        return kserve_v2.attach_binary_data(message, binary, MAX_V2_ELEMENTS)
    except kserve_v2.V2FormatError as error:
        raise BadRequest(f"KServe v2 binary request: {error}") from None


def _v2_inputs(message: dict[str, Any]) -> dict[str, Any]:
    """The handler's fields from a v2 message's inputs (the first element of each)."""
    if len(message["inputs"]) > MAX_V2_INPUTS:
        raise BadRequest(f"a KServe v2 request may have at most {MAX_V2_INPUTS} inputs, not {len(message['inputs'])}")
    fields: dict[str, Any] = {"v2_id": str(message.get("id") or "")[:256],
                              "v2_binary_output": kserve_v2.wants_binary_output(message)}
    for item in message["inputs"]:
        if not isinstance(item, dict) or "name" not in item:
            raise BadRequest("each KServe v2 input needs a 'name', a 'datatype' and 'data'")
        values = item.get("data")
        value = values[0] if isinstance(values, list) and values else values
        if item["name"] in ("data", "video") and isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise BadRequest("KServe v2 input 'data' must be the base64 of the video file (or binary data "
                                 "with the binary tensor extension)") from None
        fields[item["name"]] = value
    return fields


def _video(value: Any, max_bytes: int) -> bytes:
    if value is None:
        raise BadRequest("no video: send the video file's bytes in the form field 'data'")
    if isinstance(value, str):
        raise BadRequest("field 'data' must be the video file's bytes, not text")
    if not isinstance(value, (bytes, bytearray)):
        raise BadRequest(f"field 'data' must be the video file's bytes, got {type(value).__name__}")
    if len(value) == 0:
        raise BadRequest("the video is empty (0 bytes)")
    if len(value) > max_bytes:
        raise BadRequest(f"the video is {len(value):,} bytes, over the limit of {max_bytes:,} "
                         "(handler.max_video_bytes in model-config.yaml)")
    return bytes(value)


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{what} is not UTF-8 text") from None
    raise BadRequest(f"{what} must be text, got {type(value).__name__}")


def _labels(value: Any, settings: HandlerSettings) -> list[str]:
    if isinstance(value, (bytes, bytearray, str)):
        text = _text(value, "field 'labels'").strip()
        if not text.startswith(("[", "{", '"')):
            value = text  # one plain label
        else:
            value = parse_json(text, "field 'labels'", settings.max_json_bytes, settings.max_json_depth)
    if isinstance(value, str):
        value = [value] if value else []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest("field 'labels' must be a JSON list of action names")
    if len(value) > settings.max_labels:
        raise BadRequest(f"field 'labels' lists {len(value):,} labels, over the limit of {settings.max_labels:,} "
                         "(handler.max_labels in model-config.yaml)")
    if sum(len(item) for item in value) > settings.max_json_bytes:
        raise BadRequest(f"field 'labels' is over the limit of {settings.max_json_bytes:,} characters "
                         "(handler.max_json_bytes in model-config.yaml)")
    return value


def _segment_seconds(value: Any) -> float:
    """A timeline window length: a number of seconds > 0 (as text or a number)."""
    if isinstance(value, (bytes, bytearray, str)):
        text = _text(value, "field 'segment_seconds'").strip()[:40]
        try:
            value = float(text)
        except ValueError:
            raise BadRequest(f"field 'segment_seconds' must be a number of seconds, not {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            not 0 < value <= MAX_SEGMENT_SECONDS:
        raise BadRequest(f"field 'segment_seconds' must be a number of seconds > 0 and at most "
                         f"{MAX_SEGMENT_SECONDS:g}, not {str(value)[:40]}")
    return float(value)


def _info(value: Any, settings: HandlerSettings) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray, str)):
        value = parse_json(value, "field 'info'", settings.max_json_bytes, settings.max_json_depth)
    if not isinstance(value, dict):
        raise BadRequest('field \'info\' must be a JSON object like {"script": ..., "action_labels": [...]}')
    return value
