"""gaussian_smooth against scipy.ndimage.gaussian_filter; adjointness and gradcheck."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from regnet import ops

MODES = ("reflect", "nearest", "mirror", "wrap", "constant")


def _scipy(x, sigma, mode, truncate=4.0):
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[b, c] = ndimage.gaussian_filter(x[b, c], sigma, mode=mode, truncate=truncate)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "spatial,sigma",
    [((17,), 1.3), ((12, 15), (0.8, 2.0)), ((9, 11, 10), (1.0, 0.0, 1.7)), ((6, 5, 7), 3.0)],
)
def test_matches_scipy(mode, spatial, sigma):
    x = torch.randn(2, 3, *spatial, dtype=torch.float64)
    ours = ops.gaussian_smooth(x, sigma, mode=mode)
    np.testing.assert_allclose(ours.numpy(), _scipy(x.numpy(), sigma, mode), rtol=1e-10, atol=1e-12)


def test_matches_scipy_float32_and_truncate(brain_slice):
    x = brain_slice.float()
    ours = ops.gaussian_smooth(x, 2.5, truncate=2.0)
    np.testing.assert_allclose(ours.numpy(), _scipy(x.numpy(), 2.5, "reflect", truncate=2.0), rtol=1e-5, atol=1e-6)


def test_kernel_wider_than_axis():
    """Pads wider than the axis reflect repeatedly, as SciPy does."""
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    for mode in MODES:
        np.testing.assert_allclose(ops.gaussian_smooth(x, 5.0, mode=mode).numpy(), _scipy(x.numpy(), 5.0, mode))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    x = torch.randn(1, 1, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.gaussian_smooth(t, (1.0, 0.7, 2.2), mode=mode), (x,))


def test_backward_is_the_adjoint():
    x = torch.randn(2, 2, 20, 18, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 2, 20, 18, dtype=torch.float64)
    for mode in MODES:
        out = ops.gaussian_smooth(x, (1.5, 3.0), mode=mode)
        (grad,) = torch.autograd.grad((out * y).sum(), x)
        adjoint_y = ops.gaussian_smooth(y, (1.5, 3.0), mode=mode)
        if mode in ("wrap",):  # symmetric operator: the adjoint is the filter itself
            torch.testing.assert_close(grad, adjoint_y)
        torch.testing.assert_close((out * y).sum(), (x * grad).sum())


def test_sigma_zero_is_identity_and_preserves_constants():
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(ops.gaussian_smooth(x, 0.0), x)
    const = torch.full((1, 4, 10, 9, 8), 3.0)
    torch.testing.assert_close(ops.gaussian_smooth(const, 2.0), const)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"x": torch.zeros(1, 1, 4, 4), "sigma": (1.0, 2.0, 3.0)}, ValueError, "sigma must be"),
        ({"x": torch.zeros(1, 1, 4, 4), "sigma": -1.0}, ValueError, ">= 0"),
        ({"x": torch.zeros(1, 1, 4, 4), "sigma": float("nan")}, ValueError, ">= 0"),
        ({"x": torch.zeros(1, 1, 4, 4), "sigma": 1.0, "mode": "zeros"}, ValueError, "mode"),
        ({"x": torch.zeros(1, 1, 4, 4), "sigma": 1.0, "truncate": 0}, ValueError, "truncate"),
        ({"x": torch.zeros(4, 4), "sigma": 1.0}, ValueError, "x must have 3, 4 or 5"),
        ({"x": torch.zeros(1, 1, 4, 4, dtype=torch.int32), "sigma": 1.0}, TypeError, "floating"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.gaussian_smooth(**kwargs)
