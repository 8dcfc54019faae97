"""Ranges of settings, declared once and checked with one message format.

A :class:`Range` says which values a setting takes (an interval, open or closed at either end, or a set
of choices); tuples are checked element by element. Run and augmentation settings declare theirs in
:mod:`selfsup.validate`, methods in ``Method.ranges``. Every float must also be finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from selfsup.config import ConfigError


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where open; None: unbounded), or one of ``choices``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"

    def contains(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``key`` unless ``value`` (or each of its items) is in range."""
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if item is None:
                continue
            if not self.contains(item):
                shown = f"{value!r}" if item is value else f"{value!r} (the item {item!r})"
                raise ConfigError(f"{key}={shown} is out of range: it must be {self.describe()}")


POSITIVE = Range(0, None, low_open=True)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)
FRACTION = Range(0, 1, low_open=True)
"""(0, 1]: a crop scale, a ratio of sizes."""
FINITE = Range()


def at_least(low: float) -> Range:
    return Range(low)


def one_of(*choices: Any) -> Range:
    return Range(choices=tuple(choices))


def check_finite(key: str, value: Any) -> None:
    """Every float, also inside tuples, must be finite (``nan`` and ``inf`` parse as floats)."""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{key}={value!r}: the value must be a finite number")


def check_interval(key: str, value: Any, within: Range = FRACTION) -> None:
    """A ``(low, high)`` pair with ``low <= high``, both in ``within`` (crop scales, blur sigmas ...)."""
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{key}={value!r}: expected two values, low,high")
    within.check(key, value)
    if value[0] > value[1]:
        raise ConfigError(f"{key}={value!r}: the low end must not exceed the high end")
