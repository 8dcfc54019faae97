"""A 2-process gloo run equals a 1-process run on the same global batch: loss, gradients, state.

The negative control shows that the test can fail: with a gather that drops the gradient of the
other ranks' copies (a plain all_gather, the bug several public libraries shipped), the
gradients no longer match.
"""

from __future__ import annotations

import pytest

from tests.ddp_harness import max_relative_difference, single_process, two_processes

CASES = {
    "simclr": {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5},
    "vicreg": {"expander": (32, 32, 32)},
    "tico": {"hidden_dim": 32, "latent_dim": 16, "beta": 0.5},
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_one_process(method):
    losses1, grads1, buffers1 = single_process(method, CASES[method])
    losses2, grads2, buffers2 = two_processes(method, CASES[method])
    assert losses2 == pytest.approx(losses1, rel=1e-5, abs=1e-6)
    assert max_relative_difference(grads1, grads2) < 1e-5
    if buffers1:
        assert max_relative_difference(buffers1, buffers2) < 1e-5


def test_gather_without_gradient_is_caught():
    """Negative control: a non-differentiable gather changes the gradients, and the comparison sees it."""
    losses1, grads1, _ = single_process("simclr", CASES["simclr"], steps=1)
    losses2, grads2, _ = two_processes("simclr", CASES["simclr"], steps=1, break_gather=True)
    assert losses2 == pytest.approx(losses1, rel=1e-5)  # the forward pass is still right ...
    assert max_relative_difference(grads1, grads2) > 1e-2  # ... but the gradients are not
