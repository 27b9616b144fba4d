"""handler.py in-process, on the archive torch-model-archiver builds: the
answers, per-request errors inside a batch, describe, and device choice."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import torch

from devtools.worker import extract, handle, load_handler
from minimmf.serving.predictor import select_device
from minimmf.serving.settings import SettingsError
from minimmf.serving.torchserve import archive_model
from tests.conftest import ROOT
from tests.media import encode_video


@pytest.fixture(scope="module")
def model_dir(trained, labels_csv, tmp_path_factory):
    """The archive torch-model-archiver builds, extracted as TorchServe does."""
    store = tmp_path_factory.mktemp("store")
    mar = archive_model(trained, store, labels=labels_csv, model_config=ROOT / "model-config.yaml",
                        handler=ROOT / "handler.py")
    return extract(mar, tmp_path_factory.mktemp("extracted"))


@pytest.fixture(scope="module")
def served(model_dir):
    return load_handler(model_dir, {"handler": {"max_video_bytes": 2_000_000}})


@pytest.fixture(scope="module")
def test_videos(test_split):
    return [(path.read_bytes(), script) for path, script in test_split]


def form(video: bytes, script: str, **extra) -> dict:
    """A multipart request as TorchServe hands it over (file parts as bytearray)."""
    return {"data": bytearray(video), "script": bytearray(script.encode()), **extra}


def test_answers_match_the_model(served, test_videos):
    handler, context = served
    results = handle(handler, context, [form(v, s) for v, s in test_videos])
    assert [status for status, _ in results] == [200] * len(test_videos)
    assert handler.predictor.classes == sorted(handler.predictor.classes)
    for (_, body), (video, script) in zip(results, test_videos, strict=True):
        # the same video and script, one at a time, straight through the model
        sample = handler.predictor.sample_maker(video, script)
        with torch.inference_mode():
            single = {k: (v[None] if torch.is_tensor(v) else v) for k, v in sample.items()}
            expected = torch.sigmoid(handler.predictor.model(single)["scores"])[0]
        assert set(body) == {"labels", "scores", "threshold"}
        assert len(body["scores"]) == len(handler.predictor.classes)
        for index, name in enumerate(handler.predictor.classes):
            assert body["scores"][name] == pytest.approx(float(expected[index]), abs=1e-5)
        assert body["labels"] == [n for n, p in body["scores"].items() if p >= body["threshold"]]


def test_labels_and_info_fields(served, test_videos):
    handler, context = served
    video, script = test_videos[0]
    known, unknown = handler.predictor.classes[0], "Juggling flaming torches"
    info = json.dumps({"script": script, "action_labels": [known, unknown]}).encode()
    results = handle(handler, context, [
        form(video, script, labels=bytearray(json.dumps([known]).encode())),
        {"data": bytearray(video), "info": bytearray(info)},
        form(video, script, labels=known),  # a single plain label as text
    ])
    assert all(status == 200 for status, _ in results)
    first, second, third = (body for _, body in results)
    assert first["expected_labels"] == [known]
    assert first["found"] + first["missed"] == [known]
    assert second["unknown_labels"] == [unknown]
    assert third["expected_labels"] == [known]
    assert second["scores"] == pytest.approx(first["scores"], abs=1e-5)


BAD_REQUESTS = [
    ({"script": bytearray(b"a script")}, "no video"),
    ({"data": bytearray(), "script": bytearray(b"x")}, "empty"),
    ({"data": bytearray(bytes(range(256)) * 20), "script": bytearray(b"x")}, "not a readable video"),
    ({"data": bytearray(b"plain text file" * 100), "script": bytearray(b"x")}, "not a readable video"),
    ({"data": bytearray(b"x" * 2_000_001), "script": bytearray(b"x")}, "over the limit"),
    ({"script": bytearray("caf\u00e9".encode("latin-1"))}, "not UTF-8"),
    ({"script": bytearray(b"x"), "labels": bytearray(b'{"a": 1}')}, "JSON list"),
    ({"info": bytearray(b"{not json")}, "not valid JSON"),
]


@pytest.mark.parametrize("bad, message", BAD_REQUESTS)
def test_bad_requests_get_400_alone(served, test_videos, bad, message):
    handler, context = served
    video, script = test_videos[0]
    if "data" not in bad and message != "no video":
        bad = {**bad, "data": bytearray(video)}  # a good video, the fault is elsewhere
    results = handle(handler, context, [form(video, script), bad, form(video, script)])
    (good_status, good), (status, body), (other_status, other) = results
    assert (good_status, status, other_status) == (200, 400, 200)
    assert body["code"] == 400 and message in body["error"]
    assert good == other


def test_missing_script_is_400(served, test_videos):
    handler, context = served
    (status, body), = handle(handler, context, [{"data": bytearray(test_videos[0][0])}])
    assert status == 400 and "no script" in body["error"]


def test_video_edge_cases_are_answered(served, tmp_path):
    handler, context = served
    no_audio = encode_video(tmp_path / "silent.mp4", frames=20, audio_codec=None).read_bytes()
    one_frame = encode_video(tmp_path / "one.mp4", frames=1).read_bytes()
    audio_only = encode_video(tmp_path / "audio.mp4", frames=0, video_codec=None).read_bytes()
    results = handle(handler, context, [form(no_audio, "s"), form(one_frame, "s"), form(audio_only, "s")])
    assert [status for status, _ in results] == [200, 200, 400]
    assert "no video stream" in results[2][1]["error"]


def test_describe(served):
    handler, context = served
    (status, body), = handle(handler, context, [{"body": b""}], headers=[{"describe": "True"}])
    assert status == 200
    assert body["labels"] == handler.predictor.classes and body["threshold"] == 0.5
    assert body["config"]["num_hidden_layers"] == 2 and body["versions"]["torch"] == torch.__version__


def test_top_k_and_threshold_settings(model_dir, test_videos):
    handler, context = load_handler(model_dir, {"handler": {"top_k": 3, "prediction_threshold": 0.0}})
    (status, body), = handle(handler, context, [form(*test_videos[0])])
    assert status == 200 and len(body["scores"]) == 3
    assert body["threshold"] == 0.0 and len(body["labels"]) == len(handler.predictor.classes)


def test_cpu_when_no_gpu_is_assigned():
    assert select_device(None) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device(0) == torch.device("cpu")


def kserve_v2_request(video: bytes, script: str, request_id: str = "req-1") -> dict:
    return {"id": request_id, "inputs": [
        {"name": "data", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(video).decode()]},
        {"name": "script", "shape": [1], "datatype": "BYTES", "data": [script]},
    ]}


def test_kserve_v2_envelope(served, test_videos):
    handler, context = served
    video, script = test_videos[0]
    as_json = {"body": kserve_v2_request(video, script)}  # TorchServe decodes a JSON body
    as_bytes = {"body": bytearray(json.dumps(kserve_v2_request(video, script, "req-2")).encode())}
    broken = {"body": {"inputs": [{"name": "data", "datatype": "BYTES", "data": ["not base64!"]},
                                  {"name": "script", "datatype": "BYTES", "data": [script]}]}}
    results = handle(handler, context, [as_json, form(video, script), as_bytes, broken])
    assert [status for status, _ in results] == [200, 200, 200, 400]
    (_, first), (_, plain), (_, second), (_, error) = results
    assert first["id"] == "req-1" and second["id"] == "req-2" and first["model_name"] == "MMF_model"
    output = first["outputs"][0]
    assert output["name"] == "predictions" and output["datatype"] == "BYTES"
    answer = json.loads(output["data"][0])
    assert answer["labels"] == plain["labels"]
    assert answer["scores"] == pytest.approx(plain["scores"], abs=1e-5)
    assert "base64" in error["error"]


def test_channels_last_keeps_the_answers(served, model_dir, test_videos):
    handler, context = served
    assert handler.settings.channels_last
    video_conv = handler.predictor.model.encoders["video"].encoder[0][0]
    assert video_conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    plain, plain_context = load_handler(model_dir, {"handler": {"channels_last": False}})
    requests = [form(v, s) for v, s in test_videos]
    for (_, fast), (_, reference) in zip(handle(handler, context, requests), handle(plain, plain_context, requests),
                                         strict=True):
        assert fast["labels"] == reference["labels"]
        assert fast["scores"] == pytest.approx(reference["scores"], abs=1e-5)


@pytest.mark.parametrize("settings", [{"precision": "bf16"}])
def test_opt_in_fast_modes_stay_close_to_fp32(served, model_dir, test_videos, settings):
    handler, context = served
    fast, fast_context = load_handler(model_dir, {"handler": settings})
    requests = [form(v, s) for v, s in test_videos]
    for (status, answer), (_, reference) in zip(handle(fast, fast_context, requests),
                                                handle(handler, context, requests), strict=True):
        assert status == 200
        assert answer["scores"] == pytest.approx(reference["scores"], abs=0.05)


@pytest.mark.parametrize("settings, message", [
    ({"precision": "fp8"}, "handler.precision must be one of"),
    ({"quantize_bert": True}, "handler.quantize_bert is no longer a setting; set handler.precision: int8"),
    ({"top_k": "3"}, "handler.top_k must be an int"),
    ({"top_k": -1}, "handler.top_k must be >= 0"),
    ({"prediction_threshold": 1.5}, "handler.prediction_threshold must be a probability"),
    ({"threshold": 0.4, "prediction_threshold": 0.5}, "handler.threshold is the old name of"),
    ({"channels_last": "yes"}, "handler.channels_last must be a bool"),
    ({"max_video_bytes": 0}, "handler.max_video_bytes must be > 0"),
    ({"treshold": 0.3}, "unknown handler setting(s) ['treshold']"),
])
def test_bad_settings_fail_at_start_naming_the_setting(model_dir, settings, message):
    with pytest.raises(SettingsError) as error:
        load_handler(model_dir, {"handler": settings})
    assert message in str(error.value)


# ------------------------------------------------------------ hostile input

@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, bytes]:
    from devtools import hostile_inputs

    folder = tmp_path_factory.mktemp("hostile")
    return {
        "huge_frame": hostile_inputs.huge_frame_video(folder / "huge.mp4").read_bytes(),
        "declared_frames": hostile_inputs.many_frames_video(folder / "many.mp4", frames=50_000).read_bytes(),
        "counted_frames": hostile_inputs.many_frames_video(folder / "many.ts", frames=20_000).read_bytes(),
        "resolution_change": hostile_inputs.resolution_change_video(folder / "switch.ts").read_bytes(),
        "sample_table_bomb": hostile_inputs.sample_table_bomb(folder / "bomb.mp4").read_bytes(),
        "ffconcat": hostile_inputs.ffconcat_list(),
    }


HOSTILE_VIDEOS = [
    ("huge_frame", "handler.max_frame_pixels"),
    ("declared_frames", "handler.max_frames"),
    ("counted_frames", "handler.max_frames"),
    ("sample_table_bomb", "handler.max_frames"),
    ("ffconcat", "not a readable video container"),
]


@pytest.fixture(scope="module")
def roomy(model_dir):
    """The handler with the default byte limit (200 MB): the other limits must hold on their own."""
    return load_handler(model_dir)


@pytest.mark.parametrize("name, message", HOSTILE_VIDEOS)
def test_hostile_videos_get_400_naming_the_limit(roomy, test_videos, hostile, name, message):
    handler, context = roomy
    video, script = test_videos[0]
    results = handle(handler, context, [form(hostile[name], script), form(video, script)])
    (status, body), (good_status, _) = results
    assert (status, good_status) == (400, 200), body
    assert message in body["error"]


def test_a_resolution_change_mid_stream_is_served(served, hostile):
    handler, context = served
    (status, body), = handle(handler, context, [form(hostile["resolution_change"], "a script")])
    assert status == 200 and body["labels"] == [n for n, p in body["scores"].items() if p >= body["threshold"]]


HOSTILE_FIELDS = [
    ({"info": bytearray(b"[" * 100_000 + b"]" * 100_000)}, "handler.max_json_depth"),
    ({"info": bytearray(b"[" * 200_000 + b"]" * 200_000)}, "handler.max_json_bytes"),
    ({"info": bytearray(json.dumps({"script": "x" * 300_000}).encode())}, "handler.max_json_bytes"),
    ({"script": bytearray(b"s"), "labels": bytearray(json.dumps([f"L{i}" for i in range(201)]).encode())},
     "handler.max_labels"),
    ({"script": bytearray(b"s"), "labels": bytearray(json.dumps([f"Label {i}" for i in range(400_000)]).encode())},
     "handler.max_json_bytes"),
    ({"script": bytearray(b"x" * 20_001)}, "handler.max_script_chars"),
    ({"script": bytearray(b"s"), "labels": bytearray(b"[1, 2]")}, "JSON list of action names"),
    ({"info": bytearray(b'{"script": 7}')}, "field 'script' must be text"),
]


@pytest.mark.parametrize("fields, message", HOSTILE_FIELDS)
def test_hostile_fields_get_400_naming_the_limit(served, test_videos, fields, message):
    handler, context = served
    video, script = test_videos[0]
    (status, body), (good_status, _) = handle(handler, context, [{"data": bytearray(video), **fields},
                                                                 form(video, script)])
    assert (status, good_status) == (400, 200), body
    assert message in body["error"]


def test_answers_echo_no_more_than_the_requests_labels(served, test_videos):
    handler, context = served
    video, script = test_videos[0]
    labels = [handler.predictor.classes[0], "Juggling"] * 50
    (status, body), = handle(handler, context, [form(video, script, labels=bytearray(json.dumps(labels).encode()))])
    assert status == 200 and body["expected_labels"] == labels
    assert len(body["found"]) + len(body["missed"]) + len(body["unknown_labels"]) == len(labels)


def test_describe_and_explain_are_answered_per_request(served, test_videos):
    handler, context = served
    video, script = test_videos[0]
    results = handle(handler, context, [form(video, script), {"body": b""}, form(video, script), form(video, script)],
                     headers=[{}, {"describe": "True"}, {"explain": "True"}, {}])
    statuses = [status for status, _ in results]
    assert statuses == [200, 200, 501, 200]
    assert results[1][1]["labels"] == handler.predictor.classes and "versions" in results[1][1]
    assert results[0][1] == results[3][1] and "labels" in results[0][1]
    assert "no explanations" in results[2][1]["error"]


def test_bad_requests_are_logged_with_their_request_id_and_reason(served, caplog):
    handler, context = served
    with caplog.at_level(logging.WARNING):
        handle(handler, context, [{"data": bytearray(b"secret content " * 20), "script": bytearray(b"s")}])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "answered 400" in r.getMessage()]
    assert len(warnings) == 1 and "req0" in warnings[0].getMessage()
    assert "secret content" not in warnings[0].getMessage()


# ------------------------------------------------------- KServe v2 binary

def v2_binary_request(video: bytes, script: str, binary_output: bool = True) -> tuple[dict, dict]:
    """A v2 binary request as TorchServe hands it over: (request, its headers)."""
    from minimmf.serving import kserve_v2

    body, header_length = kserve_v2.encode_request({"data": [video], "script": [script.encode()]},
                                                   ["predictions"] if binary_output else [], request_id="bin-1")
    return {"body": bytearray(body)}, {kserve_v2.HEADER_LENGTH: str(header_length)}


def test_kserve_v2_binary_requests_and_answers(served, test_videos):
    from minimmf.serving import kserve_v2

    handler, context = served
    video, script = test_videos[0]
    binary_out, binary_headers = v2_binary_request(video, script)
    json_out, json_headers = v2_binary_request(video, script, binary_output=False)
    results = handle(handler, context, [binary_out, form(video, script), json_out],
                     headers=[binary_headers, {}, json_headers])
    (status, body), (_, plain), (json_status, json_answer) = results
    assert status == json_status == 200 and isinstance(body, bytes)
    header_length = int(context.get_response_headers(0)[kserve_v2.HEADER_LENGTH])
    decoded = kserve_v2.decode_body(body, header_length)
    assert decoded["id"] == "bin-1" and decoded["outputs"][0]["name"] == "predictions"
    assert json.loads(decoded["outputs"][0]["data"][0]) == plain
    assert json.loads(json_answer["outputs"][0]["data"][0]) == plain  # no binary output asked: a JSON answer


@pytest.mark.parametrize("mangle, message", [
    (lambda body, length: (body[:-10], length), "past the end of the body"),  # truncated
    (lambda body, length: (body + b"extra", length), "add up to"),
    (lambda body, length: (body, len(body) + 1), "but the body has"),
    (lambda body, length: (body, "twelve"), "must be a number of bytes"),
    (lambda body, length: (body[:length] + b"\xff\xff\xff\x7f" + body[length + 4:], length), "runs past"),
    (lambda body, length: (body[: length - 1] + b"]" + body[length:], length), "not valid JSON"),
])
def test_malformed_v2_binary_bodies_get_400_naming_the_problem(served, test_videos, mangle, message):
    from minimmf.serving import kserve_v2

    handler, context = served
    video, script = test_videos[0]
    request, headers = v2_binary_request(video, script)
    body, length = mangle(bytes(request["body"]), int(headers[kserve_v2.HEADER_LENGTH]))
    (status, answer), (good_status, _) = handle(handler, context, [{"body": bytearray(body)}, form(video, script)],
                                                headers=[{kserve_v2.HEADER_LENGTH: str(length)}, {}])
    assert (status, good_status) == (400, 200)
    assert "KServe v2" in answer["error"] and message in answer["error"]


# --------------------------------------------------------------- timeline

def test_a_timeline_leaves_the_video_level_answer_as_it_was(served, test_videos):
    handler, context = served
    video, script = test_videos[0]
    (_, plain), (status, timed) = handle(handler, context, [form(video, script),
                                                            form(video, script, segment_seconds=bytearray(b"0.5"))])
    assert status == 200 and set(plain) == {"labels", "scores", "threshold"}
    assert {key: timed[key] for key in plain} == plain  # the same JSON, to the last digit
    assert timed["segment_seconds"] == 0.5
    windows = timed["timeline"]
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
    for window in windows:
        assert len(window["scores"]) == len(handler.predictor.classes)
        assert window["labels"] == [n for n, p in window["scores"].items() if p >= timed["threshold"]]


def test_each_window_is_the_model_on_that_window(served, test_videos):
    from minimmf.common.sample import SampleList
    from minimmf.datasets.video_clips import TimelineWindows

    handler, context = served
    video, script = test_videos[1]
    (_, answer), = handle(handler, context, [form(video, script, segment_seconds=bytearray(b"1"))])
    maker = handler.predictor.sample_maker
    clips = maker.decode_plan(video, TimelineWindows(1.0, 64, maker.frames_per_clip))
    with torch.inference_mode():
        expected = torch.sigmoid(handler.predictor.model(SampleList([maker.from_clip(c, script) for c in clips]))
                                 ["scores"])
    assert len(answer["timeline"]) == len(clips) == 2
    for window, row in zip(answer["timeline"], expected, strict=True):
        for index, name in enumerate(handler.predictor.classes):
            assert window["scores"][name] == pytest.approx(float(row[index]), abs=1e-5)


@pytest.mark.parametrize("value", [b"0", b"-1", b"two", b"1e9", b"nan", b"inf", b""])
def test_bad_segment_seconds_get_400(served, test_videos, value):
    handler, context = served
    video, script = test_videos[0]
    (status, body), (good, _) = handle(handler, context, [form(video, script, segment_seconds=bytearray(value)),
                                                          form(video, script)])
    assert (status, good) == (400, 200) and "segment_seconds" in body["error"]


def test_window_edges(model_dir, test_videos):
    """A video shorter than one window is one window; max_segments lengthens the windows."""
    handler, context = load_handler(model_dir, {"handler": {"max_segments": 2, "top_k": 3}})
    video, script = test_videos[0]
    (_, long_windows), (_, capped) = handle(handler, context, [
        form(video, script, segment_seconds=bytearray(b"30")), form(video, script, segment_seconds=bytearray(b"0.25"))])
    assert [(w["start"], w["end"]) for w in long_windows["timeline"]] == [(0.0, 2.0)]
    assert long_windows["segment_seconds"] == 30
    assert capped["segment_seconds"] == 1.0 and len(capped["timeline"]) == 2
    assert all(len(window["scores"]) == 3 for window in capped["timeline"])


def test_timeline_in_kserve_v2_and_from_the_setting(model_dir, test_videos):
    handler, context = load_handler(model_dir, {"handler": {"segment_seconds": 1.0}})
    video, script = test_videos[0]
    request = kserve_v2_request(video, script)
    request["inputs"].append({"name": "segment_seconds", "shape": [1], "datatype": "FP32", "data": [0.5]})
    (_, v2), (_, default) = handle(handler, context, [{"body": request}, form(video, script)])
    assert len(json.loads(v2["outputs"][0]["data"][0])["timeline"]) == 4
    assert default["segment_seconds"] == 1.0 and len(default["timeline"]) == 2


def test_several_clips_pool_into_the_video_level_answer(model_dir, test_videos):
    from minimmf.common.sample import SampleList
    from minimmf.datasets.video_clips import SpreadClips

    video, script = test_videos[2]
    for pooling in ("max", "mean"):
        handler, context = load_handler(model_dir, {"handler": {"clips": 3, "clip_pooling": pooling}})
        (_, answer), = handle(handler, context, [form(video, script)])
        maker = handler.predictor.sample_maker
        clips = maker.decode_plan(video, SpreadClips(3, maker.frames_per_clip))
        with torch.inference_mode():
            rows = torch.sigmoid(handler.predictor.model(SampleList([maker.from_clip(c, script) for c in clips]))
                                 ["scores"])
        pooled = rows.max(dim=0).values if pooling == "max" else rows.mean(dim=0)
        for index, name in enumerate(handler.predictor.classes):
            assert answer["scores"][name] == pytest.approx(float(pooled[index]), abs=1e-5)
