"""Run a loss in float32 even inside an autocast region: the one way every loss module does it.

Under ``torch.autocast`` (bf16 on GPUs and on CPUs with native bf16), matrix products are cast to
bf16 even when their inputs are float32, so ``z.float()`` alone does not keep a loss in float32.
Similarity matrices divided by a temperature, covariance matrices, Cholesky whitening and Sinkhorn's
exp(s/ε) need the precision (bf16 keeps about 3 significant digits), so every loss is wrapped in
:func:`float32_loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _device_type(values: list[Any]) -> str:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)):
            inner = _device_type(list(value))
            if inner != "":
                return inner
    return ""


def at_least_float32(value: Any) -> Any:
    """Half and bf16 tensors (also inside lists and tuples) as float32; float32, float64 and the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _LOW_PRECISION else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(at_least_float32(v) for v in value)
    return value


def float32_loss(fn: F) -> F:
    """Decorator: disable autocast and compute in at least float32 (half and bf16 tensor arguments, also in
    lists and tuples, are cast to float32; float64 stays float64)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device_type = _device_type([*args, *kwargs.values()]) or "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*(at_least_float32(a) for a in args), **{k: at_least_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
