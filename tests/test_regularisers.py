"""Regularisers: MONAI parity (bending energy, diffusion), torchreg parity (linear elasticity),
analytic fields, torchreg's quirks, bad input."""

import pytest
import torch
import torch.nn.functional as F

from regnet.losses.regularisers import (
    BendingEnergyLoss,
    DiffusionLoss,
    LinearElasticityLoss,
    bending_energy,
    diffusion,
    linear_elasticity,
)

monai_losses = pytest.importorskip("monai.losses")
torchreg_metrics = pytest.importorskip("torchreg.metrics")

# MONAI's deform.py indexes with lists; torch warns about it on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence for multidimensional indexing")

SHAPES = {2: (6, 7), 3: (5, 6, 7)}


def _affine_field(A, b, spatial, batch=1):
    """u(x) = A x + b on the voxel grid: u_i = sum_j A_ij x_j + b_i, shape (batch, ndim, *spatial)."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=A.dtype) for n in spatial], indexing="ij"))
    u = torch.einsum("ij,j...->i...", A, coords) + b.view(-1, *[1] * len(spatial))
    return u[None].repeat(batch, *[1] * (len(spatial) + 1))


def _close(actual, expected, rtol):
    """Relative closeness, with the absolute tolerance scaled to the largest reference entry
    (gradient entries near zero come from cancelling terms)."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def _value_and_grad(fn, u, weight=None):
    u = u.detach().clone().requires_grad_()
    value = fn(u)
    weight = torch.randn_like(value) if weight is None else weight
    (grad,) = torch.autograd.grad((value * weight).sum(), u)
    return value.detach(), grad, weight


# ---------------------------------------------------------------- MONAI parity

@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "ours, theirs", [(BendingEnergyLoss, "BendingEnergyLoss"), (DiffusionLoss, "DiffusionLoss")]
)
def test_matches_monai_value_and_gradient(ndim, normalize, reduction, ours, theirs):
    u = torch.randn(2, ndim, *SHAPES[ndim])
    ref, ref_grad, weight = _value_and_grad(getattr(monai_losses, theirs)(normalize, reduction), u)
    value, grad, _ = _value_and_grad(ours(normalize, reduction), u, weight)
    assert value.shape == ref.shape
    _close(value, ref, 1e-5)
    _close(grad, ref_grad, 1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_monai_float64(normalize):
    u = torch.randn(1, 3, 5, 4, 6, dtype=torch.float64)
    for fn, ref in ((bending_energy, monai_losses.BendingEnergyLoss), (diffusion, monai_losses.DiffusionLoss)):
        value, grad, weight = _value_and_grad(lambda x: fn(x, normalize, "none"), u)
        ref_value, ref_grad, _ = _value_and_grad(ref(normalize, "none"), u, weight)
        # MONAI computes the `normalize` factors n_i * n_j / n_a in float32; regnet in the field's dtype.
        rtol = 1e-6 if normalize else 1e-12
        _close(value, ref_value, rtol)
        _close(grad, ref_grad, rtol)


def test_gradcheck_bending_and_diffusion():
    u = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: bending_energy(x, normalize=True), (u,))
    assert torch.autograd.gradcheck(lambda x: diffusion(x, normalize=True), (u,))


# ---------------------------------------------------------------- analytic fields

@pytest.mark.parametrize("ndim", [2, 3])
def test_zero_field_gives_zero(ndim):
    u = torch.zeros(2, ndim, *SHAPES[ndim])
    for loss in (BendingEnergyLoss(), DiffusionLoss(), LinearElasticityLoss()):
        assert loss(u).item() == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
def test_translation_and_affine_fields(ndim):
    spatial = SHAPES[ndim]
    b = torch.randn(ndim, dtype=torch.float64)
    translation = _affine_field(torch.zeros(ndim, ndim, dtype=torch.float64), b, spatial, batch=2)
    affine = _affine_field(0.3 * torch.randn(ndim, ndim, dtype=torch.float64), b, spatial, batch=2)
    for u in (translation, affine):
        assert bending_energy(u).abs().item() < 1e-20
        assert bending_energy(u, normalize=True).abs().item() < 1e-20
        # torchreg's elasticity is built from second derivatives: zero on every affine field.
        assert linear_elasticity(u).abs().item() < 1e-20
    assert diffusion(translation).item() == 0.0
    assert diffusion(affine).item() > 0.1


