"""Split-batch BatchNorm equals K separate BatchNorms, one per contiguous group of the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.models.split_bn import make_splittable, split_batchnorm


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    model.append(nn.BatchNorm1d(5))
    with torch.no_grad():
        for bn in (model[1], model[5]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return model.double()  # float64: BN over 2 samples is ill-conditioned in float32


@pytest.mark.parametrize("groups", [2, 4])
def test_split_batchnorm_equals_a_separate_batchnorm_per_group(groups):
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64) * 2 + 1
    split = _model()
    assert make_splittable(split) == 2
    with split_batchnorm(split, groups):
        out = split(x)
    out.square().sum().backward()
    n = x.shape[0] // groups
    references = [_model() for _ in range(groups)]
    expected = [ref(x[g * n : (g + 1) * n]) for g, ref in enumerate(references)]
    torch.testing.assert_close(out, torch.cat(expected), rtol=1e-9, atol=1e-9)
    torch.cat(expected).square().sum().backward()
    for name, param in split.named_parameters():  # the gradient of the shared weights: the sum over groups
        summed = sum(dict(ref.named_parameters())[name].grad for ref in references)
        torch.testing.assert_close(param.grad, summed, rtol=1e-9, atol=1e-9)
    for name in ("1.running_mean", "1.running_var", "5.running_mean", "5.running_var"):  # mean over the groups
        mean = torch.stack([ref.state_dict()[name] for ref in references]).mean(0)
        torch.testing.assert_close(split.state_dict()[name], mean, rtol=1e-9, atol=1e-9)


def test_outside_the_block_and_in_eval_mode_it_is_ordinary_batchnorm():
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    plain, split = _model(), _model()
    make_splittable(split)
    assert set(split.state_dict()) == set(plain.state_dict())
    torch.testing.assert_close(split(x), plain(x))
    split.eval(), plain.eval()
    with split_batchnorm(split, 4):
        torch.testing.assert_close(split(x), plain(x))


def test_a_batch_that_does_not_split_is_refused():
    split = _model()
    make_splittable(split)
    with split_batchnorm(split, 3), pytest.raises(ValueError, match="cannot be cut into 3 groups"):
        split(torch.randn(8, 3, 8, 8, dtype=torch.float64))
    with split_batchnorm(split, 8), pytest.raises(ValueError, match="groups of 2 or more"):
        split(torch.randn(8, 3, 8, 8, dtype=torch.float64))
