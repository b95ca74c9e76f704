"""Device and precision choice, made once for every stage that runs a model.

bf16 is a large win on CPUs with AMX or AVX512-BF16 (matrix products ~3x faster than fp32
on such a CPU) and a large loss on CPUs without them, where it is emulated. So "auto"
reads what the CPU reports rather than guessing. fp16 is never chosen automatically: T5
overflows to NaN in fp16.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from genq.io import GenqError

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # the CPU does bf16 matrix products in hardware


@functools.lru_cache(maxsize=1)
def cpu_description() -> dict[str, str | int]:
    """The first processor's /proc/cpuinfo fields ("model name", "cpu family", "model", "flags"...) and
    ``processors``, their count; empty where the file does not exist (not Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return {}
    fields: dict[str, str | int] = {}
    processors = 0
    for line in cpuinfo.read_text(errors="replace").splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "processor":
            processors += 1
        elif processors == 1 and name:
            fields[name] = value.strip()
    return {**fields, "processors": processors}


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    return frozenset(str(cpu_description().get("flags", "")).split())


def cpu_has_fast_bf16() -> bool:
    """True where the CPU does bf16 matrix products natively (AMX or AVX512-BF16)."""
    if os.environ.get("GENQ_NO_BF16"):
        return False
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def resolve_device(device: str | None = None) -> str:
    """``None``/"auto" picks cuda, then mps, then cpu; an explicit device is checked."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenqError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenqError("device 'mps' was asked for but MPS is not available here; use --device cpu")
    return device


def resolve_dtype(dtype: str | None, device: str):
    """Map a dtype name (or "auto") to a torch dtype suited to ``device``."""
    import torch

    if dtype in (None, "", "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise GenqError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return table[dtype]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def training_bf16(requested: bool | None, device: str | None = None) -> bool:
    """Whether training runs under bf16 autocast: as asked, else where the device does bf16 natively.

    CUDA cards with bf16, and CPUs with AMX or AVX512-BF16 (there bf16 matrix products run
    1.5-3x faster than float32; elsewhere emulated bf16 is slower than float32, so never by
    default). MPS and other devices train in float32.
    """
    if requested is not None:
        return requested
    import torch

    device = resolve_device(device)
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return device == "cpu" and cpu_has_fast_bf16()
