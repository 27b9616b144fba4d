"""The serving modes (handler.precision, pt2 compile): each loads, answers
and agrees with fp32 within its documented tolerance on the trained tiny
model; compiled, the batch sizes the handler serves do not compile again
after the warm-up; a setting the handler cannot honour, or a mode the
machine lacks, gets an error or a warning at initialize. The compiled modes
compile for a minute or more each on two cores: marked slow."""

from __future__ import annotations

import logging

import pytest
import torch

from devtools.worker import handle, load_handler
from minimmf.common.sample import SampleList
from minimmf.serving.compiled import SettingsConflict, use_compile_cache, warmup_batch_sizes
from minimmf.serving.predictor import model_inputs
from minimmf.serving.settings import CompileSettings, SettingsError
from minimmf.utils.hardware import Hardware, detect
from tests.test_handler import form, model_dir, test_videos  # noqa: F401 (fixtures)

COMPILE = {"compile": {"enable": True}}
# the largest probability difference from fp32 each mode may have (README, "Precision and compilation")
TOLERANCE = {"fp32": 1e-4, "bf16": 0.02, "int8": 0.02}
MODES = {
    "bf16": {"handler": {"precision": "bf16"}},
    "fp32 compiled": {"pt2": COMPILE, "handler": {"max_model_batch": 16}},
    "bf16 compiled": {"pt2": COMPILE, "handler": {"precision": "bf16", "max_model_batch": 4}},
    "int8 compiled": {"pt2": COMPILE, "handler": {"precision": "int8", "max_model_batch": 4}},
}


@pytest.fixture(scope="module")
def reference(model_dir, test_videos):  # noqa: F811
    handler, context = load_handler(model_dir)
    return handle(handler, context, [form(v, s) for v, s in test_videos])


@pytest.fixture(scope="module", params=list(MODES))
def mode(request, model_dir):  # noqa: F811
    handler, context = load_handler(model_dir, MODES[request.param])
    return request.param, handler, context


@pytest.mark.slow
def test_each_mode_answers_within_its_tolerance_of_fp32(mode, reference, test_videos):  # noqa: F811
    name, handler, context = mode
    answers = handle(handler, context, [form(v, s) for v, s in test_videos])
    tolerance = TOLERANCE[handler.settings.precision]
    for (status, answer), (_, expected) in zip(answers, reference, strict=True):
        assert status == 200
        assert answer["scores"].keys() == expected["scores"].keys()
        assert answer["scores"] == pytest.approx(expected["scores"], abs=tolerance), name
    described = handler.describe_handle()
    assert described["precision"] == handler.settings.precision
    assert described["hardware"]["device"] == "cpu"
    assert bool(described["compiled"]) == name.endswith("compiled")


@pytest.mark.slow
def test_served_batch_sizes_do_not_compile_again(mode):
    """Every batch size up to max_model_batch, and a request's samples in
    several model batches (a timeline's windows), run on the graphs the
    warm-up compiled: a recompile would raise under fail_on_recompile."""
    name, handler, _ = mode
    if not name.endswith("compiled"):
        pytest.skip("eager mode: nothing is compiled")
    predictor = handler.predictor
    warm_up = predictor.runner.describe()["compiled"]["warm_up"]
    assert warm_up["batch_sizes"] == warmup_batch_sizes(handler.settings.max_model_batch)
    assert 1 <= warm_up["graphs"] <= 3
    blank = predictor.sample_maker.blank_sample()
    predictor.runner.stance = "fail_on_recompile"
    try:
        for size in [*range(1, handler.settings.max_model_batch + 1), handler.settings.max_model_batch + 3]:
            assert predictor.predict([blank] * size).shape == (size, len(predictor.classes))
        # tensors made outside inference_mode (a caller other than predict) run on the same graphs
        assert predictor.runner(model_inputs(SampleList([blank] * 2))).shape == (2, len(predictor.classes))
    finally:
        predictor.runner.stance = "eager_on_recompile"


