"""Send a video and its info.json to the served MMF model.

    python request.py                                   # demo.mp4 + demo.info.json
    python request.py --video clip.mp4 --info clip.info.json --model-name MMF_model
    python request.py --protocol v2-json                # the open inference (KServe v2) protocol

The info.json holds the video's script and, optionally, its expected
labels: {"script": "...", "action_labels": ["...", ...]}. The server's JSON
answer is written to response.txt and its labels are printed.

TorchServe's token authorization is on: the inference key is read from
key_file.json (written where TorchServe was started) unless --token is given;
--no-token sends none, for a server with token authorization off. Keys
expire (config.properties' token_expiration_min) and change at every restart:
README.md, "Keys and their expiry", shows how to get a fresh one.

Protocols: "multipart" (default) posts the form fields data, script and
labels to /predictions/<model>; "v2-json" posts a KServe v2 JSON body to
/v2/models/<model>/infer (the video base64-encoded); "v2-binary" sends the
same tensors with the KServe/Triton binary tensor extension (raw bytes after
a JSON header) and asks for the answer in binary too.

Exit codes:
    0  the server answered with the labels
    1  the server answered with an error (HTTP 4xx/5xx, its message is printed;
       a refused key says how to get a fresh one) or with an unreadable answer
    2  a local input or usage error: the video, info.json or key file is
       missing or malformed, or an argument is wrong
    3  cannot connect: connection refused, unknown host or timed out
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

EXIT_OK, EXIT_SERVER_ERROR, EXIT_INPUT_ERROR, EXIT_CANNOT_CONNECT = 0, 1, 2, 3
PROTOCOLS = ("multipart", "v2-json", "v2-binary")
ANSWER_OUTPUT = "predictions"
# the binary tensor extension: the JSON header's length, in the request's and the answer's HTTP headers
HEADER_LENGTH = "Inference-Header-Content-Length"


class InputError(Exception):
    """A local file or argument is missing or malformed; the message says what to do."""


# ------------------------------------------------------------ local inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("demo.mp4"))
    parser.add_argument("--info", type=Path, default=Path("demo.info.json"))
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="TorchServe's inference address")
    parser.add_argument("--model-name", default="MMF_model")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="multipart")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", type=Path, default=Path("key_file.json"),
                      help="TorchServe's key file (its 'inference' key is used)")
    keys.add_argument("--token", help="the inference key itself (other users can see it in the process list: "
                                      "prefer --key-file)")
    keys.add_argument("--no-token", action="store_true", help="send no key (token authorization off)")
    parser.add_argument("--output", type=Path, default=Path("response.txt"))
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args(argv)


def read_video(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"video {path} not found; make demo writes demo.mp4, or pass --video")
    return path.read_bytes()


def read_json(path: Path, what: str, missing_hint: str) -> Any:
    if not path.is_file():
        raise InputError(f"{what} {path} not found; {missing_hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{what} {path} is not valid JSON ({error})") from None


def read_info(path: Path) -> dict[str, Any]:
    """The info.json: a string ``script`` and, optionally, ``action_labels`` (a list of strings)."""
    info = read_json(path, "info file", "pass --info")
    if not isinstance(info, dict) or not isinstance(info.get("script"), str):
        raise InputError(f'info file {path} needs a "script" string: {{"script": "...", "action_labels": [...]}}')
    labels = info.get("action_labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)):
        raise InputError(f'info file {path} "action_labels" must be a list of strings')
    return info


def inference_token(args: argparse.Namespace) -> str | None:
    """The key to send: --token's, none with --no-token, else the key file's ``inference`` key."""
    if args.no_token:
        return None
    if args.token:
        return args.token
    restart_hint = ("TorchServe writes key_file.json in the directory it starts from (scripts/serve.sh start): "
                    "pass --key-file, or --no-token for a server with token authorization off")
    keys = read_json(args.key_file, "key file", restart_hint)
    entry = keys.get("inference") if isinstance(keys, dict) else None
    key = entry.get("key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key:
        raise InputError(f'key file {args.key_file} has no "inference" key; {restart_hint}')
    return key


# ------------------------------------------- KServe v2 binary tensor extension


def serialize_bytes_tensor(elements: list[bytes]) -> bytes:
    """A BYTES tensor's binary form: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def deserialize_bytes_tensor(blob: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise ValueError("a BYTES element's 4-byte length is cut short")
        (length,) = struct.unpack_from("<I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise ValueError(f"a BYTES element of {length} bytes runs past the tensor's data")
        elements.append(blob[offset:offset + length])
        offset += length
    return elements


def encode_v2_binary(inputs: Mapping[str, list[bytes]], outputs: list[str],
                     request_id: str | None = None) -> tuple[bytes, int]:
    """A v2 inference request whose BYTES ``inputs`` (name -> elements) travel
    as binary data, asking for ``outputs`` in binary too: (body, length of its
    JSON header), the latter for the Inference-Header-Content-Length header."""
    blobs = {name: serialize_bytes_tensor(elements) for name, elements in inputs.items()}
    header: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [len(inputs[name])],
                    "parameters": {"binary_data_size": len(blob)}} for name, blob in blobs.items()],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    if request_id is not None:
        header["id"] = request_id
    json_header = json.dumps(header).encode("utf-8")
    return json_header + b"".join(blobs.values()), len(json_header)


