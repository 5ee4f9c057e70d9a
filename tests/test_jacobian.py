"""jacobian_det: analytic affine fields, numpy.gradient parity, gradcheck."""

import numpy as np
import pytest
import torch

from regnet import ops


def _affine_field(A, b, spatial):
    """u(x) = A x + b on the voxel grid, channel-first: u_i = sum_j A_ij x_j + b_i."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij"))
    return (torch.einsum("ij,j...->i...", A, coords) + b.view(-1, *[1] * len(spatial)))[None]


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_field_gives_det_everywhere(ndim):
    A = 0.3 * torch.randn(ndim, ndim, dtype=torch.float64)
    b = torch.randn(ndim, dtype=torch.float64)
    spatial = (7, 6, 5)[:ndim]
    det = ops.jacobian_det(_affine_field(A, b, spatial))
    assert det.shape == (1, 1, *spatial)
    expected = torch.linalg.det(torch.eye(ndim, dtype=torch.float64) + A)
    torch.testing.assert_close(det, expected.expand_as(det))


def test_folding_is_negative():
    A = torch.tensor([[-2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # x -> -x along axis 0
    det = ops.jacobian_det(_affine_field(A, torch.zeros(2, dtype=torch.float64), (5, 5)))
    torch.testing.assert_close(det, torch.full_like(det, -1.0))


@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_numpy_gradient(ndim):
    spatial = (6, 7, 5)[:ndim]
    u = torch.randn(2, ndim, *spatial, dtype=torch.float64)
    det = ops.jacobian_det(u)
    for b in range(2):
        grads = [np.gradient(u[b, i].numpy()) for i in range(ndim)]  # grads[i][j] = d u_i / d x_j
        J = np.stack([np.stack(g, axis=-1) for g in grads], axis=-2) + np.eye(ndim)
        np.testing.assert_allclose(det[b, 0].numpy(), np.linalg.det(J), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spatial", [(5, 4), (2, 3), (4, 3, 5), (2, 2, 2)])
def test_gradcheck(spatial):
    u = torch.randn(2, len(spatial), *spatial, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.jacobian_det, (u,))


def test_float32_gradient_matches_autograd_of_numpy_style_formula():
    u = torch.randn(1, 3, 6, 5, 7, requires_grad=True)
    weight = torch.randn(1, 1, 6, 5, 7)
    (grad,) = torch.autograd.grad((ops.jacobian_det(u) * weight).sum(), u)
    v = u.detach().clone().requires_grad_()
    J = torch.stack([torch.stack(torch.gradient(v[0, i]), dim=-1) for i in range(3)], dim=-2) + torch.eye(3)
    (expected,) = torch.autograd.grad((torch.linalg.det(J) * weight[0, 0]).sum(), v)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "ddf,match",
    [
        (torch.zeros(1, 3, 4, 4), "ddf must have shape"),
        (torch.zeros(1, 2, 1, 4), ">= 2"),
        (torch.zeros(2, 4), "ddf must have 4 or 5"),
    ],
)
def test_bad_input(ddf, match):
    with pytest.raises(ValueError, match=match):
        ops.jacobian_det(ddf)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("slab", [1, 7, 40])
def test_slabbed_forward_is_identical(monkeypatch, ndim, slab):
    """Large fields run in slabs with a halo: the same numbers as the whole field at once."""
    from regnet.ops._torch import jacobian as reference

    shape = (2, ndim, 11, 9, 8)[: 2 + ndim]
    ddf = torch.randn(*shape, dtype=torch.float64)
    whole = reference.jacobian_det_forward(ddf)
    plane = int(torch.Size(shape[3:]).numel())
    monkeypatch.setattr(reference, "SLAB_VOXELS", slab * plane)
    assert torch.equal(reference.jacobian_det_forward(ddf), whole)
