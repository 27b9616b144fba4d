"""What the benchmarks share: where things are, the machine line and the
result files, timing and memory helpers, fresh measuring processes, the test
videos, the demo model and data, TorchServe set-up and the requests sent to it.

Benchmarks import this module, the package and ``devtools``, never each other.
The package (and so torch) is imported inside the functions that need it:
the data-loading worker pins itself to one core before torch loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from minimmf.serving.torchserve import TorchServe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache"  # generated videos and random weights, kept between runs
SHARED_DATA = ROOT.parent / "shared" / "data"
DIRECT_CONFIG = ROOT / "projects/mmf_transformer/configs/charades/direct.yaml"
FULL_CONFIG = ROOT / "config.yaml"  # MMF's Charades experiment, as the example ships it
MODEL_CONFIG = ROOT / "model-config.yaml"
HANDLER = ROOT / "handler.py"
TS_CONFIG = ROOT / "config.properties"
SCRIPT = "A person opens the door, then sits down on the sofa and watches television."


# ---------------------------------------------------------- machine, results


def machine(runtime: str = "torch", threads: bool = False) -> str:
    """This machine in one line: architecture, cores, and torch's version
    (``runtime="torch"``, with its thread count if ``threads``) or Python's."""
    parts = [platform.machine(), f"{os.cpu_count()} cores"]
    if runtime == "python":
        parts.append(f"Python {platform.python_version()}")
    else:
        import torch

        parts.append(f"torch {torch.__version__}")
        if threads:
            parts.append(f"{torch.get_num_threads()} threads")
    return ", ".join(parts)


def saved_results(name: str) -> dict[str, Any]:
    """The report last saved as bench/results/``name``.json, or an empty one."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(name: str, report: dict[str, Any]) -> Path:
    """Write ``report`` to bench/results/``name``.json; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=1))
    return path


# --------------------------------------------- precision and compilation

# the serving modes the benchmarks compare: handler.precision, and pt2 compile on or off
MODES = {
    "fp32": ("fp32", False),
    "fp32 compiled": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16 compiled": ("bf16", True),
    "int8 compiled": ("int8", True),
}


def mode_runner(model: Any, mode: str, example: Callable[[int], dict], max_batch: int) -> Any:
    """``model`` (fp32, eval) run as the handler runs it in ``mode`` (a key of
    MODES), on the CPU: ``runner(inputs)`` gives the scores; compiled ones are
    warmed up on batch sizes 1..``max_batch`` (``runner.warm_up`` says how)."""
    import torch

    from minimmf.serving.compiled import DTYPES, ModelRunner
    from minimmf.serving.settings import CompileSettings
    from minimmf.utils.hardware import detect

    precision, compiled = MODES[mode]
    if compiled:
        # Dynamo's recompile limit (8 graphs per function) counts every model compiled in this process:
        # past it, a compiled mode would silently run eagerly
        torch._dynamo.reset()
    model = model.prepare_for_inference(dtype=DTYPES[precision], compiled=compiled)
    return ModelRunner(model, torch.device("cpu"), precision, CompileSettings(enable=compiled), detect("cpu"),
                       example, max_batch)


def tensors(batch: Any) -> dict:
    """The tensors of a SampleList: what a ModelRunner takes."""
    import torch

    return {name: value for name, value in batch.items() if isinstance(value, torch.Tensor)}


def peaks_line(peaks: dict[str, float]) -> str:
    """The measured peaks, for a benchmark's heading."""
    return "measured peaks (GFLOP/s): " + ", ".join(f"{name} {value:.0f}" for name, value in peaks.items())


