"""The diffusion energy's hand-written backward (regnet.losses._diffusion_energy): gradcheck in
float64, and value and gradient against the same formula written with autograd and MONAI."""

import pytest
import torch

from regnet.losses import DiffusionLoss
from regnet.losses._diffusion_energy import DiffusionEnergy


def _autograd_formula(ddf: torch.Tensor, reduction: str) -> torch.Tensor:
    """Central differences on the interior of every axis, by slicing (autograd's backward)."""
    nd = ddf.dim() - 2
    inner = [slice(1, n - 1) for n in ddf.shape[2:]]
    terms = []
    for axis in range(nd):
        plus, minus = list(inner), list(inner)
        plus[axis] = slice(2, None)
        minus[axis] = slice(0, -2)
        g = (ddf[(..., *plus)] - ddf[(..., *minus)]) / 2
        terms.append(g**2)
    energy = sum(terms)
    return energy.mean() if reduction == "mean" else energy.sum()


@pytest.mark.parametrize("shape", [(2, 2, 5, 7), (1, 3, 4, 5, 6), (2, 3, 3, 3, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradcheck_and_formula(shape, reduction):
    ddf = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: DiffusionEnergy.apply(u, reduction), (ddf,))
    value = DiffusionEnergy.apply(ddf, reduction)
    (grad,) = torch.autograd.grad(value, ddf)
    expected = _autograd_formula(ddf, reduction)
    (expected_grad,) = torch.autograd.grad(expected, ddf)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_module_uses_it_and_matches_monai():
    monai_losses = pytest.importorskip("monai.losses", reason="MONAI is not installed")
    ddf = torch.randn(2, 3, 9, 8, 7, requires_grad=True)
    ours = DiffusionLoss()(ddf)
    assert ours.grad_fn is not None and "DiffusionEnergy" in type(ours.grad_fn).__name__
    theirs = monai_losses.DiffusionLoss()(ddf)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, ddf)[0], torch.autograd.grad(theirs, ddf)[0])
