"""Triton ``gaussian_smooth`` kernels against the reference backend (itself tested against
``scipy.ndimage.gaussian_filter``), under the Triton interpreter on the CPU.

Every SciPy boundary mode x 1D/2D/3D x float32/float64, forward and backward, with radii
wider than their axis (several reflections / wraps), axes of one voxel, unsmoothed axes
(sigma 0), several channels and batch items; poisoned buffers, small blocks.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from regnet import ops  # noqa: E402
from regnet.ops import _backend  # noqa: E402
from triton_helpers import INTERPRETER_WARNINGS, small_blocks_and_poisoned_buffers, triton_device  # noqa: E402

triton = pytest.importorskip("triton")
from regnet.ops._triton import gaussian  # noqa: E402

DEVICE = triton_device(gaussian._correlate_kernel)

pytestmark = INTERPRETER_WARNINGS

MODES = ("reflect", "nearest", "mirror", "wrap", "constant")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}
# (shape, sigma): radii int(4 sigma + 0.5) of 6 and 12 exceed axes of 5 and 6; axes of 1 and 2.
CASES = {
    1: ((2, 3, 7), (1.5,)),
    2: ((1, 2, 5, 6), (1.0, 3.0)),
    3: ((2, 2, 4, 1, 5), (0.7, 2.0, 1.5)),
}


@pytest.fixture(autouse=True)
def _small_blocks_and_poisoned_buffers(monkeypatch):
    small_blocks_and_poisoned_buffers(monkeypatch, gaussian)


def _compare(x, sigma, mode, truncate=4.0, tol=None, reference_dtype=None):
    ref = x if reference_dtype is None else x.to(reference_dtype)
    results = []
    weight = None
    for backend, inp in (("torch", ref), ("triton", x)):
        leaf = inp.detach().clone().requires_grad_()
        out = ops.gaussian_smooth(leaf, sigma, mode, truncate, backend=backend)
        if weight is None:
            weight = torch.randn_like(out)
        (out * weight.to(out.dtype)).sum().backward()
        results.append((out.detach(), leaf.grad))
    (e_out, e_grad), (a_out, a_grad) = results
    for name, a, e in (("output", a_out, e_out), ("grad", a_grad, e_grad)):
        assert a.dtype == x.dtype and a.shape == e.shape, name
        assert not a.isnan().any(), f"{name}: NaN (an element the kernel did not write)"
        torch.testing.assert_close(a.to(e.dtype), e, **(tol or TOL[x.dtype]), msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ndim", (1, 2, 3))
def test_matches_reference(ndim, mode, dtype):
    shape, sigma = CASES[ndim]
    _compare(torch.randn(shape, dtype=dtype, device=DEVICE), sigma, mode)


@pytest.mark.parametrize("mode", MODES)
def test_unsmoothed_axes_and_single_voxel_axes(mode):
    x = torch.randn(1, 2, 1, 6, 2, device=DEVICE)
    _compare(x, (1.0, 0.0, 2.0), mode)
    _compare(x, 0.0, mode)  # nothing smoothed: a copy, gradient passed through


def test_truncate_and_wide_kernels():
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64, device=DEVICE)
    for mode in MODES:
        _compare(x, (5.0, 0.5), mode, truncate=2.5)  # radius 13 on an axis of 3


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_half_precision_inputs_accumulate_in_float32(dtype):
    x = torch.randn(1, 3, 5, 6, 4, device=DEVICE).to(dtype)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=4e-2, atol=4e-2)
    _compare(x, (1.0, 1.5, 0.8), "reflect", tol=tol, reference_dtype=torch.float32)


def test_non_contiguous_input():
    x = torch.randn(2, 3, 6, 5, device=DEVICE).transpose(2, 3)[:, ::2]
    assert not x.is_contiguous()
    _compare(x, (1.2, 0.9), "mirror")


def test_registered():
    from regnet.ops._triton import KERNELS

    assert KERNELS["gaussian_smooth"] is gaussian
    assert _backend.select("gaussian_smooth", DEVICE, backend="triton") is gaussian