def machine_peaks(repeats: int) -> dict[str, float]:
    """The machine's dense throughput in GFLOP/s (GOP/s for int8), measured
    now: large matmuls in fp32, bf16 and int8 (``torch._int_mm``, oneDNN's
    VNNI/AMX kernels) and channels-last 3-D convolutions in fp32 and bf16."""
    import torch

    peaks: dict[str, float] = {}
    for size in (2048, 4096):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            gflops = 2 * size**3 / median_seconds(lambda a=a, b=b: a @ b, repeats) / 1e9
            peaks[f"matmul_{name}"] = max(peaks.get(f"matmul_{name}", 0.0), gflops)
        a = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        b = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        gops = 2 * size**3 / median_seconds(lambda a=a, b=b: torch._int_mm(a, b), repeats) / 1e9
        peaks["matmul_int8"] = max(peaks.get("matmul_int8", 0.0), gops)
    for channels, kernel, shape in ((64, (1, 3, 3), (4, 64, 8, 56, 56)), (128, (3, 3, 3), (2, 128, 8, 28, 28))):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            conv = torch.nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel)).eval()
            conv = conv.to(dtype=dtype, memory_format=torch.channels_last_3d)
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
            flops = 2 * channels * kernel[0] * kernel[1] * kernel[2] * x.numel()
            with torch.inference_mode():
                gflops = flops / median_seconds(lambda conv=conv, x=x: conv(x), repeats) / 1e9
            peaks[f"conv3d_{name}"] = max(peaks.get(f"conv3d_{name}", 0.0), gflops)
    return peaks


def own_peak(peaks: dict[str, float], mode: str) -> float:
    """The peak a mode is measured against: its precision's best (int8 mode:
    its int8 matmul peak, although its convolutions stay in fp32)."""
    precision = MODES[mode][0]
    return max(value for name, value in peaks.items() if name.endswith(precision))


# ----------------------------------------------------------- time, memory


def timings(function: Callable[[], Any], repeats: int, warm_up: bool = True) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``function``, after one untimed
    call that pays the first-call costs (unless ``warm_up`` is False)."""
    if warm_up:
        function()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def median_seconds(function: Callable[[], Any], repeats: int) -> float:
    """The median of ``timings(function, repeats)``."""
    return statistics.median(timings(function, repeats))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_checked(command: list[str]) -> subprocess.CompletedProcess:
    """``command`` run from the repository root, its output captured; raises
    with the end of what it printed when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise RuntimeError(f"{' '.join(command[:3])} ... failed (exit {result.returncode}):\n{output}")
    return result


def run_module(module: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process from the repository root
    (its own peak memory and threads), its output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def last_json_line(output: str) -> Any:
    """What a worker process printed last, as JSON (libraries may print before it)."""
    return json.loads(output.strip().splitlines()[-1])


# ------------------------------------------------------------ test inputs


def make_video(seconds: int, width: int = 854, height: int = 480, fps: int = 30,
               key_frame_seconds: int | None = None) -> Path:
    """An H.264 + AAC video with motion and sound, cached between runs
    (``key_frame_seconds``: a key frame exactly that often, as a camera writes)."""
    import numpy as np

    from minimmf.utils.video_writer import tone, write_video

    keys = f"_key{key_frame_seconds}s" if key_frame_seconds else ""
    path = CACHE / f"h264_aac_{seconds}s_{height}p{keys}.mp4"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(seconds).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    frames = (np.roll(base, shift=index * 4, axis=1) for index in range(seconds * fps))
    options = {"preset": "ultrafast", "crf": "28"}
    if key_frame_seconds:
        interval = key_frame_seconds * fps
        options["x264-params"] = f"keyint={interval}:min-keyint={interval}:scenecut=0"
    write_video(path, frames, fps=fps, audio=tone(seconds, 48000, amplitude=0.3, channels=2), audio_rate=48000,
                video_options=options)
    return path


def multipart(video: bytes, script: str, filename: str = "v.mp4", **fields: str) -> dict[str, tuple]:
    """The form request.py sends: the video, its script and any other fields
    (``segment_seconds="2.0"``)."""
    return {"data": (filename, video), "script": (None, script), **{key: (None, value)
                                                                    for key, value in fields.items()}}


# ------------------------------------------------------ demo model and data


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save", help="the trained run (default: save/)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="its data (default: data/)")


def run_file(save_dir: Path, role: str) -> Path | None:
    """The file of ``role`` (weights, config, labels, vocabulary) of the run
    in ``save_dir``, as its manifest (or, without one, the old names) says."""
    from minimmf.serving.model_files import run_manifest

    return run_manifest(save_dir).path(save_dir, role)


