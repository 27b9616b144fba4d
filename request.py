"""Send a video and its info.json to the served MMF model.

    python request.py                                   # demo.mp4 + demo.info.json
    python request.py --video clip.mp4 --info clip.info.json --model-name MMF_model
    python request.py --protocol v2-json                # the open inference (KServe v2) protocol
    python request.py --live camera.ts --info demo.info.json   # a live stream, chunk by chunk (MMF_model_live)

The info.json holds the video's script and, optionally, its expected
labels: {"script": "...", "action_labels": ["...", ...]}. The server's JSON
answer is written to response.txt and its labels are printed.

The server's address is config.properties' inference_address (the file
TorchServe runs with: --ts-config, else $TS_CONFIG_FILE, else
./config.properties), unless --url gives one.

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

Live streams (--live SOURCE: a file, a file still being written with --follow,
a camera with --input-format, an RTSP or HTTP URL): the source is cut into
chunks at its key frames without re-encoding (re-encoded only when it must
be), each sent at real-time pace (--as-fast-as-possible for files) with the
stream's sequence id to /predictions/MMF_model_live; one line per answer
(stream time, labels, what started or ended); the stream is ended on exit or
Ctrl-C; the answers go to --output as JSON lines, and --plot draws them.
A chunk the server refuses is reported and the stream goes on (exit code 1
at the end).

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
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests

from minimmf.serving import kserve_v2
from minimmf.serving.chunking import Chunk, ChunkingError, cut_chunks, open_source
from minimmf.serving.kserve_v2 import ANSWER_OUTPUT
from minimmf.serving.torchserve import ServingSetupError, default_ts_config, inference_address

EXIT_OK, EXIT_SERVER_ERROR, EXIT_INPUT_ERROR, EXIT_CANNOT_CONNECT = 0, 1, 2, 3
PROTOCOLS = ("multipart", "v2-json", "v2-binary")


class InputError(Exception):
    """A local file or argument is missing or malformed; the message says what to do."""


# ------------------------------------------------------------ local inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("demo.mp4"))
    parser.add_argument("--info", type=Path, default=Path("demo.info.json"))
    parser.add_argument("--url", help="TorchServe's inference address (default: --ts-config's inference_address)")
    parser.add_argument("--ts-config", type=Path, default=default_ts_config(),
                        help="the config.properties TorchServe runs with (default: $TS_CONFIG_FILE, else "
                             "./config.properties)")
    parser.add_argument("--model-name", help="default: MMF_model, with --live MMF_model_live")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="multipart")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", type=Path, default=Path("key_file.json"),
                      help="TorchServe's key file (its 'inference' key is used)")
    keys.add_argument("--token", help="the inference key itself (other users can see it in the process list: "
                                      "prefer --key-file)")
    keys.add_argument("--no-token", action="store_true", help="send no key (token authorization off)")
    parser.add_argument("--segment-seconds", type=float, metavar="S",
                        help="also ask when: a timeline of windows of S seconds, printed as start-end and labels")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="draw the timeline's scores against time as a heatmap (with --segment-seconds)")
    parser.add_argument("--output", type=Path, default=Path("response.txt"))
    parser.add_argument("--timeout", type=float, default=300.0)
    live = parser.add_argument_group("live streams")
    live.add_argument("--live", metavar="SOURCE", help="send SOURCE (a file, a device, an RTSP or HTTP URL) as a "
                                                        "live stream, chunk by chunk, instead of --video")
    live.add_argument("--chunk-seconds", type=float, default=1.0, help="seconds per chunk (cut at the next key "
                                                                       "frame; default 1)")
    live.add_argument("--max-chunk-seconds", type=float, metavar="S",
                      help="key frames further apart than this are re-encoded (default: 4 x --chunk-seconds, 4 s "
                           "at least)")
    live.add_argument("--as-fast-as-possible", action="store_true",
                      help="send a file's chunks without waiting for real time")
    live.add_argument("--input-format", metavar="FMT", help="FFmpeg's input format, for a device (v4l2, avfoundation, "
                                                           "dshow, ...)")
    live.add_argument("--follow", type=float, metavar="S", help="SOURCE is a file still being written: read it until "
                                                                "it has not grown for S seconds")
    live.add_argument("--stream-id", help="the stream's sequence id (default: TorchServe makes one)")
    args = parser.parse_args(argv)
    args.model_name = args.model_name or ("MMF_model_live" if args.live else "MMF_model")
    if args.live is not None and args.segment_seconds is not None:
        parser.error("--segment-seconds is for whole videos; the live model answers its own windows")
    if args.chunk_seconds <= 0:
        parser.error("--chunk-seconds must be > 0")
    return args


def server_url(args: argparse.Namespace) -> str:
    """--url, else the inference address of the config.properties TorchServe runs with."""
    if args.url:
        return args.url
    if not args.ts_config.is_file():
        raise InputError(f"no --url and no {args.ts_config} to read TorchServe's inference_address from: pass --url, "
                         "or --ts-config with the config.properties TorchServe runs with")
    try:
        return inference_address(args.ts_config)
    except ServingSetupError as problem:
        raise InputError(str(problem)) from None


def check_plot(args: argparse.Namespace) -> None:
    """--plot draws the timeline (or the live stream's answers): refuse it before uploading when none will come
    back, or it cannot be written."""
    if args.plot is None:
        return
    if args.segment_seconds is None and args.live is None:
        raise InputError("--plot draws the timeline: pass --segment-seconds too (e.g. --segment-seconds 1)")
    if args.plot.is_dir() or not args.plot.parent.is_dir():
        raise InputError(f"cannot write the plot to {args.plot}: pass --plot with a file in an existing folder")


def read_video(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"video {path} not found; scripts/demo_requests.py --copy-first demo writes demo.mp4 "
                         "(README, 3. Package and serve), or pass --video")
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


# ----------------------------------------------------------------- requests


def send(args: argparse.Namespace, video: bytes, info: dict[str, Any], token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = args.url.rstrip("/")
    if args.protocol == "multipart":
        files = {"data": (args.video.name, video, "application/octet-stream"),
                 "script": (None, info["script"], "text/plain; charset=utf-8")}
        if info.get("action_labels") is not None:
            files["labels"] = (None, json.dumps(info["action_labels"]), "application/json")
        if args.segment_seconds is not None:
            files["segment_seconds"] = (None, str(args.segment_seconds))
        return requests.post(f"{base}/predictions/{args.model_name}", files=files, headers=headers,
                             timeout=args.timeout)
    url = f"{base}/v2/models/{args.model_name}/infer"
    tensors = kserve_v2.handler_inputs(video, info["script"], info.get("action_labels"), args.segment_seconds)
    if args.protocol == "v2-json":
        return requests.post(url, json=kserve_v2.encode_json_request(tensors, args.video.stem), headers=headers,
                             timeout=args.timeout)
    body, header_length = kserve_v2.encode_request(tensors, [ANSWER_OUTPUT], request_id=args.video.stem)
    headers |= {kserve_v2.HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"}
    return requests.post(url, data=body, headers=headers, timeout=args.timeout)


def model_answer(protocol: str, response: requests.Response) -> tuple[bytes, dict[str, Any]]:
    """The model's JSON answer, as text and parsed: the multipart body itself,
    or a v2 answer's ``predictions`` output. ValueError if it is neither."""
    text = response.content
    if protocol != "multipart":
        outputs = kserve_v2.decode_body(response.content, kserve_v2.header_length_of(response.headers)).get(
            "outputs") or []
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
    if "timeline" in answer:
        print(f"timeline ({answer['segment_seconds']:g} s windows):")
        for window in answer["timeline"]:
            labels = ", ".join(window["labels"]) or "-"
            print(f"  {window['start']:7.2f} - {window['end']:7.2f} s  {labels}")


def plot_timeline(answer: dict[str, Any], path: Path, title: str | None = None) -> None:
    """The timeline's scores as a heatmap: actions (rows) against time (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = answer["timeline"]
    actions = sorted({name for window in windows for name in window["scores"]})
    scores = [[window["scores"].get(name, 0.0) for window in windows] for name in actions]
    edges = [windows[0]["start"]] + [window["end"] for window in windows]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.5 * len(windows) + 3), 0.35 * len(actions) + 1.6))
    image = axis.pcolormesh(edges, range(len(actions) + 1), scores, vmin=0, vmax=1, cmap="viridis")
    axis.set_yticks([row + 0.5 for row in range(len(actions))], actions, fontsize=8)
    axis.set_xlabel("seconds")
    axis.set_title(title or f"labels against time ({answer['segment_seconds']:g} s windows; "
                            f"threshold {answer['threshold']:g})")
    figure.colorbar(image, ax=axis, label="probability")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    if args.plot is not None:
        if "timeline" not in answer:
            return error("the server's answer has no timeline to plot (a handler without timelines?)",
                         EXIT_SERVER_ERROR)
        plot_timeline(answer, args.plot)
        print(f"timeline plot: {args.plot}")
    return EXIT_OK


# ------------------------------------------------------------ live streams


class LiveStreamStopped(Exception):
    """The server cannot go on with the stream; the message says why and what to do."""


class LiveClient:
    """One live stream: its chunks sent in order with its sequence id, each
    answer printed and kept, and the stream ended at the close."""

    def __init__(self, args: argparse.Namespace, script: str, token: str | None):
        self.args, self.script = args, script
        self.url = f"{args.url.rstrip('/')}/predictions/{args.model_name}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stream_id: str | None = args.stream_id
        self.offset = 0.0  # source seconds of the server's stream time 0 (moves when the server starts it again)
        self.windows: list[dict[str, Any]] = []  # answered windows, in source seconds
        self.refused = 0

    def send(self, chunk: Chunk) -> dict[str, Any] | None:
        """Send one chunk; its answer, or None for a chunk the server refused (the stream goes on)."""
        files = {"data": (f"chunk{chunk.number}.mkv", chunk.data, "application/octet-stream"),
                 "script": (None, self.script, "text/plain; charset=utf-8"), "chunk": (None, str(chunk.number))}
        response = requests.post(self.url, files=files, headers=self._headers(), timeout=self.args.timeout)
        self.stream_id = response.headers.get("ts_request_sequence_id") or self.stream_id
        if response.status_code in (400, 409) and not is_refused_key(response):
            self.refused += 1
            print(f"chunk {chunk.number} ({chunk.start:.2f}-{chunk.end:.2f} s): HTTP {response.status_code}: "
                  f"{error_message(response)}", file=sys.stderr)
            return None
        if not response.ok:
            raise LiveStreamStopped(self._stopped_message(response))
        try:
            answer = response.json()
        except ValueError:
            raise LiveStreamStopped(f"the answer to chunk {chunk.number} is not the live model's JSON: "
                                    f"{response.text[:200]!r}; is --model-name the live model?") from None
        if answer.get("state_lost"):
            self.offset = chunk.start
            print(f"chunk {chunk.number}: {answer['state_lost']}", file=sys.stderr)
        return answer

    def end(self) -> None:
        """End the stream on the server (it frees the stream's state and its place)."""
        if self.stream_id is None:
            return
        headers = {**self._headers(), "ts_request_sequence_end": "true"}
        try:
            requests.post(self.url, headers=headers, timeout=self.args.timeout)
        except requests.RequestException as problem:
            print(f"warning: could not end the stream {self.stream_id}: {problem}", file=sys.stderr)

    def report(self, answer: dict[str, Any]) -> None:
        window = answer.get("window")
        if window is None:
            return
        start, end = window["start"] + self.offset, window["end"] + self.offset
        self.windows.append({**window, "start": start, "end": end})
        changes = [f"+{label}" for label in answer["started"]] + [f"-{label}" for label in answer["ended"]]
        print(f"{end:8.2f} s  [{start:7.2f} - {end:7.2f}]  {', '.join(window['labels']) or '-'}"
              + (f"   ({', '.join(changes)})" if changes else ""), flush=True)

    def plot(self, path: Path, threshold: float) -> None:
        """Each answer as a column from the previous answer's end to its own: what was happening then."""
        columns, previous = [], 0.0
        for window in self.windows:
            columns.append({**window, "start": previous})
            previous = window["end"]
        plot_timeline({"timeline": columns, "threshold": threshold}, path,
                      title=f"live stream: each column the window ending there (threshold {threshold:g})")

    def _headers(self) -> dict[str, str]:
        return {**self.headers, **({"ts_request_sequence_id": self.stream_id} if self.stream_id else {})}

    def _stopped_message(self, response: requests.Response) -> str:
        message = f"HTTP {response.status_code} from {response.url}: {error_message(response)}"
        if is_refused_key(response):
            return f"{message}\n{refused_key_advice(self.args)}"
        if response.status_code == 503:
            return (f"{message}\nTorchServe holds as many streams as the live model's maxNumSequence (its "
                    "model-config.yaml) and this one is over: wait for a stream to end, or raise maxNumSequence "
                    "(and handler.live.max_streams) and register the model again")
        if "Worker died" in response.text:
            return (f"{message}\nTorchServe 0.12 cannot restart a worker of a model with sequence batching: "
                    "unregister the live model and register it again (README, \"Live streams\")")
        return message


def run_live(args: argparse.Namespace, info: dict[str, Any], token: str | None) -> int:
    """``--live``: the source's chunks, sent in order at real-time pace, each answer printed."""
    container = open_source(args.live, input_format=args.input_format, follow=args.follow)
    client = LiveClient(args, info["script"], token)
    paced = not args.as_fast_as_possible and args.follow is None and Path(args.live).is_file()
    began, threshold, reencoded = time.monotonic(), None, False
    try:
        with container, open(args.output, "w", encoding="utf-8") as output:
            for chunk in cut_chunks(container, args.chunk_seconds, args.max_chunk_seconds):
                if chunk.reencoded and not reencoded:
                    reencoded = True
                    print(f"note: from {chunk.start:.2f} s the source is re-encoded (H.264, a key frame every "
                          "chunk): it is uncompressed, or its key frames are too far apart to cut it as it is",
                          file=sys.stderr)
                if paced:  # a file's chunk is sent when it would have been recorded
                    time.sleep(max(0.0, began + chunk.end - time.monotonic()))
                answer = client.send(chunk)
                if answer is not None:
                    output.write(json.dumps(answer) + "\n")
                    threshold = answer["threshold"]
                    client.report(answer)
    except KeyboardInterrupt:
        print("stopped: ending the stream", file=sys.stderr)
    finally:
        client.end()
    if args.plot is not None and client.windows:
        client.plot(args.plot, threshold)
        print(f"timeline plot: {args.plot}")
    if client.refused:
        return error(f"the server refused {client.refused} chunk(s) (above); the others were answered",
                     EXIT_SERVER_ERROR)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.live is not None:
        return live_main(args)
    try:
        check_output(args.output)
        check_plot(args)
        args.url = server_url(args)
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


def live_main(args: argparse.Namespace) -> int:
    try:
        check_output(args.output)
        check_plot(args)
        args.url = server_url(args)
        info, token = read_info(args.info), inference_token(args)
        return run_live(args, info, token)
    except LiveStreamStopped as problem:
        return error(str(problem), EXIT_SERVER_ERROR)
    except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL) as problem:
        return error(f"--url {args.url} is not an http(s) address: {problem}", EXIT_INPUT_ERROR)
    except requests.RequestException as problem:  # before OSError, which it is
        return error(f"cannot connect to TorchServe at {args.url}: {problem}. Is it running (scripts/serve.sh "
                     "status), and is --url its inference address?", EXIT_CANNOT_CONNECT)
    except (InputError, ChunkingError, OSError) as problem:
        return error(str(problem), EXIT_INPUT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
