"""Triton ``local_ncc`` kernels against the reference backend, under the Triton interpreter.

Every window type x convention x rank (1D, 2D, 3D) x float32/float64, forward and the
gradients w.r.t. both images; odd window sizes 3..9, also wider than an axis; one gradient
only; the large-offset case (images + 1000) against the float64 reference; half-precision
inputs; non-contiguous inputs; an expanded (stride-0) map gradient. The fused reductions
(``reduction="mean"`` / ``"sum"``) against the reference's and against ``map.mean()`` /
``map.sum()`` and autograd through them, for the same combinations (each window type x
convention x rank with one of the two reductions, alternating). Buffers the kernels must fill
start poisoned (NaN) and blocks are shrunk to 16 voxels (32 in the reduction tests), so that
the passes span several programs with a partial last block (and several programs contribute
partial sums).
"""

import pytest
import torch
from triton_helpers import DTYPES, assert_like_reference, compare_pair, cycle, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import _common, local_ncc

DEVICE = triton_device()

KERNEL_TYPES = ("rectangular", "triangular", "gaussian")
CONVENTIONS = ("monai", "torchreg")
SMOOTHING = {"monai": (0.0, 1e-5), "torchreg": (1e-5, 1e-5)}
# float32: the map divides by local variances, which amplifies rounding where they are small.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}
SHAPES = {1: (2, 2, 11), 2: (2, 1, 5, 7), 3: (1, 2, 4, 3, 5)}
REDUCTIONS = ("mean", "sum")
# The window type and the convention are data for the kernels (weights, parameters), the rank,
# the dtype and the reduction their specialisations. Every window type x rank once, with the
# convention, the dtype (and the reduction) spread so that every window type meets both
# conventions and both dtypes, and every rank both dtypes (and both reductions); the full
# product would take four times as long.
CASES = [(ndim, kernel_type, cycle(CONVENTIONS, ndim, i), cycle(DTYPES, i, ndim // 2))
         for ndim in (1, 2, 3) for i, kernel_type in enumerate(KERNEL_TYPES)]
REDUCED_CASES = [(ndim, kernel_type, cycle(CONVENTIONS, ndim, i, 1), cycle(REDUCTIONS, ndim, i),
                  cycle(DTYPES, i, ndim // 2, 1)) for ndim in (1, 2, 3) for i, kernel_type in enumerate(KERNEL_TYPES)]
REDUCED_SHAPES = {**SHAPES, 3: (1, 2, 3, 4, 3)}  # 3D: 72 voxels, 3 programs of 32


def _pair(shape, dtype=torch.float64, offset=0.0):
    """A pred/target pair with local structure: target = smooth function of pred + noise, and a
    zero background block (the minimum) in pred."""
    pred = torch.rand(shape, dtype=torch.float64, device=DEVICE)
    target = 0.6 * pred + 0.4 * torch.rand(shape, dtype=torch.float64, device=DEVICE) ** 2
    pred.view(-1)[: max(1, pred.numel() // 8)] = 0.0
    return (pred + offset).to(dtype), (target + offset).to(dtype)


def _scaled_tol(tol, reference):
    """``atol`` relative to the largest reference value (gradients scale with the weights)."""
    return dict(rtol=tol["rtol"], atol=tol["atol"] * max(1.0, reference.abs().max().item()))


def _compare(pred, target, tol=None, needs=(True, True), reference_dtype=None, **options):
    return compare_pair(ops.local_ncc, ("map", "grad_pred", "grad_target"), pred, target, tol or TOL[pred.dtype],
                        needs, reference_dtype, **options)


@pytest.mark.parametrize("ndim,kernel_type,convention,dtype", CASES)
def test_matches_reference(ndim, kernel_type, convention, dtype):
    pred, target = _pair(SHAPES[ndim], dtype)
    nr, dr = SMOOTHING[convention]
    _compare(pred, target, kernel_size=5, kernel_type=kernel_type, smooth_nr=nr, smooth_dr=dr, convention=convention)


# the window's size and weights are data for the kernels: each size once and each window type
# twice (each also wider than the axis of 4), conventions alternating
@pytest.mark.parametrize("kernel_size,kernel_type,convention", [
    (3, "rectangular", "monai"), (5, "triangular", "torchreg"), (7, "gaussian", "monai"),
    (9, "rectangular", "torchreg"), (5, "gaussian", "torchreg"), (9, "triangular", "monai")])
def test_kernel_sizes_and_windows_wider_than_an_axis(kernel_size, kernel_type, convention):
    pred, target = _pair((1, 2, 4, 10))  # windows of 5..9 exceed the first axis
    nr, dr = SMOOTHING[convention]
    _compare(pred, target, kernel_size=kernel_size, kernel_type=kernel_type, smooth_nr=nr, smooth_dr=dr,
             convention=convention)


@pytest.mark.parametrize("kernel_size", (3, 9))  # within the axes of 3, 4, 4 and wider than all
def test_kernel_sizes_3d(kernel_size):
    pred, target = _pair((1, 1, 3, 4, 4))
    _compare(pred, target, kernel_size=kernel_size, kernel_type="gaussian")
    _compare(pred.float(), target.float(), kernel_size=kernel_size, kernel_type="triangular", convention="torchreg")


@pytest.mark.parametrize("needs", ((True, False), (False, True)))
def test_one_gradient_only(needs):
    pred, target = _pair((2, 1, 4, 3, 3))
    _compare(pred, target, needs=needs, kernel_size=3)
    _compare(pred, target, needs=needs, kernel_size=5, kernel_type="triangular", convention="torchreg", smooth_nr=1e-5)


@pytest.mark.parametrize("ndim,convention", ((2, "monai"), (3, "torchreg")))
def test_large_intensity_offsets_stay_accurate_in_float32(ndim, convention):
    """Images + 1000 in float32 against the reference in float64 on the same values: the
    min-shift keeps the local variances' digits (rectangular window: exact border correction)."""
    shape = (1, 1, 9, 8) if ndim == 2 else (1, 1, 5, 4, 6)
    pred, target = _pair(shape, torch.float32, offset=1000.0)
    nr, dr = SMOOTHING[convention]
    options = dict(kernel_size=5, smooth_nr=nr, smooth_dr=dr, convention=convention)
    _compare(pred, target, tol=dict(rtol=1e-4, atol=1e-4), reference_dtype=torch.float64, **options)


def test_identical_images_and_zero_background():
    """An image against itself: 1 where the window sees structure; the zero background
    (the minimum) stays exact, so constant windows give the smoothing limit, not noise."""
    x = torch.zeros(1, 1, 8, 9, device=DEVICE)
    x[..., 2:6, 3:7] = torch.rand(4, 4) + 1.0
    _compare(x, x.clone(), tol=dict(rtol=1e-5, atol=1e-6))
    _compare(x, x.clone(), tol=dict(rtol=1e-5, atol=1e-6), convention="torchreg", smooth_nr=1e-5)


def test_constant_images_give_finite_values():
    x = torch.full((1, 2, 4, 5), 3.0, device=DEVICE)
    out, gp, gt = _compare(x, x.clone() * 2)
    assert torch.isfinite(out).all() and torch.isfinite(gp).all() and torch.isfinite(gt).all()


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_half_precision_inputs_accumulate_in_float32(dtype):
    pred, target = _pair((1, 2, 6, 5), dtype)
    _compare(pred, target, tol=dict(rtol=3e-2, atol=3e-2), reference_dtype=torch.float32, kernel_size=3)


def test_non_contiguous_inputs():
    pred, target = _pair((2, 4, 6, 7))
    pred, target = pred.transpose(2, 3)[:, ::2], target.transpose(2, 3)[:, 1::2]
    assert not pred.is_contiguous()
    _compare(pred, target, kernel_size=3, kernel_type="gaussian")


def test_map_mean_expanded_gradient():
    """``map.mean()`` hands the map's backward an expanded (stride 0) gradient."""
    pred, target = _pair((2, 1, 5, 6, 4), torch.float32)
    grads = []
    for backend in ("torch", "triton"):
        a = pred.clone().requires_grad_()
        value = ops.local_ncc(a, target, 3, backend=backend).mean()
        value.backward()
        grads.append((value.detach(), a.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-7)


# --- fused reduction --------------------------------------------------------------------------

@pytest.fixture
def _reduction_blocks(monkeypatch):
    """Blocks of 32: still 2 (1D) to 4 (3D) programs with a partial last block, at half the
    interpreted programs of 16."""
    monkeypatch.setattr(local_ncc, "BLOCK", 32)


def _run_reduced(pred, target, backend, reduction, scale, needs=(True, True), fused=True, **options):
    """``reduction`` of the map (fused in the op, or ``map.mean()`` / ``map.sum()``) and the
    gradients of ``scale * value``."""
    a = pred.detach().clone().requires_grad_(needs[0])
    b = target.detach().clone().requires_grad_(needs[1])
    if fused:
        value = ops.local_ncc(a, b, backend=backend, reduction=reduction, **options)
    else:
        value = getattr(ops.local_ncc(a, b, backend=backend, **options), reduction)()
    (value * scale).backward()
    return value.detach(), a.grad, b.grad


def _compare_reduced(pred, target, reduction, tol=None, needs=(True, True), reference_dtype=None, **options):
    """The fused Triton reduction against the reference's fused reduction and against the
    reference's ``map.mean()`` / ``map.sum()`` with autograd through it; values and gradients.
    The scale (not 1) checks that the kernel reads the gradient's value (and 1/numel for mean)."""
    ref_pred = pred if reference_dtype is None else pred.to(reference_dtype)
    ref_target = target if reference_dtype is None else target.to(reference_dtype)
    scale = -1.7
    actual = _run_reduced(pred, target, "triton", reduction, scale, needs, **options)
    tol = tol or TOL[pred.dtype]
    for how in ("fused", "map"):
        expected = _run_reduced(ref_pred, ref_target, "torch", reduction, scale, needs, fused=how == "fused", **options)
        assert_like_reference(("value", "grad_pred", "grad_target"), actual, expected, pred.dtype, tol, f"{how} ")
    assert actual[0].shape == ()
    return actual


@pytest.mark.usefixtures("_reduction_blocks")
@pytest.mark.parametrize("ndim,kernel_type,convention,reduction,dtype", REDUCED_CASES)
def test_reduction_matches_reference(ndim, kernel_type, convention, reduction, dtype):
    pred, target = _pair(REDUCED_SHAPES[ndim], dtype)
    nr, dr = SMOOTHING[convention]
    _compare_reduced(pred, target, reduction, kernel_size=5, kernel_type=kernel_type, smooth_nr=nr, smooth_dr=dr,
                     convention=convention)


@pytest.mark.usefixtures("_reduction_blocks")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("needs", ((True, False), (False, True)))
def test_reduction_one_gradient_only(needs, reduction):
    pred, target = _pair((2, 1, 4, 3, 3))
    if reduction == "mean":
        _compare_reduced(pred, target, reduction, needs=needs, kernel_size=3)
    else:
        _compare_reduced(pred.float(), target.float(), reduction, needs=needs, kernel_size=5, kernel_type="triangular",
                         convention="torchreg", smooth_nr=1e-5)


@pytest.mark.usefixtures("_reduction_blocks")
@pytest.mark.parametrize("dtype,reduction", ((torch.float32, "mean"), (torch.float64, "sum")))
def test_reduction_equals_the_triton_map_path(dtype, reduction):
    """The fused reduction against the Triton map reduced by torch (and autograd through it)."""
    pred, target = _pair(SHAPES[2], dtype)
    options = {"kernel_size": 5, "kernel_type": "gaussian", "convention": "torchreg", "smooth_nr": 1e-5}
    fused = _run_reduced(pred, target, "triton", reduction, 2.5, **options)
    via_map = _run_reduced(pred, target, "triton", reduction, 2.5, fused=False, **options)
    for name, a, e in zip(("value", "grad_pred", "grad_target"), fused, via_map):
        torch.testing.assert_close(a, e, **_scaled_tol(TOL[dtype], e), msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.usefixtures("_reduction_blocks")
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_reduction_half_precision_inputs(dtype):
    pred, target = _pair((1, 2, 6, 5), dtype)
    for reduction in REDUCTIONS:
        _compare_reduced(pred, target, reduction, tol={"rtol": 3e-2, "atol": 3e-2}, reference_dtype=torch.float32,
                         kernel_size=3)


class _Spy:
    """Stands in for a kernel: records the arguments of each launch, then launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reduction_writes_no_map_and_backward_reads_a_scalar(monkeypatch, reduction):
    """Forward: no map-sized buffer, the last pass stores partial sums (several programs).
    Backward: the coefficient pass gets the 0-d gradient itself (a pointer, no map)."""
    spy = _Spy(local_ncc._statistics_kernel)
    monkeypatch.setattr(local_ncc, "_statistics_kernel", spy)
    shapes = []
    empty = _common.empty

    def recording_empty(shape, dtype, device):
        shapes.append(tuple(shape))
        return empty(shape, dtype, device)

    monkeypatch.setattr(_common, "empty", recording_empty)
    pred, target = _pair((1, 2, 5, 4), torch.float32)
    a = pred.clone().requires_grad_()
    value = ops.local_ncc(a, target, 3, backend="triton", reduction=reduction)
    assert value.shape == () and pred.shape not in shapes
    modes = [kwargs["OUT"] for _, kwargs in spy.launches]
    assert modes == [local_ncc.OUT_SUMS, local_ncc.OUT_PARTIAL]
    assert (pred.numel() + local_ncc.BLOCK - 1) // local_ncc.BLOCK in [s[0] for s in shapes if len(s) == 1]
    spy.launches.clear()
    value.backward()
    (args, kwargs), = [launch for launch in spy.launches if launch[1]["OUT"] == local_ncc.OUT_COEFFICIENTS]
    assert kwargs["GRAD"] == {"mean": local_ncc.GRAD_MEAN, "sum": local_ncc.GRAD_SUM}[reduction]
    assert args[6].dim() == 0  # g_ptr: the 0-d gradient itself
    assert all(kwargs["GRAD"] == local_ncc.GRAD_MAP for _, kwargs in spy.launches
               if kwargs["OUT"] != local_ncc.OUT_COEFFICIENTS)


@pytest.mark.usefixtures("_reduction_blocks")
def test_loss_uses_the_fused_reduction():
    """``LocalNCCLoss`` mean / sum / none on the Triton backend equal the reference's."""
    from regnet.losses import LocalNCCLoss

    pred, target = _pair((2, 1, 4, 3, 3), torch.float32)
    for reduction in ("mean", "sum", "none"):
        results = []
        for backend in ("torch", "triton"):
            a = pred.clone().requires_grad_()
            _backend.set_backend(backend)
            try:
                loss = LocalNCCLoss(kernel_size=3, reduction=reduction)(a, target)
            finally:
                _backend.set_backend(None)
            (loss * 0.5).sum().backward()
            results.append((loss.detach(), a.grad))
        (value, grad), (expected_value, expected_grad) = results[1], results[0]
        assert value.shape == expected_value.shape == (() if reduction != "none" else pred.shape)
        torch.testing.assert_close(value, expected_value, **_scaled_tol(TOL[torch.float32], expected_value))
        torch.testing.assert_close(grad, expected_grad, **_scaled_tol(TOL[torch.float32], expected_grad))


def test_window_and_parameters_are_cached_device_constants():
    """No host-to-device copy per call (CUDA-graph capture): the window the op saves and the
    kernels' parameter buffer are the same tensors on every call."""
    pred, target = _pair((1, 1, 4, 5), torch.float32)
    pred.requires_grad_()
    # the outputs stay alive: a custom Function's saved tensors are released with its output
    outputs = [ops.local_ncc(pred, target, 5, "gaussian", backend="triton") for _ in range(2)]
    windows = [out.grad_fn.saved_tensors[2] for out in outputs]
    assert windows[0].data_ptr() == windows[1].data_ptr() and windows[0].device == pred.device
    problems = [local_ncc._Problem(pred, target, windows[0], 7.5, 0.0, 1e-5, 0.0) for _ in range(2)]
    assert problems[0].params.data_ptr() == problems[1].params.data_ptr()
    assert problems[0].k.data_ptr() == windows[0].data_ptr()


@pytest.mark.parametrize("reduction", ("none", "mean"))
def test_backward_saves_only_the_inputs(reduction):
    pred, target = _pair((1, 1, 4, 5, 3), torch.float32)
    pred.requires_grad_()
    out = ops.local_ncc(pred, target, 3, backend="triton", reduction=reduction)
    saved = [t for t in out.grad_fn.saved_tensors if t.numel() > 3]  # the window itself is 3 taps
    assert {t.data_ptr() for t in saved} == {pred.data_ptr(), target.data_ptr()}


def test_registered():
    from regnet.ops._triton import KERNELS

    assert KERNELS["local_ncc"] is local_ncc
    assert _backend.select("local_ncc", DEVICE, backend="triton") is local_ncc
