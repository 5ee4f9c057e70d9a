"""Triton ``joint_histogram`` kernels against the reference backend, under the Triton interpreter.

Both Parzen kernels (Gaussian, B-spline) x several bin counts (the smallest allowed, not
powers of two, wider than the 16-bin minimum tile) x float32/float64 x 1D/2D/3D images,
forward and the gradients w.r.t. both images; intensities outside [0, 1] (Gaussian clamp);
tied minima / maxima and constant items (B-spline placement); one gradient only;
deterministic mode (no atomics, bitwise repeatable); half-precision inputs; non-contiguous
inputs. Buffers the kernels must fill start poisoned (NaN), blocks are shrunk to 16 voxels
and the program count to 3 per batch, so that each program loops over several blocks with
a partial last one.
"""

import pytest
import torch
from triton_helpers import compare_pair, run_pair, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import joint_histogram

DEVICE = triton_device()

KERNELS = ("gaussian", "b-spline")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}
SHAPES = {1: (2, 3, 13), 2: (2, 2, 7, 5), 3: (1, 2, 3, 4, 5)}


@pytest.fixture(autouse=True)
def _few_programs(monkeypatch):
    monkeypatch.setattr(joint_histogram, "PROGRAMS", 3)


def _pair(shape, kernel, dtype=torch.float64):
    """Related intensities; Gaussian: partly outside [0, 1] (clamped); B-spline: any range."""
    pred = torch.rand(shape, dtype=torch.float64, device=DEVICE)
    target = 0.6 * pred + 0.4 * torch.rand(shape, dtype=torch.float64, device=DEVICE)
    if kernel == "gaussian":
        pred = pred * 1.2 - 0.1
    else:
        pred, target = pred * 30 - 7, target * 5 + 100
    return pred.to(dtype), target.to(dtype)


def _compare(pred, target, tol=None, needs=(True, True), reference_dtype=None, **options):
    return compare_pair(ops.joint_histogram, ("histogram", "grad_pred", "grad_target"), pred, target,
                        tol or TOL[pred.dtype], needs, reference_dtype, **options)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("num_bins", (5, 12, 32))
@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_reference(kernel, num_bins, dtype):
    pred, target = _pair(SHAPES[2], kernel, dtype)
    _compare(pred, target, num_bins=num_bins, kernel=kernel)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("ndim", (1, 3))
def test_ranks(ndim, kernel):
    pred, target = _pair(SHAPES[ndim], kernel)
    _compare(pred, target, num_bins=7, kernel=kernel)


@pytest.mark.parametrize("num_bins", (2, 3, 17))
def test_gaussian_bin_counts_and_sigma(num_bins):
    pred, target = _pair(SHAPES[1], "gaussian")
    for sigma_ratio in (0.5, 0.1, 2.0):  # 0.1: the nearest-centre shift keeps weights from underflowing
        _compare(pred, target, num_bins=num_bins, kernel="gaussian", sigma_ratio=sigma_ratio)


def test_bspline_ties_and_constant_items():
    """Tied minima / maxima share the placement gradient; a constant item gets zero gradient."""
    pred, target = _pair((3, 1, 5, 6), "b-spline")
    flat = pred.view(3, -1)
    flat[0, :4] = flat[0].min()
    flat[0, -3:] = flat[0].max()
    flat[1] = 2.5  # constant pred
    target.view(3, -1)[2] = -1.0  # constant target
    _compare(pred, target, num_bins=9, kernel="b-spline")
    _compare(pred.float(), target.float(), num_bins=9, kernel="b-spline")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("needs", ((True, False), (False, True)))
def test_one_gradient_only(kernel, needs):
    pred, target = _pair(SHAPES[2], kernel)
    _compare(pred, target, needs=needs, num_bins=10, kernel=kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_deterministic_mode_repeats_bitwise_without_atomics(kernel, monkeypatch):
    launched = []
    original = joint_histogram._histogram_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(kwargs["DET"])
                return original[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(joint_histogram, "_histogram_kernel", Spy())
    pred, target = _pair(SHAPES[3], kernel, torch.float32)
    _backend.set_deterministic(True)
    first = _compare(pred, target, num_bins=11, kernel=kernel)
    second = run_pair(ops.joint_histogram, pred, target, "triton", torch.ones(1, device=DEVICE), num_bins=11,
                      kernel=kernel)
    assert launched and all(launched)
    assert torch.equal(first[0], second[0])


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_half_precision_inputs_accumulate_in_float32(dtype):
    for kernel in KERNELS:
        pred, target = _pair(SHAPES[2], kernel, dtype)
        _compare(pred, target, tol=dict(rtol=1e-2, atol=1e-2), reference_dtype=torch.float32, num_bins=8, kernel=kernel)


def test_non_contiguous_inputs():
    pred, target = _pair((2, 4, 6, 5), "gaussian")
    pred, target = pred.transpose(2, 3)[:, ::2], target.transpose(2, 3)[:, 1::2]
    assert not pred.is_contiguous()
    _compare(pred, target, num_bins=6, kernel="gaussian")
    _compare(pred * 4, target, num_bins=6, kernel="b-spline")


def test_mutual_information_loss_through_triton():
    from regnet.losses import GlobalMILoss

    pred, target = _pair(SHAPES[3], "gaussian", torch.float32)
    results = []
    for backend in ("torch", "triton"):
        a = pred.clone().requires_grad_()
        _backend.set_backend(backend)
        try:
            loss = GlobalMILoss(num_bins=16)(a, target)
        finally:
            _backend.set_backend(None)
        loss.backward()
        results.append((loss.detach(), a.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-7)


def test_registered():
    from regnet.ops._triton import KERNELS as REGISTRY

    assert REGISTRY["joint_histogram"] is joint_histogram
    assert _backend.select("joint_histogram", DEVICE, backend="triton") is joint_histogram
