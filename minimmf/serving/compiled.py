"""How the predictor's model runs: in its precision (fp32, bf16 or int8),
eager or, with model-config.yaml's ``pt2: {compile: {enable: true}}``,
compiled by ``torch.compile`` (Inductor, with freezing: weights folded into
the graph and prepacked for oneDNN), and warmed up at ``initialize`` so that
no request pays for compilation.

One compiled graph serves every batch size from 2 up (the batch dimension is
dynamic); batch 1 and the sizes where a kernel choice changes (oneDNN's
convolutions switch at 16 in fp32) get their own graph. The warm-up runs
the sizes that find them all (``warmup_batch_sizes``); after it, a batch
that would compile again runs eagerly instead (``eager_on_recompile``), so
a request never waits for the compiler. Inductor keeps what it compiled in
its on-disk cache (``handler.compile_cache_dir``, else
``$TORCHINDUCTOR_CACHE_DIR``, else ``/tmp/torchinductor_<user>``): a
restarted or second worker on the machine reuses the compiled kernels.

int8 is PyTorch's own x86 path: the model exported with ``torch.export``,
quantized by torchao's PT2E ``X86InductorQuantizer`` (dynamic: int8 weights,
activations quantized per batch, no calibration data needed), then lowered
by Inductor's freezing passes to oneDNN int8 kernels (VNNI/AMX).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from minimmf.serving.settings import CompileSettings
from minimmf.utils.hardware import Hardware

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}
MAX_EXPORT_BATCH = 1024  # the int8 graph's batch dimension ranges over 1..this


class SettingsConflict(ValueError):
    """A precision and a pt2 section that cannot work together (raised at initialize)."""


class ScoresOf(nn.Module):
    """The model as one function of a dict of tensors that returns the scores:
    what is compiled or exported (no SampleList, no losses, one output)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model.forward(inputs)["scores"]


def warmup_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes the warm-up runs: 2 first (its graph has a dynamic batch
    dimension), 1 (always a graph of its own), then the powers of two and
    ``max_batch``, which find the sizes where a kernel choice changes."""
    sizes = [2, 1] + [2 ** power for power in range(2, max_batch.bit_length())] + [max_batch]
    return [size for index, size in enumerate(sizes) if size <= max_batch and size not in sizes[:index]]


def use_compile_cache(directory: str | None) -> Path:
    """Point Inductor's on-disk cache at ``directory`` (None: keep
    ``$TORCHINDUCTOR_CACHE_DIR`` or torch's default) and return where it is."""
    if directory is not None:
        path = Path(directory).expanduser()
        if not path.is_absolute():
            raise SettingsConflict(f"handler.compile_cache_dir must be an absolute path (the worker runs in a "
                                   f"temporary folder), not {directory!r}")
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())


