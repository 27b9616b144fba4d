"""One request's inputs: the video, the script and the optional expected
labels, from a multipart form (the reference's fields) or a KServe v2 body.

Multipart fields: ``data`` (the video file's bytes), ``script`` (UTF-8
text), ``labels`` (a JSON list, or one label as text) or ``info`` (an
info.json ``{"script": ..., "action_labels": [...]}`` instead of the last
two). A KServe v2 body has ``inputs`` of those names, the video as base64
BYTES. Anything unusable raises ``BadRequest`` (answered with HTTP 400):
every field is bounded (``HandlerSettings``: bytes, characters, JSON size
and nesting depth, number of labels) and every parse failure is a
``BadRequest``, never an exception of the parser's own.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from minimmf.serving.settings import HandlerSettings


class BadRequest(ValueError):
    """A request the handler cannot use; answered with HTTP 400 and this message."""


@dataclass(frozen=True)
class ParsedRequest:
    video: bytes
    script: str
    expected_labels: list[str] | None
    v2_id: str | None = None  # set for KServe v2 requests: answered in the v2 format


MAX_V2_INPUTS = 16
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]")


def parse_request(request: dict[str, Any], settings: HandlerSettings) -> ParsedRequest:
    """The video, script and optional labels of one request as TorchServe hands it over."""
    v2_fields = kserve_v2_fields(request, settings)
    fields = v2_fields if v2_fields is not None else request
    info = _info(fields["info"], settings) if fields.get("info") is not None else {}
    video = _video(fields.get("data", fields.get("video")), settings.max_video_bytes)
    script = fields.get("script", info.get("script"))
    if script is None:
        raise BadRequest("no script: send the video's script in the form field 'script' (or an 'info' JSON)")
    script = _text(script, "script")
    if len(script) > settings.max_script_chars:
        raise BadRequest(f"the script has {len(script):,} characters, over the limit of "
                         f"{settings.max_script_chars:,} (handler.max_script_chars in model-config.yaml)")
    labels = fields.get("labels", info.get("action_labels", info.get("labels")))
    return ParsedRequest(video, script, _labels(labels, settings) if labels is not None else None,
                         fields.get("v2_id"))


def parse_json(value: bytes | bytearray | str, name: str, max_bytes: int, max_depth: int) -> Any:
    """JSON text -> a value, refusing text over ``max_bytes`` or nested deeper than ``max_depth``."""
    text = _text(value, name)
    size = len(text.encode("utf-8")) if isinstance(value, str) else len(value)
    if size > max_bytes:
        raise BadRequest(f"field '{name}' is {size:,} bytes, over the limit of {max_bytes:,} "
                         "(handler.max_json_bytes in model-config.yaml)")
    if json_depth(text) > max_depth:
        raise BadRequest(f"field '{name}' nests JSON deeper than {max_depth} levels "
                         "(handler.max_json_depth in model-config.yaml)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadRequest(f"field '{name}' is not valid JSON ({error})") from None


def json_depth(text: str) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _NOT_A_BRACKET.sub("", _JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def kserve_v2_fields(request: dict[str, Any], settings: HandlerSettings) -> dict[str, Any] | None:
    """The fields of a KServe v2 inference request (``{"inputs": [{"name",
    "datatype", "data"}, ...]}``, the video as base64 BYTES), or None for any
    other request."""
    body = request.get("body")  # a request that is not a multipart form
    if body is None and isinstance(request.get("data"), dict):  # a form part TorchServe decoded as JSON
        body = request["data"]
    if isinstance(body, (bytes, bytearray)):
        if body[:1] != b"{":
            return None
        # the base64 video makes the body a third larger than the video
        max_bytes = settings.max_video_bytes * 4 // 3 + settings.max_json_bytes
        body = parse_json(body, "body", max_bytes, settings.max_json_depth)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return None
    if len(body["inputs"]) > MAX_V2_INPUTS:
        raise BadRequest(f"a KServe v2 request may have at most {MAX_V2_INPUTS} inputs, not {len(body['inputs'])}")
    fields: dict[str, Any] = {"v2_id": str(body.get("id") or "")[:256]}
    for item in body["inputs"]:
        if not isinstance(item, dict) or "name" not in item:
            raise BadRequest("each KServe v2 input needs a 'name', a 'datatype' and 'data'")
        values = item.get("data")
        value = values[0] if isinstance(values, list) and values else values
        if item["name"] in ("data", "video") and isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise BadRequest("KServe v2 input 'data' must be the base64 of the video file") from None
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


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"field '{name}' is not UTF-8 text") from None
    raise BadRequest(f"field '{name}' must be text, got {type(value).__name__}")


def _labels(value: Any, settings: HandlerSettings) -> list[str]:
    if isinstance(value, (bytes, bytearray, str)):
        text = _text(value, "labels").strip()
        if not text.startswith(("[", "{", '"')):
            value = text  # one plain label
        else:
            value = parse_json(text, "labels", settings.max_json_bytes, settings.max_json_depth)
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


def _info(value: Any, settings: HandlerSettings) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray, str)):
        value = parse_json(value, "info", settings.max_json_bytes, settings.max_json_depth)
    if not isinstance(value, dict):
        raise BadRequest('field \'info\' must be a JSON object like {"script": ..., "action_labels": [...]}')
    return value
