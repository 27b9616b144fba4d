"""What the machine offers for inference, and whether a precision runs well on it.

``detect(device)`` reads the CPU's instruction sets (AMX, AVX512-BF16,
AVX512-VNNI, AVX2) through ``torch.cpu.get_capabilities`` or, for a GPU, its
name, compute capability and whether it computes bfloat16 natively.
``Hardware.advice(precision)`` says in words why a precision would be slow
there (bf16 emulated on a CPU without AMX or AVX512-BF16, a GPU before
Ampere; int8 without VNNI or AMX), or None when it runs at the machine's
speed: serving logs it as a warning rather than run ten times slower in
silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# the CPU features that decide the speed of a precision, strongest first
CPU_FEATURES = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512_f", "avx2")


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" or "cuda:N"
    name: str  # the CPU's or the GPU's name
    features: tuple[str, ...]  # CPU_FEATURES it has; for a GPU, "sm_XY" and "bf16" when native
    cores: int | None = None  # physical CPU cores (CPU only)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def vector_isa(self) -> str:
        """The widest kernels the CPU runs: AMX, AVX512, AVX2 or none of them ("default")."""
        if "amx_bf16" in self.features or "amx_int8" in self.features:
            return "AMX"
        if "avx512_f" in self.features:
            return "AVX512"
        return "AVX2" if "avx2" in self.features else "default"

    def native_bf16(self) -> bool:
        """Whether bfloat16 matrix products run in hardware (AMX or AVX512-BF16; a GPU from Ampere on)."""
        if self.is_cuda:
            return "bf16" in self.features
        return "amx_bf16" in self.features or "avx512_bf16" in self.features

    def native_int8(self) -> bool:
        """Whether int8 matrix products run in hardware (AMX-INT8 or a VNNI instruction set)."""
        return any(feature in self.features for feature in ("amx_int8", "avx512_vnni", "avx_vnni"))

    def advice(self, precision: str) -> str | None:
        """Why ``precision`` would run slowly here, or None when it runs at the machine's speed."""
        if precision == "bf16" and not self.native_bf16():
            where = "a GPU before Ampere (compute capability 8.0)" if self.is_cuda else \
                "a CPU without AMX or AVX512-BF16"
            return (f"precision bf16 on {self.name}: bfloat16 is emulated on {where}, often several times slower "
                    "than fp32; use precision fp32 here")
        if precision == "int8" and not self.is_cuda and not self.native_int8():
            return (f"precision int8 on {self.name}: without AMX or VNNI the int8 kernels are slower than fp32; "
                    "use precision fp32 here")
        return None

    def describe(self) -> dict[str, Any]:
        """The machine in brief, for serving's describe answer and its log."""
        description: dict[str, Any] = {"device": self.device, "name": self.name, "features": list(self.features)}
        if not self.is_cuda:
            description.update(vector_isa=self.vector_isa, cores=self.cores)
        return description


def detect(device: torch.device | str = "cpu") -> Hardware:
    """What ``device`` offers (the CPU's instruction sets, or the GPU's generation)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        features = [f"sm_{major}{minor}"]
        with torch.cuda.device(index):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                features.append("bf16")
        return Hardware(f"cuda:{index}", torch.cuda.get_device_name(index), tuple(features))
    capabilities = torch.cpu.get_capabilities()
    return Hardware("cpu", str(capabilities.get("cpu_name", "CPU")),
                    tuple(feature for feature in CPU_FEATURES if capabilities.get(feature)),
                    capabilities.get("num_physical_cores"))
