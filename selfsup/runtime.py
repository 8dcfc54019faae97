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


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it.

    Without native support, bf16 autocast on the CPU is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of a settled precision (``fp32``: None, no autocast)."""
    if name not in PRECISIONS or name == "auto":
        raise ValueError(f"precision {name!r} is not a settled precision. Valid: fp32, bf16, fp16")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def precision_candidates(setting: str, device: torch.device) -> list[str]:
    """The precisions ``setting`` allows on ``device``: itself when explicit; for ``auto``, float32 and, where
    the device computes bf16 natively (CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX), bf16.
    Emulated bf16 is slower than float32, so it is not a candidate."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown precision {setting!r}. Valid: {', '.join(PRECISIONS)}")
    if setting != "auto":
        return [setting]
    native = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
        device.type == "cpu" and cpu_bf16_supported()
    )
    return ["fp32", "bf16"] if native else ["fp32"]


def channels_last_candidates(setting: str, device: torch.device) -> list[bool]:
    """The memory formats ``setting`` allows on ``device`` (``channels_last`` only helps the CPU and CUDA)."""
    if device.type not in ("cpu", "cuda"):
        return [False]
    return [False, True] if setting == "auto" else [setting == "true"]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


_KEEP_FREED = 1 << 30  # 1 GiB: above every buffer of a training step at the sizes we run


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel (Linux only). Idempotent.

    A training step allocates and frees the same large activation and gradient buffers every
    iteration. By default glibc serves blocks above 128 KiB-32 MiB (its dynamic mmap threshold) with
    ``mmap`` and returns them on free, so every step page-faults them in again: 3.1 million minor
    faults per step and 29 % of the CPU time in the kernel for ResNet-18 at 32 px with the CIFAR stem,
    batch 256, on 2 cores. Raising the mmap and trim thresholds to 1 GiB keeps that memory in the heap
    for reuse: 0 faults per step, +58 % images/s (``docs/performance.md``). Setting them with
    ``mallopt`` at run time works as well as the ``MALLOC_*_`` environment variables at start-up
    (measured), so the process is not re-executed. The cost is that freed memory stays resident
    (peak RSS +1 GiB at that setting). ``SELFSUP_NO_MALLOPT=1`` turns it off (the benchmark's
    conventional baseline). Returns whether it is in force.
    """
    if not sys.platform.startswith("linux") or os.environ.get("SELFSUP_NO_MALLOPT", "") not in ("", "0"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_FREED) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED) == 1
    return bool(ok)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def freed_memory_kept(probe_bytes: int = 64 << 20) -> bool | None:
    """Whether :func:`keep_freed_memory` is in force in this process, observed rather than remembered.

    ``malloc`` of a block larger than every free block of the heap (``mallinfo2().fordblks``) and than
    glibc's own dynamic mmap threshold (which rises to at most 32 MiB) is served by ``mmap``
    (``mallinfo2().hblkhd`` grows) unless the mmap threshold was raised above it. The block is never
    touched, so probing costs no memory. None where glibc's ``mallinfo2`` is missing, or where the free
    heap is too large for a conclusive probe."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    info = mallinfo2()
    size = max(probe_bytes, info.fordblks + (1 << 20))
    if size >= _KEEP_FREED:
        return None
    pointer = libc.malloc(size)
    mapped = mallinfo2().hblkhd - info.hblkhd
    libc.free(pointer)
    return mapped < size


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def machine() -> dict[str, object]:
    """Where a measurement ran: CPU model, cores available to this process, the CPU's bf16 features, the
    GPU if any, and the torch version. Every benchmark that prints a speed records this."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    info: dict[str, object] = {
        "cpu": model,
        "cores": cores,
        "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "cpu_bf16_native": cpu_bf16_supported(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def machine_line(info: dict[str, object] | None = None) -> str:
    """:func:`machine` as one line, e.g. ``Intel(R) Xeon(R) Processor, 2 cores, amx_bf16+avx512_bf16, torch 2.14.1``."""
    info = info or machine()
    bf16 = "+".join(info["cpu_bf16"]) or "no native bf16"  # type: ignore[arg-type]
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{info['cpu']}, {info['cores']} cores, {bf16}, torch {info['torch']}{gpu}"
