"""CPC, DIM and AMDIM take their negatives from the global batch: a 2-process gloo run equals a 1-process
run on the same global batch (losses, gradients), for every loss that gathers across ranks.

Random choices made inside the methods (CPC's patch colour dropping and flips, CPC's sampled negatives,
DIM's prior samples and occluded squares, AMDIM's 5x5 source locations) are drawn for the global batch
and sliced by rank, so they match too. The negative control shows that the comparison sees a gather that drops the
gradient of the other ranks' copies.
"""

from __future__ import annotations

import pytest

from tests.distributed.harness import Case, max_relative_difference, single_process, two_processes

CPC = {"latent_dim": 8, "context_dim": 8, "max_offset": 3}
DIM = {"mi_units": 16, "global_dim": 8, "prior_hidden": (16,)}
AMDIM = {"n_rkhs": 256}

CASES = [
    # CPC: all codes of the global batch as candidates; then sampled negatives, two directions, RGB colour drop
    Case("cpc", CPC, views=1, size=20, backbone="patchnet-small", norm="group"),
    Case(
        "cpc",
        {**CPC, "num_negatives": 40, "directions": ("top_down", "left_right")},
        views=1,
        size=20,
        backbone="patchnet-small",
        norm="group",
    ),
    # DIM: the three estimators (DV needs the full global matrix), the global term, prior matching
    Case("dim", {**DIM, "estimator": "jsd", "alpha": 0.5}, views=1, size=32, backbone="dim32"),
    Case("dim", {**DIM, "estimator": "nce"}, views=1, size=32, backbone="dim32"),
    Case("dim", {**DIM, "estimator": "dv", "gamma": 0.0}, views=1, size=32, backbone="dim32"),
    # DIM with occlusion (§4.3): the hidden squares are drawn for the global batch
    Case("dim", {**DIM, "occlusion": 0.5}, views=1, size=32, backbone="dim32"),
    # AMDIM: 1->5, 1->7, 5->5 against the global batch's locations
    Case("amdim", AMDIM, views=2, size=32, backbone="amdim32-small"),
]


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # multi-process


def test_two_processes_match_one_process():
    """Losses and gradients agree to 1e-5 (relative), as in ``harness.assert_equivalent``, with one
    refinement (hence the harness's primitives are called directly): a gradient that is analytically zero
    is float noise in both runs, so it only has to stay numerically zero (below 1e-6 of the model's
    largest gradient). The one such tensor here is the LayerNorm bias of DIM's
    local score network under NCE: it shifts every score of a softmax row by the same g_i . b."""
    distributed = two_processes(CASES)
    for case in CASES:
        losses1, grads1, _ = single_process(case)
        losses2, grads2, _ = distributed[case.label]
        assert losses2 == pytest.approx(losses1, rel=1e-5, abs=1e-6), case.label
        assert grads1.keys() == grads2.keys(), case.label
        largest = max(float(g.abs().max()) for g in grads1.values())
        noise = {name for name, g in grads1.items() if float(g.abs().max()) < 1e-6 * largest}
        for name in noise:
            assert float(grads2[name].abs().max()) < 1e-6 * largest, (case.label, name)
        kept = [name for name in grads1 if name not in noise]
        assert max_relative_difference({n: grads1[n] for n in kept}, {n: grads2[n] for n in kept}) < 1e-5, case.label


def test_gather_without_gradient_is_caught():
    """Negative control: with a plain (non-differentiable) all_gather the forward pass still matches, the
    gradients do not; AMDIM's 7x7 head, whose features are only ever targets, gets no gradient at all."""
    case = Case("amdim", AMDIM, views=2, size=32, backbone="amdim32-small", steps=1)
    losses1, grads1, _ = single_process(case)
    losses2, grads2, _ = two_processes([case], break_gather=True)[case.label]
    assert losses2 == pytest.approx(losses1, rel=1e-5)
    assert {name for name in grads1 if name not in grads2} == {n for n in grads1 if n.startswith("rkhs_7.")}
    common = [name for name in grads2 if name in grads1]
    assert max_relative_difference({n: grads1[n] for n in common}, {n: grads2[n] for n in common}) > 1e-2