def test_warm_up_sizes_cover_batch_one_two_and_the_powers_of_two():
    assert warmup_batch_sizes(1) == [1]
    assert warmup_batch_sizes(2) == [2, 1]
    assert warmup_batch_sizes(5) == [2, 1, 4, 5]
    assert warmup_batch_sizes(16) == [2, 1, 4, 8, 16]


@pytest.mark.parametrize("section, message", [
    ({"pt2": {"compile": {"enable": "yes"}}}, "pt2.compile.enable must be true or false"),
    ({"pt2": {"compile": {"enable": True, "backend": "openvino"}}}, "pt2.compile.backend 'openvino' is not supported"),
    ({"pt2": {"compile": {"enable": True, "mode": "fast"}}}, "pt2.compile.mode must be one of"),
    ({"pt2": {"compile": {"enable": True, "dynamic": True}}}, "unknown pt2.compile key(s) ['dynamic']"),
    ({"pt2": {"compile": {"enable": True, "mode": "max-autotune", "options": {"freezing": True}}}},
     "takes mode or options, not both"),
    ({"pt2": {"export": {"aot_compile": True}}}, "pt2.export"),
    ({"pt2": [1]}, "pt2 must be a mapping"),
])
def test_bad_pt2_sections_are_refused_naming_the_key(section, message):
    with pytest.raises(SettingsError) as error:
        CompileSettings.from_model_yaml(section)
    assert message in str(error.value)


def test_pt2_sections_in_torchserves_forms(caplog):
    assert CompileSettings.from_model_yaml({}) == CompileSettings(enable=False)
    assert CompileSettings.from_model_yaml({"pt2": {"compile": {"enable": False}}}).enable is False
    settings = CompileSettings.from_model_yaml({"pt2": {"compile": {"enable": True, "mode": "max-autotune"}}})
    assert (settings.enable, settings.backend, settings.torch_kwargs()) == (True, "inductor", {"mode": "max-autotune"})
    with caplog.at_level(logging.WARNING):
        assert CompileSettings.from_model_yaml({"pt2": "inductor"}).enable
    assert "deprecated form" in caplog.text


def test_int8_without_compile_is_refused_at_initialize(model_dir):  # noqa: F811
    with pytest.raises(SettingsConflict) as error:
        load_handler(model_dir, {"handler": {"precision": "int8"}})
    assert "int8 needs pt2: {compile: {enable: true}}" in str(error.value)


def test_a_mode_the_machine_lacks_is_a_warning_at_initialize(model_dir, monkeypatch, caplog):  # noqa: F811
    avx2_only = Hardware("cpu", "an AVX2 CPU", ("avx2",), 2)
    monkeypatch.setattr("minimmf.serving.predictor.detect", lambda device: avx2_only)
    with caplog.at_level(logging.WARNING):
        handler, _ = load_handler(model_dir, {"handler": {"precision": "bf16"}})
    assert "bfloat16 is emulated on a CPU without AMX or AVX512-BF16" in caplog.text
    assert handler.describe_handle()["hardware"]["vector_isa"] == "AVX2"


def test_hardware_advice():
    amx = Hardware("cpu", "Xeon", ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_f", "avx2"), 2)
    assert amx.vector_isa == "AMX" and amx.advice("bf16") is None and amx.advice("int8") is None
    assert "without AMX or VNNI" in Hardware("cpu", "old", ("avx2",)).advice("int8")
    assert "before Ampere" in Hardware("cuda:0", "T4", ("sm_75",)).advice("bf16")
    assert Hardware("cuda:0", "A100", ("sm_80", "bf16")).advice("bf16") is None
    here = detect("cpu")
    assert here.device == "cpu" and here.describe()["vector_isa"] in ("AMX", "AVX512", "AVX2", "default")
    assert torch.cpu.get_capabilities()["avx2"] == ("avx2" in here.features)


def test_compile_cache_dir_is_where_inductor_keeps_its_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test
    assert use_compile_cache(str(tmp_path / "inductor")) == tmp_path / "inductor"
    assert (tmp_path / "inductor").is_dir()
    with pytest.raises(SettingsConflict, match="must be an absolute path"):
        use_compile_cache("relative/cache")
