"""NormalisedDescent (ANTs' normalised gradient step) against hand-computed steps."""

from __future__ import annotations

import pytest
import torch

from regnet.registration.config import load_config
from regnet.registration.descent import NormalisedDescent


def test_largest_vector_moves_by_the_step_per_item():
    p = torch.nn.Parameter(torch.zeros(2, 3, 4, 5, 6, dtype=torch.float64))
    grad = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    grad[1] *= 1000.0  # another scale for the second item: normalised on its own
    p.grad = grad.clone()
    NormalisedDescent([p], lr=0.5, quantile=1.0).step()
    lengths = p.detach().norm(dim=1).flatten(1)
    torch.testing.assert_close(lengths.amax(1), torch.full((2,), 0.5, dtype=torch.float64))
    direction = -grad / grad.norm(dim=1, keepdim=True).flatten(1).amax(1).view(2, 1, 1, 1, 1) * 0.5
    torch.testing.assert_close(p.detach(), direction)  # the gradient's shape, only rescaled


def test_quantile_ignores_an_outlier_voxel():
    p = torch.nn.Parameter(torch.zeros(1, 2, 10, 10))
    grad = torch.ones(1, 2, 10, 10)
    grad[0, :, 0, 0] = 100.0  # one outlier
    p.grad = grad
    NormalisedDescent([p], lr=1.0, quantile=0.95).step()
    torch.testing.assert_close(p.detach()[0, :, 5, 5], torch.full((2,), -1 / 2**0.5))  # a typical voxel: 1 step


def test_zero_grad_skip_and_bad_arguments():
    a, b = torch.nn.Parameter(torch.zeros(1, 2, 3, 3)), torch.nn.Parameter(torch.zeros(1, 2, 3, 3))
    step = NormalisedDescent([a, b], lr=0.1)
    a.grad = torch.zeros_like(a)  # all zero: no NaN
    step.step()
    assert torch.equal(a, torch.zeros_like(a)) and torch.equal(b, torch.zeros_like(b))
    step.zero_grad()
    assert a.grad is None
    with pytest.raises(ValueError, match="lr"):
        NormalisedDescent([a], lr=0)
    with pytest.raises(ValueError, match="quantile"):
        NormalisedDescent([a], lr=1, quantile=1.5)
    with pytest.raises(TypeError, match="params"):
        NormalisedDescent([torch.zeros(3, dtype=torch.int64)], lr=1)


def test_by_name_in_a_config():
    config = load_config({"syn": {"optimizer": "normalised"}})
    assert config.kwargs["syn"]["optimizer"] is NormalisedDescent
