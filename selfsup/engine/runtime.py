"""Device, precision and CPU-runtime choices, applied once per process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
from collections.abc import Iterator

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; under torchrun each rank uses LOCAL_RANK's GPU."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}. Valid: {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA GPU is visible to PyTorch")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: bf16 on GPUs that support it, else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}. Valid: {', '.join(PRECISIONS)}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel (Linux only).

    A training step allocates and frees the same large activation and gradient buffers every
    iteration. By default glibc serves blocks above 128 KiB-32 MiB with ``mmap`` and returns them
    on free, so every step page-faults them in again (millions of minor faults per step on a
    2-core CPU; ``benchmarks/throughput.py`` measures the effect). Raising the mmap and trim
    thresholds keeps that memory in the heap for reuse. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get("SELFSUP_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    return bool(ok)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None
