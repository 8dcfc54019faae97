"""Runtime choices settled by measurement on the machine that runs: precision and memory format.

Which of float32 and bf16 autocast, and of the contiguous and ``channels_last`` memory formats, gives the
fastest training step depends on the CPU (AMX or AVX512-BF16, the oneDNN kernels it gets) and on the
model's geometry. Measured with ``benchmarks/throughput.py`` at the demo setting (ResNet-10, 32 px, batch
128): bf16 was 1.5x float32 on a 2-core AMD EPYC with AVX512-BF16, but no faster (sometimes slower) on a
2-core Intel Xeon with AMX-BF16, where it was 1.85x at the CIFAR stem; CPC's GroupNorm patch encoder was
2x slower in ``channels_last``. No fixed default is right everywhere, so ``precision=auto`` and
``channels_last=auto`` are settled at the start of a run:

1. the candidates are every combination of the settings left at ``auto``: precision from float32 and
   (where the device computes it natively) bf16, memory format from contiguous and ``channels_last``;
2. each candidate trains a copy of the real model, with a fresh optimizer of the real recipe, on the same
   first real batches of the run, from the same random state: ``WARMUP_STEPS`` untimed steps (kernel
   selection, oneDNN's JIT), then ``TIMED_STEPS`` timed ones, the candidates taking turns step by step; a
   candidate's time is its fastest step. The run's model, optimizer and random state are untouched;
3. a candidate qualifies when every loss it computed is finite and, for a bf16 candidate, agrees with the
   float32 candidate's loss at the same step: ``|loss - loss_fp32| <= LOSS_TOLERANCE * |loss_fp32| +
   LOSS_FLOOR``;
4. the fastest qualifying candidate wins (ties within noise are broken by speed all the same; both are
   equally good). Under ``torchrun`` the step times and verdicts are all-reduced, so every rank chooses
   the same.

The trial costs ``(WARMUP_STEPS + TIMED_STEPS)`` steps per candidate, at most 4 candidates: 16 steps, about
3 s of the demo's 10 minutes. The choice is printed, written into ``config.json`` in place of ``auto`` (so
``--resume`` reuses it and stays exact) and reported, with every candidate's speed, in ``summary.json``. A
setting given explicitly (``--set precision=fp32``) is never second-guessed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from selfsup import distributed as dist

WARMUP_STEPS = 1
TIMED_STEPS = 3
LOSS_TOLERANCE = 0.05
LOSS_FLOOR = 0.01
"""Agreement of a bf16 trial loss with float32's: ``|loss - loss_fp32| <= 0.05 * |loss_fp32| + 0.01``. bf16 keeps
about 3 significant digits: over the trial's 4 steps at the cpu preset the largest relative difference was
0.014 (SimCLR) for every method whose loss is not near 0 (``benchmarks/runtime_choice.py`` on the Intel Xeon);
SimSiam's loss starts near 0 (-0.005), where float32 itself differs by 5 % between memory formats, hence the
absolute floor. A broken kernel gives NaN or a loss off by far more."""


@dataclass(frozen=True)
class Candidate:
    """One combination of the runtime choices."""

    precision: str  # "fp32" or "bf16"
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{self.precision}/{'channels_last' if self.channels_last else 'contiguous'}"


@dataclass
class TrialResult:
    candidate: Candidate
    seconds_per_step: float = math.inf
    losses: list[float] = field(default_factory=list)
    finite: bool = True
    agrees: bool = True
    error: str = ""

    @property
    def qualifies(self) -> bool:
        return self.finite and self.agrees and math.isfinite(self.seconds_per_step)

    def as_dict(self) -> dict[str, object]:
        return {
            "candidate": self.candidate.label,
            "seconds_per_step": round(self.seconds_per_step, 5),
            "losses": [round(v, 6) for v in self.losses],
            "qualifies": self.qualifies,
            **({"error": self.error} if self.error else {}),
        }


def candidates(precisions: list[str], channels_last: list[bool]) -> list[Candidate]:
    """Every combination, float32 first (the reference the others' losses are checked against)."""
    ordered = sorted(set(precisions), key=lambda p: p != "fp32")
    return [Candidate(p, c) for p in ordered for c in channels_last]


StepRunner = Callable[[int], float]
"""Runs trial step ``i`` of one candidate (forward, backward, optimizer step) and returns its loss."""


def measure(
    options: list[Candidate],
    runners: list[StepRunner],
    sync: Callable[[], None],
    warmup: int = WARMUP_STEPS,
    timed: int = TIMED_STEPS,
) -> list[TrialResult]:
    """Run ``warmup`` untimed steps of every candidate, then ``timed`` rounds of one step of each candidate in
    turn; a candidate's time is its fastest step. Interleaving the candidates (rather than timing one after
    the other) means a burst of load from another process slows one step of each, not all steps of one.
    A step that raises (a non-finite loss detected by the engine, a kernel error) disqualifies its candidate."""
    results = [TrialResult(option) for option in options]
    times: list[list[float]] = [[] for _ in options]

    def run(k: int, i: int) -> None:
        result = results[k]
        if not result.finite:
            return
        try:
            sync()
            start = time.perf_counter()
            result.losses.append(runners[k](i))
            sync()
            times[k].append(time.perf_counter() - start)
        except (RuntimeError, FloatingPointError) as err:
            result.finite, result.error = False, f"{type(err).__name__}: {err}".splitlines()[0][:200]

    for k in range(len(options)):
        for i in range(warmup):
            run(k, i)
        times[k].clear()
    for i in range(warmup, warmup + timed):
        for k in range(len(options)):
            run(k, i)
    for result, steps in zip(results, times):
        result.finite = result.finite and all(math.isfinite(v) for v in result.losses)
        result.seconds_per_step = min(steps) if result.finite and steps else math.inf
    return results


def check_agreement(results: list[TrialResult], tolerance: float = LOSS_TOLERANCE, floor: float = LOSS_FLOOR) -> None:
    """Mark the bf16 candidates whose losses stray from the float32 candidate's (see :data:`LOSS_FLOOR`)."""
    reference = next((r for r in results if r.candidate.precision == "fp32" and r.finite), None)
    if reference is None:
        return
    for result in results:
        if result.candidate.precision == "fp32" or not result.finite:
            continue
        pairs = zip(result.losses, reference.losses)
        result.agrees = all(abs(a - b) <= tolerance * abs(b) + floor for a, b in pairs)


def agree_across_ranks(results: list[TrialResult]) -> None:
    """Make every rank see the same verdicts and times: the slowest rank's time, the strictest verdict."""
    if not dist.is_distributed():
        return
    times = torch.tensor([r.seconds_per_step if r.qualifies else math.inf for r in results], dtype=torch.float64)
    torch.distributed.all_reduce(times, op=torch.distributed.ReduceOp.MAX)
    for result, seconds in zip(results, times.tolist()):
        result.seconds_per_step = seconds  # inf where any rank disqualified it: then it qualifies nowhere


def choose(results: list[TrialResult]) -> TrialResult:
    """The fastest qualifying candidate; float32 (the first candidate) when none qualifies."""
    qualifying = [r for r in results if r.qualifies]
    return min(qualifying, key=lambda r: r.seconds_per_step) if qualifying else results[0]


def describe(results: list[TrialResult], chosen: TrialResult, images_per_step: int) -> str:
    """One line for the console: the choice and every candidate's speed."""
    parts = []
    for r in results:
        if math.isfinite(r.seconds_per_step):
            speed = f"{images_per_step / r.seconds_per_step:.0f} img/s"
        elif r.error:  # a step raised: say what, not just that it failed
            speed = f"failed ({r.error[:120]})"
        else:
            speed = "non-finite loss" if not r.finite else "loss disagrees with fp32"
        parts.append(f"{r.candidate.label} {speed}")
    return f"runtime: {chosen.candidate.label} (measured: {', '.join(parts)})"
