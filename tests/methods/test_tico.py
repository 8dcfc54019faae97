"""TiCo method: which branch's embedding updates the running second moment C (``covariance_branch``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import ConfigError
from selfsup.presets import resolve_config
from tests.helpers import images, make_method, progress

pytestmark = pytest.mark.usefixtures("one_thread")

TICO_TINY = {"hidden_dim": 32, "latent_dim": 8, "beta": 0.0}


class TestTiCoMethod:
    @pytest.mark.parametrize(
        ("branch", "ema_target"), [("same", False), ("other", False), ("same", True), ("other", True)]
    )
    def test_C_is_the_second_moment_of_the_chosen_branch(self, branch, ema_target):
        method = make_method("tico", args={**TICO_TINY, "covariance_branch": branch, "ema_target": ema_target})
        views = [images(8, 8, 0), images(8, 8, 1)]
        method(views, progress())
        with torch.no_grad():  # the same batches again: BatchNorm in train mode gives the same outputs
            z1 = method.project(method.backbone(views[0]))
            if ema_target:
                z2 = method.momentum_projector(method.momentum_backbone(views[1]))
            else:
                z2 = method.project(method.backbone(views[1]))
        second_moment = {
            name: F.normalize(z, dim=1).T @ F.normalize(z, dim=1) / 8 for name, z in zip(("same", "other"), (z1, z2))
        }
        assert torch.allclose(method.C, second_moment[branch], atol=1e-5)
        unused = "other" if branch == "same" else "same"
        assert not torch.allclose(method.C, second_moment[unused], atol=1e-3)  # the two branches differ

    def test_setting_is_checked_against_its_choices(self):
        cfg = resolve_config("tico", "cpu", sets={"covariance_branch": "other"})
        assert cfg.method_args["covariance_branch"] == "other"
        assert resolve_config("tico", "cpu").method_args["covariance_branch"] == "same"
        with pytest.raises(
            ConfigError, match="covariance_branch='cross' is out of range: it must be one of same, other"
        ):
            resolve_config("tico", "cpu", sets={"covariance_branch": "cross"})