def has_demo_model(save_dir: Path, data_dir: Path) -> bool:
    """Whether ``save_dir`` holds a trained run and ``data_dir`` its test split."""
    from minimmf.datasets.builders.charades.layout import CharadesLayout

    try:
        weights = run_file(save_dir, "weights")
    except FileNotFoundError:  # no config.yaml: nothing trained there
        return False
    test_split = CharadesLayout.default(data_dir).annotations["test"][0]
    return weights is not None and weights.is_file() and test_split.is_file()


def require_demo_model(save_dir: Path, data_dir: Path) -> bool:
    """``has_demo_model``, saying what to do when not."""
    if has_demo_model(save_dir, data_dir):
        return True
    print(f"error: needs the demo model and data ({save_dir}, {data_dir}); run `make demo` (or "
          "scripts/make_synthetic_charades.py and scripts/train.sh) first", file=sys.stderr)
    return False


def demo_requests(data_dir: Path, count: int) -> list[tuple[bytes, str]]:
    """(video bytes, script) of the first ``count`` held-out videos of the demo data."""
    from minimmf.datasets.builders.charades.layout import CharadesLayout

    df = CharadesLayout.default(data_dir).read_split("test")
    return [(Path(row.path).read_bytes(), row.script) for row in df.head(count).itertuples()]


def full_size_model(workdir: Path) -> tuple[Path, Path]:
    """A run folder for MMF's Charades experiment (config.yaml, a 157-class
    labels file) and random weights for it (cached): pass them as
    ``archive(save_dir, ..., weights=weights)``."""
    import pandas as pd
    import torch

    from minimmf.datasets.builders.charades.layout import write_action_labels_csv
    from minimmf.utils.build import build_model
    from minimmf.utils.configuration import build_config

    CACHE.mkdir(parents=True, exist_ok=True)
    weights = CACHE / "mmf_transformer_charades_random.pth"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.save(build_model(build_config(FULL_CONFIG)).state_dict(), weights)
    save_dir = workdir / "full_save"
    save_dir.mkdir(exist_ok=True)
    (save_dir / "config.yaml").write_text(FULL_CONFIG.read_text())
    classes = [f"Action {index:03d}" for index in range(157)]
    write_action_labels_csv(pd.DataFrame({"action_labels": [classes]}), save_dir / "charades_action_labels.csv")
    return save_dir, weights


# ------------------------------------------------------------- TorchServe


def edited_model_config(path: Path, edits: dict[str, Any], source: Path = MODEL_CONFIG) -> Path:
    """A copy of model-config.yaml at ``path`` with ``edits`` (dotted keys:
    ``{"handler.clips": 3}``), edited as YAML and checked as the handler checks
    it. Every key must already be in ``source``: one renamed there fails here
    instead of leaving the copy silently unedited."""
    from minimmf.serving.settings import HandlerSettings

    config = yaml.safe_load(source.read_text())
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        section = config
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if not isinstance(section, dict) or key not in section:
            raise KeyError(f"{source} has no {dotted}: update the benchmark to the current setting names")
        section[key] = value
    HandlerSettings.from_model_yaml(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def archive(save_dir: Path, store: Path, name: str = "MMF_model", model_config: Path = MODEL_CONFIG,
            weights: Path | None = None, folder: bool = False) -> Path:
    """The run in ``save_dir`` archived into ``store`` with the project's
    handler (``weights`` replace the run's own; ``folder``: unzipped)."""
    from minimmf.serving.torchserve import archive_model

    return archive_model(save_dir, store, weights=weights, model_config=model_config, handler=HANDLER, name=name,
                         folder=folder)


@contextlib.contextmanager
def torchserve(workdir: Path, store: Path) -> Iterator[TorchServe]:
    """A running private TorchServe (free loopback ports, config.properties'
    settings, token authorization on) on ``store``; stopped on the way out."""
    from minimmf.serving.torchserve import TorchServe

    store.mkdir(parents=True, exist_ok=True)  # torchserve refuses a missing model store
    serve = TorchServe.private(workdir, store, TS_CONFIG)
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


def register(serve: TorchServe, url: str, name: str = "MMF_model", **overrides: Any) -> None:
    """Register ``url`` as ``name`` (``overrides``: the registration API's
    parameters, over model-config.yaml's); raise when TorchServe refuses."""
    response = serve.register(url, name=name, **overrides)
    if response.status_code != 200:
        raise RuntimeError(f"registering {name} failed: HTTP {response.status_code} {response.text[:300]}")