def quantized_int8(module: nn.Module, example: dict[str, Tensor]) -> nn.Module:
    """``module`` exported and quantized by PT2E's X86 Inductor quantizer
    (dynamic int8 linear layers): a graph that Inductor lowers to oneDNN's int8
    kernels when it is compiled with freezing."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    dynamic_shapes = {"inputs": {name: {0: batch} for name in example}}
    exported = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes).module()
    class LinearQuantizer(X86InductorQuantizer):
        """The X86 quantizer for linear layers only: dynamic int8 is for them,
        and torchao 0.18 fails on the residual conv+add+relu patterns of the
        audio encoder ("Input partition has more than one output node")."""

        def _annotate_conv2d_fusion_pattern(self, *args: Any, **kwargs: Any) -> None:
            return None

    config = get_default_x86_inductor_quantization_config(is_dynamic=True)
    quantizer = LinearQuantizer().set_module_type_qconfig(nn.Linear, config)
    prepared = prepare_pt2e(exported, quantizer)
    prepared(example)
    return convert_pt2e(prepared)


class ModelRunner:
    """Batches of tensors -> the model's scores, in ``precision``, compiled as
    ``compile_settings`` says and warmed up on ``example(batch_size)``
    inputs, on ``hardware``."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str, compile_settings: CompileSettings,
                 hardware: Hardware, example: Callable[[int], dict[str, Tensor]], max_batch: int,
                 cache_dir: str | None = None):
        check_supported(precision, compile_settings, hardware)
        advice = hardware.advice(precision)
        if advice:
            logger.warning(advice)
        self.device, self.precision, self.hardware = device, precision, hardware
        self.dtype = DTYPES[precision]
        self.compile_settings = compile_settings
        self.cache_dir: Path | None = None
        # after the warm-up, a batch that would compile runs eagerly (tests set "fail_on_recompile")
        self.stance = "eager_on_recompile"
        self.warm_up: dict[str, Any] = {}
        module: nn.Module = ScoresOf(model)
        if precision == "int8":
            module = quantized_int8(module, self.cast(example(2)))
        self.eager = module
        self.forward: Callable[[dict[str, Tensor]], Tensor] = module
        if compile_settings.enable:
            self.cache_dir = use_compile_cache(cache_dir)
            self.forward = torch.compile(module, backend=compile_settings.backend, **compile_settings.torch_kwargs())
            self.warm_up = self.run_warm_up(example, warmup_batch_sizes(max_batch))
        logger.info("model runs in %s on %s (%s), %s", precision, device, ", ".join(hardware.features) or "no "
                    "vector extensions", f"compiled ({self.warm_up})" if compile_settings.enable else "eager")

    def cast(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``inputs`` on the model's device, floating-point ones in its dtype."""
        return {name: value.to(self.device, self.dtype if value.is_floating_point() else value.dtype,
                               non_blocking=True) for name, value in inputs.items()}

    def __call__(self, inputs: dict[str, Tensor]) -> Tensor:
        """Scores (batch, classes) as float32, on the model's device, computed
        under inference_mode (the warm-up's mode: the compiled graphs are
        guarded on it and on their inputs being inference tensors)."""
        with torch.inference_mode():
            inputs = self.cast(inputs)
            if not self.compile_settings.enable:
                return self.forward(inputs).float()
            inputs = {name: value if value.is_inference() else value.clone() for name, value in inputs.items()}
            with torch.compiler.set_stance(self.stance):
                return self.forward(inputs).float()

    def run_warm_up(self, example: Callable[[int], dict[str, Tensor]], sizes: list[int]) -> dict[str, Any]:
        """Compile on each of ``sizes`` (Inductor with freezing); how long it
        took and how many graphs it made."""
        from torch._dynamo.utils import counters

        graphs, started = counters["stats"]["unique_graphs"], time.perf_counter()
        with torch.inference_mode(), torch._inductor.config.patch(freezing=True):
            for size in sizes:
                inputs = self.cast(example(size))
                for value in inputs.values():
                    torch._dynamo.mark_dynamic(value, 0)
                self.forward(inputs)
        seconds = round(time.perf_counter() - started, 1)
        return {"batch_sizes": sizes, "graphs": counters["stats"]["unique_graphs"] - graphs, "seconds": seconds}

    def describe(self) -> dict[str, Any]:
        """The precision, whether and how the model is compiled, and the machine."""
        compiled: dict[str, Any] | bool = False
        if self.compile_settings.enable:
            compiled = {"backend": self.compile_settings.backend, "mode": self.compile_settings.mode,
                        "cache_dir": str(self.cache_dir), "warm_up": self.warm_up}
        return {"precision": self.precision, "compiled": compiled, "hardware": self.hardware.describe()}


def check_supported(precision: str, compile_settings: CompileSettings, hardware: Hardware) -> None:
    """A SettingsConflict for a precision this machine or these settings cannot run."""
    if precision != "int8":
        return
    if hardware.is_cuda:
        raise SettingsConflict("handler.precision int8 is PyTorch's x86 CPU path (PT2E, oneDNN kernels); on a GPU "
                               "use precision bf16")
    if not compile_settings.enable:
        raise SettingsConflict("handler.precision int8 needs pt2: {compile: {enable: true}} in model-config.yaml: "
                               "Inductor turns the quantized graph into int8 kernels (uncompiled it runs slower "
                               "than fp32)")
