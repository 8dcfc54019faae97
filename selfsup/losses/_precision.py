"""Run a loss in float32 even inside an autocast region.

Under ``torch.autocast`` (bf16 on GPUs and on CPUs with native bf16), matrix products are cast to
bf16 even when their inputs are float32, so ``z.float()`` alone does not keep a loss in float32.
Similarity matrices divided by a temperature, covariance matrices and Sinkhorn's exp(s/ε) need the
precision (bf16 keeps about 3 significant digits), so every loss is wrapped in :func:`float32_loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _device_type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    return "cpu"


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def float32_loss(fn: F) -> F:
    """Decorator: disable autocast and cast floating-point tensor arguments to float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device_type = _device_type(args, kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*(_to_float(a) for a in args), **{k: _to_float(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
