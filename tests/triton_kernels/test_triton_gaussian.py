"""Triton ``gaussian_smooth`` kernels against the reference backend (itself tested against
``scipy.ndimage.gaussian_filter``), under the Triton interpreter on the CPU.

Every SciPy boundary mode x 1D/2D/3D, forward and backward, in float32 or float64 (each dtype
meets every mode and rank), with radii wider than their axis (several reflections / wraps),
axes of one voxel, unsmoothed axes (sigma 0), several channels and batch items; poisoned
buffers, small blocks (``tests/triton_kernels/conftest.py``).
"""

import pytest
import torch
from triton_helpers import DTYPES, compare_with_reference, cycle, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import gaussian

DEVICE = triton_device()

MODES = ("reflect", "nearest", "mirror", "wrap", "constant")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}
# (shape, sigma): radii int(4 sigma + 0.5) of 12 and 6 exceed axes of 6 and 5 (several
# reflections / wraps), a radius of 2 on an axis of one voxel.
CASES = {
    1: ((2, 3, 7), (1.5,)),
    2: ((1, 2, 5, 6), (1.0, 3.0)),
    3: ((1, 2, 4, 1, 5), (0.7, 0.5, 1.5)),
}


def _compare(x, sigma, mode, truncate=4.0, tol=None, reference_dtype=None):
    compare_with_reference(lambda v, backend: ops.gaussian_smooth(v, sigma, mode, truncate, backend=backend), (x,),
                           tol or TOL[x.dtype], reference_dtype=reference_dtype)


# every mode x rank once, float32 or float64 so that each dtype meets each mode and rank
@pytest.mark.parametrize("ndim,mode,dtype",
                         [(ndim, mode, cycle(DTYPES, ndim, i)) for ndim in (1, 2, 3) for i, mode in enumerate(MODES)])
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
        _compare(x, (3.0, 0.5), mode, truncate=2.5)  # radius 8 on an axis of 3: several periods


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_half_precision_inputs_accumulate_in_float32(dtype):
    # 2D: half read by the first pass, float32 between the passes, half written by the last
    x = torch.randn(1, 3, 6, 5, device=DEVICE).to(dtype)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=4e-2, atol=4e-2)
    _compare(x, (1.0, 1.5), "reflect", tol=tol, reference_dtype=torch.float32)


def test_non_contiguous_input():
    x = torch.randn(2, 3, 6, 5, device=DEVICE).transpose(2, 3)[:, ::2]
    assert not x.is_contiguous()
    _compare(x, (1.2, 0.9), "mirror")


def test_registered():
    from regnet.ops._triton import KERNELS

    assert KERNELS["gaussian_smooth"] is gaussian
    assert _backend.select("gaussian_smooth", DEVICE, backend="triton") is gaussian
