"""A 2-process gloo run equals a 1-process run on the same global batch: loss, gradients, state.

The negative control shows that the comparison can fail: with a gather that drops the gradient
of the other ranks' copies (a plain all_gather, the bug several public libraries shipped), the
gradients no longer match.
"""

from __future__ import annotations

import pytest

from tests.distributed.harness import Case, assert_equivalent, max_relative_difference, single_process, two_processes

pytestmark = pytest.mark.slow  # multi-process

CASES = [
    Case("simclr", {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}),
    Case("vicreg", {"expander": (32, 32, 32)}),
    Case("tico", {"hidden_dim": 32, "latent_dim": 16, "beta": 0.5}),
]


def test_two_processes_match_one_process():
    assert_equivalent(CASES)


def test_gather_without_gradient_is_caught():
    """Negative control: a non-differentiable gather changes the gradients, and the comparison sees it."""
    case = Case("simclr", {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}, steps=1)
    losses1, grads1, _ = single_process(case)
    losses2, grads2, _ = two_processes([case], break_gather=True)[case.label]
    assert losses2 == pytest.approx(losses1, rel=1e-5)  # the forward pass is still right ...
    assert max_relative_difference(grads1, grads2) > 1e-2  # ... but the gradients are not
