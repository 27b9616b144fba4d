"""Send a video and its info.json to the served MMF model.

    python request.py                                   # demo.mp4 + demo.info.json
    python request.py --video clip.mp4 --info clip.info.json --model-name MMF_model

The info.json holds the video's script and, optionally, its expected
labels: {"script": "...", "action_labels": ["...", ...]}. The server's JSON
answer is written to response.txt and its labels are printed. TorchServe's
token authorization is on: the inference key is read from key_file.json
(written where torchserve was started) unless --token is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("demo.mp4"))
    parser.add_argument("--info", type=Path, default=Path("demo.info.json"))
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="TorchServe's inference address")
    parser.add_argument("--model-name", default="MMF_model")
    parser.add_argument("--key-file", type=Path, default=Path("key_file.json"),
                        help="TorchServe's key file (its 'inference' key is used)")
    parser.add_argument("--token", help="the inference key itself (instead of --key-file)")
    parser.add_argument("--output", type=Path, default=Path("response.txt"))
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args(argv)


def inference_token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    if args.key_file.is_file():
        return json.loads(args.key_file.read_text())["inference"]["key"]
    return None


def send(video: Path, info: dict, url: str, model_name: str, token: str | None, timeout: float) -> requests.Response:
    files = {"data": (video.name, video.read_bytes(), "application/octet-stream"),
             "script": (None, info["script"], "text/plain; charset=utf-8")}
    if info.get("action_labels") is not None:
        files["labels"] = (None, json.dumps(info["action_labels"]), "application/json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url.rstrip('/')}/predictions/{model_name}", files=files, headers=headers,
                         timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.video, args.info):
        if not path.is_file():
            print(f"error: {path} not found (make demo writes demo.mp4; or pass --video/--info)", file=sys.stderr)
            return 2
    info = json.loads(args.info.read_text())
    if "script" not in info:
        print(f"error: {args.info} has no 'script'", file=sys.stderr)
        return 2
    try:
        response = send(args.video, info, args.url, args.model_name, inference_token(args), args.timeout)
    except requests.RequestException as error:
        print(f"error: cannot reach TorchServe at {args.url}: {error}", file=sys.stderr)
        return 1
    args.output.write_bytes(response.content)
    if not response.ok:
        print(f"error: HTTP {response.status_code}: {response.text.strip()}", file=sys.stderr)
        return 1
    answer = response.json()
    print(f"labels: {answer['labels']}")
    if "expected_labels" in answer:
        expected = answer["expected_labels"]
        print(f"expected: {expected} (found {len(answer['found'])} of {len(expected)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