def test_analytic_quadratic_and_linear_fields():
    spatial = (6, 7)
    x0 = torch.arange(6, dtype=torch.float64).view(6, 1).expand(spatial)
    x1 = torch.arange(7, dtype=torch.float64).view(1, 7).expand(spatial)
    zero = torch.zeros(spatial, dtype=torch.float64)
    # u = (x0^2, 0): d2 u_0 / dx0^2 = 2 -> density 4 on component 0, 0 on component 1.
    u = torch.stack([x0**2, zero])[None]
    torch.testing.assert_close(bending_energy(u), torch.tensor(2.0, dtype=torch.float64))
    # u = (0.5 x1, 0): d u_0 / dx1 = 0.5 -> density 0.25 on component 0.
    u = torch.stack([0.5 * x1, zero])[None]
    torch.testing.assert_close(diffusion(u), torch.tensor(0.125, dtype=torch.float64))
    torch.testing.assert_close(diffusion(u, reduction="sum"), torch.tensor(0.25 * 4 * 5, dtype=torch.float64))


# ---------------------------------------------------------------- linear elasticity vs torchreg

def to_torchreg(ddf):
    """regnet DDF (B, 3, H, W, D), voxels -> torchreg flow (B, H, W, D, 3): normalised displacement
    (align_corners=True: 2 / (n - 1) per voxel), last dim ordered x, y, z = reversed array axes."""
    spatial = ddf.shape[2:]
    per_voxel = torch.tensor([2.0 / (n - 1) for n in spatial], dtype=ddf.dtype).view(1, 3, 1, 1, 1)
    return (ddf * per_voxel).flip(1).permute(0, 2, 3, 4, 1)


def torchreg_elasticity(ddf, mu=2.0, lam=1.0, identity_leak=False):
    """torchreg's LinearElasticity (batch 1 only) of a regnet DDF, averaged over the batch.

    identity_leak=False zeroes the identity grid torchreg adds in its gradient passes (its only
    use), which is exactly the bug regnet leaves out."""
    values = []
    for item in ddf.split(1):
        module = torchreg_metrics.LinearElasticity(mu, lam)
        if not identity_leak:
            module.id_grid = torch.zeros(1, *ddf.shape[2:], 3, dtype=ddf.dtype)
        values.append(module(to_torchreg(item)))
    return torch.stack(values).mean()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("n", [3, 6])
def test_linear_elasticity_matches_torchreg_on_cubic_volumes(dtype, tol, n):
    u = torch.randn(2, 3, n, n, n, dtype=dtype)
    mu, lam = 1.5, 0.7
    value, grad, weight = _value_and_grad(lambda x: linear_elasticity(x, mu, lam), u)
    ref, ref_grad, _ = _value_and_grad(lambda x: torchreg_elasticity(x, mu, lam), u, weight)
    _close(value, ref, tol)
    _close(grad, ref_grad, tol)
    torch.testing.assert_close(LinearElasticityLoss(mu, lam)(u), value)


def test_torchreg_identity_leak_is_left_out():
    """torchreg scores a zero field (2 mu + lam)^2 + 2 lam^2 + 2 mu^2 and pushes it away from zero."""
    mu, lam = 2.0, 1.0
    u = torch.zeros(1, 3, 6, 6, 6, dtype=torch.float64)
    leaky, leaky_grad, _ = _value_and_grad(lambda x: torchreg_elasticity(x, mu, lam, identity_leak=True), u, 1.0)
    assert leaky.item() == pytest.approx((2 * mu + lam) ** 2 + 2 * lam**2 + 2 * mu**2, rel=1e-6)
    assert leaky_grad.abs().max() > 0.1
    value, grad, _ = _value_and_grad(linear_elasticity, u, 1.0)
    assert value.item() == 0.0 and grad.abs().max().item() == 0.0


