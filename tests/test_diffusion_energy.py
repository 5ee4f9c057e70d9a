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


def _numpy_energy(ddf: torch.Tensor, beta: float) -> float:
    """Independent oracle: numpy central differences, sum |grad u|^2 + beta (div u)^2 over the
    interior of every axis, divided by B * ndim * interior voxels."""
    import numpy as np

    u = ddf.detach().numpy()
    nd = u.ndim - 2
    inner = tuple(slice(1, -1) for _ in range(nd))
    total, div = 0.0, 0.0
    for axis in range(nd):
        g = np.gradient(u, axis=2 + axis)[(slice(None), slice(None), *inner)]  # central inside
        total += float((g**2).sum())
        div = div + g[:, axis]
    total += beta * float((div**2).sum())
    return total / (u.shape[0] * nd * int(np.prod([n - 2 for n in u.shape[2:]])))


@pytest.mark.parametrize("shape", [(2, 2, 5, 7), (1, 3, 4, 5, 6), (2, 3, 3, 3, 3)])
@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_divergence_term_gradcheck_and_numpy(shape, beta):
    from regnet.losses.functional import diffusion

    ddf = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: DiffusionEnergy.apply(u, "mean", beta), (ddf,))
    assert torch.autograd.gradcheck(lambda u: DiffusionEnergy.apply(u, "sum", beta), (ddf,))
    value = DiffusionLoss(divergence_weight=beta)(ddf)
    assert value.item() == pytest.approx(_numpy_energy(ddf, beta), rel=1e-12)
    # the autograd path (reduction "none") holds the same energy and gradient
    (grad,) = torch.autograd.grad(value, ddf)
    slow = diffusion(ddf, reduction="none", divergence_weight=beta).mean()
    torch.testing.assert_close(slow, value, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(slow, ddf)[0], grad, rtol=1e-10, atol=1e-14)


def test_divergence_term_penalises_volume_change_not_shear():
    """A pure shear (div u = 0) costs the same with and without the term; a dilation more."""
    n = 9
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    shear = torch.stack([0.1 * x, torch.zeros_like(x)])[None]  # u_0 depends on axis 1 only
    dilation = torch.stack([0.1 * y, 0.1 * x])[None]
    for beta in (1.0, 4.0):
        assert DiffusionLoss(divergence_weight=beta)(shear).item() == pytest.approx(DiffusionLoss()(shear).item())
        # |grad u|^2 = 0.02 per voxel; (div u)^2 = 0.04; mean over 2 components
        assert DiffusionLoss(divergence_weight=beta)(dilation).item() == pytest.approx((0.02 + beta * 0.04) / 2)


def test_divergence_weight_is_checked():
    with pytest.raises(ValueError, match="divergence_weight"):
        DiffusionLoss(divergence_weight=-1.0)
    with pytest.raises(TypeError, match="divergence_weight"):
        DiffusionLoss(divergence_weight="3")
