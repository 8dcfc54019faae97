"""Registering methods: a setting may not share its name with a run setting; unlisted methods stay hidden."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from selfsup.methods import METHODS, Method, method_names, register_method


def test_a_method_setting_named_like_a_run_setting_is_refused_at_registration():
    class Clashing(Method):
        name = "zz-clashing"

        @dataclass
        class Args:
            epochs: int = 3  # `--set epochs=...` is the run's number of epochs
            temperature: float = 0.1

    with pytest.raises(ValueError, match="epochs"):
        register_method(Clashing)
    assert "zz-clashing" not in METHODS


def test_the_supervised_baseline_is_registered_but_not_listed():
    assert "supervised" in METHODS and METHODS.get("supervised").uses_labels
    assert "supervised" not in method_names()
    assert "supervised" in method_names(include_unlisted=True)
