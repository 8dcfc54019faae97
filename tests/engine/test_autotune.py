"""Runtime choices settled by measurement: the trial's rules, and the engine's use of it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfsup.cli.main import main
from selfsup.engine import autotune
from selfsup.engine.autotune import Candidate, TrialResult
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import SMALL_HEADS, TINY_PRETRAIN

FP32, BF16 = Candidate("fp32", False), Candidate("bf16", True)


def result(candidate: Candidate, seconds: float, losses: list[float]) -> TrialResult:
    return TrialResult(candidate, seconds, losses, finite=all(math.isfinite(v) for v in losses))


def test_candidates_put_float32_first():
    assert autotune.candidates(["bf16", "fp32"], [False, True]) == [
        Candidate("fp32", False),
        Candidate("fp32", True),
        Candidate("bf16", False),
        Candidate("bf16", True),
    ]


def test_the_fastest_agreeing_candidate_wins():
    results = [result(FP32, 0.20, [4.0, 3.5]), result(BF16, 0.10, [4.01, 3.52])]
    autotune.check_agreement(results)
    assert autotune.choose(results).candidate == BF16


def test_a_bf16_candidate_whose_loss_strays_from_float32_loses_even_when_faster():
    results = [result(FP32, 0.20, [4.0, 3.5]), result(BF16, 0.10, [4.0, 3.5 * 1.2])]
    autotune.check_agreement(results)
    assert not results[1].agrees and autotune.choose(results).candidate == FP32


def test_the_floor_tolerates_noise_on_a_loss_near_zero():
    results = [result(FP32, 0.2, [-0.005, -0.009]), result(BF16, 0.1, [-0.0049, -0.0079])]
    autotune.check_agreement(results)
    assert results[1].agrees


def test_measure_interleaves_candidates_and_disqualifies_one_that_fails():
    calls = []

    def runner(name: str, fail_at: int | None = None):
        def run(i: int) -> float:
            calls.append((name, i))
            if i == fail_at:
                raise RuntimeError("the loss became nan")
            return 1.0

        return run

    results = autotune.measure(
        [FP32, BF16], [runner("a"), runner("b", fail_at=2)], sync=lambda: None, warmup=1, timed=3
    )
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
    assert results[0].qualifies and math.isfinite(results[0].seconds_per_step)
    assert not results[1].qualifies and "nan" in results[1].error
    assert autotune.choose(results).candidate == FP32
    line = autotune.describe(results, results[0], images_per_step=8)
    assert "bf16/channels_last failed (RuntimeError: the loss became nan)" in line


TINY = [*TINY_PRETRAIN, *SMALL_HEADS]


def read(run, name):
    return json.loads((run / name).read_text())


@needs_fashion_mnist
def test_auto_is_settled_recorded_and_kept_on_resume_and_leaves_the_run_untouched(tmp_path, capsys):
    auto, pinned = tmp_path / "auto", tmp_path / "pinned"
    assert main(["pretrain", *TINY, "--out", str(auto), "--max-steps", "5"]) == 0
    assert "selfsup: runtime: " in capsys.readouterr().out
    config, summary = read(auto, "config.json"), read(auto, "summary.json")
    assert config["precision"] in ("fp32", "bf16") and config["channels_last"] in ("true", "false")
    trial = summary["runtime_trial"]
    assert trial["chosen"] == Candidate(config["precision"], config["channels_last"] == "true").label
    assert len(trial["candidates"]) >= 2
    assert all(c["qualifies"] for c in trial["candidates"] if c["candidate"].startswith("fp32"))
    # the resumed run reuses the choice: no second trial
    assert main(["pretrain", "--out", str(auto), "--resume", "--no-progress"]) == 0
    assert "runtime:" not in capsys.readouterr().out and "runtime_trial" not in read(auto, "summary.json")
    assert read(auto, "config.json")["precision"] == config["precision"]
    # the trial trained copies: the run equals one started with the chosen settings given explicitly
    assert (
        main(
            [
                "pretrain",
                *TINY,
                "--out",
                str(pinned),
                "--set",
                f"precision={config['precision']}",
                "--set",
                f"channels_last={config['channels_last']}",
            ]
        )
        == 0
    )
    assert "runtime:" not in capsys.readouterr().out
    a, b = RunFolder(auto).read_checkpoint(), RunFolder(pinned).read_checkpoint()
    for key, tensor in a["method"].items():
        assert torch.equal(tensor, b["method"][key]), key


@needs_fashion_mnist
def test_a_precision_whose_loss_is_not_finite_is_never_chosen(tmp_path, monkeypatch):
    """A stand-in for a broken bf16 kernel: under autocast the loss is NaN. auto must settle on float32 and
    train; the explicit bf16 run stops with the divergence message."""
    from selfsup.methods.simclr import SimCLR

    original = SimCLR.contrastive_loss

    def broken_in_bf16(self, z1, z2):
        loss = original(self, z1, z2)
        return loss * float("nan") if z1.dtype == torch.bfloat16 else loss

    monkeypatch.setattr(SimCLR, "contrastive_loss", broken_in_bf16)
    monkeypatch.setattr("selfsup.runtime.cpu_bf16_supported", lambda: True)  # a candidate on every CPU
    run = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                *TINY,
                "--out",
                str(run),
                "--set",
                "precision=auto",
                "--set",
                "channels_last=false",
                "--set",
                "projector=none",
                "--max-steps",
                "3",
            ]
        )
        == 0
    )
    assert read(run, "config.json")["precision"] == "fp32"
    candidates = read(run, "summary.json")["runtime_trial"]["candidates"]
    assert [c["qualifies"] for c in candidates] == [True, False]
    assert (
        main(["pretrain", *TINY, "--out", str(tmp_path / "bf16"), "--set", "precision=bf16", "--set", "projector=none"])
        == 1
    )


@pytest.mark.parametrize("value, expected", [("true", "true"), ("off", "false"), ("AUTO", "auto"), (True, "true")])
def test_channels_last_spellings(value, expected):
    from selfsup.config import switch

    assert switch(value, "channels_last") == expected