def decode_v2_body(body: bytes, header_length: int | None) -> dict[str, Any]:
    """A v2 body (request or answer) as JSON whose binary tensors have their
    ``data`` filled in (BYTES elements as bytes). ``header_length`` None: all JSON."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise ValueError(f"{HEADER_LENGTH} {header_length} does not fit a body of {len(body)} bytes")
    message = json.loads(body if header_length is None else body[:header_length])
    tensors = message.get("inputs", []) + message.get("outputs", []) if isinstance(message, dict) else None
    if not isinstance(tensors, list) or not all(isinstance(tensor, dict) for tensor in tensors):
        raise ValueError("the JSON is not a v2 message (an object with lists of 'inputs' or 'outputs')")
    offset = len(body) if header_length is None else header_length
    for tensor in tensors:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        if tensor.get("datatype") != "BYTES":
            raise ValueError(f"tensor {tensor.get('name')!r} is {tensor.get('datatype')}: only BYTES is decoded here")
        if offset + size > len(body):
            raise ValueError(f"tensor {tensor.get('name')!r} says {size} binary bytes; the body has fewer")
        tensor["data"] = deserialize_bytes_tensor(body[offset:offset + size])
        offset += size
    return message


def decode_v2_response(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """A v2 answer, JSON or binary (the answer's own Inference-Header-Content-Length)."""
    length = next((value for name, value in headers.items() if name.lower() == HEADER_LENGTH.lower()), None)
    try:
        return decode_v2_body(body, int(length) if length is not None else None)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError included
        raise ValueError(f"not a KServe v2 answer: {error}") from None


# ----------------------------------------------------------------- requests


def v2_tensors(video: bytes, info: dict[str, Any]) -> dict[str, list[bytes]]:
    """The v2 inputs the handler reads: data (the video), script, labels (a JSON list as text)."""
    tensors = {"data": [video], "script": [info["script"].encode("utf-8")]}
    if info.get("action_labels") is not None:
        tensors["labels"] = [json.dumps(info["action_labels"]).encode("utf-8")]
    return tensors


def v2_json_body(tensors: Mapping[str, list[bytes]], request_id: str) -> dict[str, Any]:
    """The v2 JSON form: the video base64-encoded, the texts as strings."""
    def as_text(name: str, element: bytes) -> str:
        return base64.b64encode(element).decode("ascii") if name == "data" else element.decode("utf-8")

    return {"id": request_id, "inputs": [
        {"name": name, "datatype": "BYTES", "shape": [len(elements)],
         "data": [as_text(name, element) for element in elements]} for name, elements in tensors.items()]}


def send(args: argparse.Namespace, video: bytes, info: dict[str, Any], token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = args.url.rstrip("/")
    if args.protocol == "multipart":
        files = {"data": (args.video.name, video, "application/octet-stream"),
                 "script": (None, info["script"], "text/plain; charset=utf-8")}
        if info.get("action_labels") is not None:
            files["labels"] = (None, json.dumps(info["action_labels"]), "application/json")
        return requests.post(f"{base}/predictions/{args.model_name}", files=files, headers=headers,
                             timeout=args.timeout)
    url = f"{base}/v2/models/{args.model_name}/infer"
    tensors = v2_tensors(video, info)
    if args.protocol == "v2-json":
        return requests.post(url, json=v2_json_body(tensors, args.video.stem), headers=headers, timeout=args.timeout)
    body, header_length = encode_v2_binary(tensors, [ANSWER_OUTPUT], request_id=args.video.stem)
    headers |= {HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"}
    return requests.post(url, data=body, headers=headers, timeout=args.timeout)


def model_answer(protocol: str, response: requests.Response) -> tuple[bytes, dict[str, Any]]:
    """The model's JSON answer, as text and parsed: the multipart body itself,
    or a v2 answer's ``predictions`` output. ValueError if it is neither."""
    text = response.content
    if protocol != "multipart":
        outputs = decode_v2_response(response.content, response.headers).get("outputs", [])
        found = [output["data"][0] for output in outputs if output.get("name") == ANSWER_OUTPUT and output.get("data")]
        if not found:
            raise ValueError(f"the v2 answer has no {ANSWER_OUTPUT!r} output")
        text = found[0] if isinstance(found[0], bytes) else str(found[0]).encode("utf-8")
    answer = json.loads(text)
    if not isinstance(answer, dict) or not isinstance(answer.get("labels"), list):
        raise ValueError("the answer has no 'labels' list")
    return text, answer


# ---------------------------------------------------------------- answers


def error_message(response: requests.Response) -> str:
    """The server's own words: TorchServe's ``message``, the handler's ``error``, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:2000]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)
    return str(body)


def is_refused_key(response: requests.Response) -> bool:
    """TorchServe 0.12's answer to a wrong, expired or missing key: HTTP 400 InvalidKeyException."""
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        body = {}
    return (isinstance(body, dict) and body.get("type") == "InvalidKeyException") or \
        "Token Authorization failed" in response.text


def refused_key_advice(args: argparse.Namespace) -> str:
    if args.no_token:
        return ("the server has token authorization on and --no-token sent no key: drop --no-token (request.py "
                "then reads key_file.json) or pass --key-file.")
    source = "--token's key" if args.token else f"the 'inference' key of {args.key_file}"
    return (f"the server refused {source}: the key is wrong or has expired (TorchServe's keys last "
            "token_expiration_min minutes, and every restart writes new ones). Re-read key_file.json in the "
            "directory TorchServe was started from (request.py reads it with --key-file), or get a new inference "
            "key with the token API: see README.md, 'Keys and their expiry'.")


def report_answer(answer: dict[str, Any]) -> None:
    print(f"labels: {answer['labels']}")
    if "expected_labels" in answer:
        expected = answer["expected_labels"]
        print(f"expected: {expected} (found {len(answer['found'])} of {len(expected)})")


def error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def check_output(path: Path) -> None:
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"cannot write the answer to {path}: pass --output with a file in an existing folder")


def finish(args: argparse.Namespace, response: requests.Response) -> int:
    """Write the model's answer (or, failing that, the server's raw body) to --output and report it."""
    if not response.ok:
        args.output.write_bytes(response.content)
        message = f"HTTP {response.status_code} from {response.url}: {error_message(response)}"
        if is_refused_key(response):
            message += f"\n{refused_key_advice(args)}"
        return error(message, EXIT_SERVER_ERROR)
    try:
        text, answer = model_answer(args.protocol, response)
    except ValueError as problem:
        args.output.write_bytes(response.content)
        return error(f"the server's answer is not the model's JSON answer ({problem}); it is in {args.output}",
                     EXIT_SERVER_ERROR)
    args.output.write_bytes(text)
    report_answer(answer)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_output(args.output)
        video, info, token = read_video(args.video), read_info(args.info), inference_token(args)
    except (InputError, OSError) as problem:  # OSError: a file that exists but cannot be read
        return error(str(problem), EXIT_INPUT_ERROR)
    try:
        response = send(args, video, info, token)
    except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL) as problem:
        return error(f"--url {args.url} is not an http(s) address: {problem}", EXIT_INPUT_ERROR)
    except requests.RequestException as problem:
        return error(f"cannot connect to TorchServe at {args.url}: {problem}. Is it running (scripts/serve.sh "
                     "status), and is --url its inference address?", EXIT_CANNOT_CONNECT)
    try:
        return finish(args, response)
    except OSError as problem:
        return error(f"cannot write {args.output}: {problem}", EXIT_INPUT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