def test_linear_elasticity_non_cubic_is_axis_order_invariant_where_torchreg_is_not():
    u = torch.randn(1, 3, 5, 7, 6, dtype=torch.float64)
    perm = (2, 0, 1)
    permuted = u[:, list(perm)].permute(0, 1, *[2 + p for p in perm])  # axes and components together
    torch.testing.assert_close(linear_elasticity(permuted), linear_elasticity(u))
    assert abs(torchreg_elasticity(permuted) - torchreg_elasticity(u)) > 1e-3 * torchreg_elasticity(u)


def _elasticity_2d_reference(u, mu, lam):
    """2D analogue of torchreg's computation written with conv2d (torchreg's style), no identity."""
    n0, n1 = u.shape[2:]
    s = [(n0 - 1) / 2, (n1 - 1) / 2]
    w = torch.zeros(2, 1, 3, 3, dtype=u.dtype)
    w[0, 0, :, 1] = torch.tensor([-0.5, 0, 0.5])  # axis 0
    w[1, 0, 1, :] = torch.tensor([-0.5, 0, 0.5])  # axis 1

    def grad(x):  # (N, *spatial) -> (N, 2, *spatial), valid conv + replicate pad
        return F.pad(F.conv2d(x[:, None], w), (1, 1, 1, 1), mode="replicate")

    total = 0
    for item in u:
        w_norm = torch.stack([item[0] / s[0], item[1] / s[1]])  # normalised flow
        G = grad(w_norm) * torch.tensor(s, dtype=u.dtype).view(1, 2, 1, 1)  # G[a, b] = d w_a / d xi_b
        H = grad(G.reshape(4, n0, n1)).reshape(2, 2, 2, n0, n1) * torch.tensor(s, dtype=u.dtype).view(1, 1, 2, 1, 1)
        # H[a, b, c] = d2 w_a / d xi_b d xi_c
        tr = H[0, 0] + H[1, 1]
        sxx = 2 * mu * H[0, 0] + lam * tr
        syy = 2 * mu * H[1, 1] + lam * tr
        sxy = mu * (H[0, 1] + H[1, 0])
        total = total + (sxx**2 + syy**2 + sxy**2).mean()
    return total / u.shape[0]


def test_linear_elasticity_2d_matches_reference_formula():
    u = torch.randn(2, 2, 6, 9, dtype=torch.float64)
    value, grad, weight = _value_and_grad(lambda x: linear_elasticity(x, 1.3, 0.4), u)
    ref, ref_grad, _ = _value_and_grad(lambda x: _elasticity_2d_reference(x, 1.3, 0.4), u, weight)
    _close(value, ref, 1e-12)
    _close(grad, ref_grad, 1e-12)


def test_linear_elasticity_gradcheck_and_resolution_scaling():
    u = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_elasticity, (u,))
    # Normalised coordinates: the same smooth deformation sampled twice as finely (so twice the
    # voxel displacement) has about the same energy.
    def field(n):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        X, Y = torch.meshgrid(x, x, indexing="ij")
        return torch.stack([torch.sin(3 * X) * Y**2, torch.cos(2 * Y) * X])[None] * (n - 1) / 10

    coarse, fine = linear_elasticity(field(33)), linear_elasticity(field(65))
    assert fine.item() == pytest.approx(coarse.item(), rel=0.1)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn", [bending_energy, diffusion, linear_elasticity])
def test_bad_input(fn):
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: ddf must have shape \(B, ndim, \*spatial\)"):
        fn(torch.zeros(1, 3, 5, 5))  # 3 components for a 2D field
    with pytest.raises(ValueError, match=rf"{name}: ddf must have 4 or 5 dimensions"):
        fn(torch.zeros(5, 5))
    with pytest.raises(ValueError, match=rf"{name}: every spatial size of ddf must be >= 3.*\(1, 2, 5, 2\)"):
        fn(torch.zeros(1, 2, 5, 2))
    with pytest.raises(TypeError, match=rf"{name}: ddf must have a floating dtype"):
        fn(torch.zeros(1, 2, 5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match=rf"{name}: ddf must be a torch.Tensor"):
        fn([[0.0]])


def test_bad_reduction():
    with pytest.raises(ValueError, match="bending_energy: reduction must be one of"):
        bending_energy(torch.zeros(1, 2, 4, 4), reduction="max")
    with pytest.raises(ValueError, match="DiffusionLoss: reduction must be one of"):
        DiffusionLoss(reduction="batch")
