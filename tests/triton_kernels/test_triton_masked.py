"""Weighted (masked) ``local_ncc`` and ``joint_histogram`` kernels against the reference backend,
under the Triton interpreter, and the masked losses on the Triton backend.

``weight`` layouts: one map per item, per item and channel, one for the whole batch, one per
channel shared by the batch (the kernels read it through batch / channel strides, 0 where
broadcast); every reduction of ``local_ncc`` x 1D/2D/3D; both Parzen kernels with soft weights,
zero weights, an item whose weights are all zero and tied extremes among the weighted voxels
(B-spline); deterministic mode. Gradcheck in float64 of the masked losses on the Triton backend
(2D and 3D, fast mode: the interpreter is slow); the masked LNCC mean stays fused (no map
written, the weight read by the last pass and by the coefficient pass); ``weight=None``
launches the unweighted specialisations.
"""

import pytest
import torch
from triton_helpers import DTYPES, assert_like_reference, cycle, triton_device

from regnet import ops
from regnet.losses import GlobalMILoss, LocalNCCLoss
from regnet.ops import _backend
from regnet.ops._triton import _common, joint_histogram, local_ncc

DEVICE = triton_device()

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}
SHAPES = {1: (2, 2, 9), 2: (2, 2, 3, 5), 3: (2, 2, 3, 2, 3)}
LAYOUTS = {"item": lambda b, c: (b, 1), "item-channel": lambda b, c: (b, c), "shared": lambda b, c: (1, 1),
           "channel": lambda b, c: (1, c)}


@pytest.fixture(autouse=True)
def _few_programs(monkeypatch):
    monkeypatch.setattr(joint_histogram, "PROGRAMS", 3)


def _pair(shape, dtype, kernel="gaussian"):
    pred = torch.rand(shape, dtype=torch.float64, device=DEVICE)
    target = 0.6 * pred + 0.4 * torch.rand(shape, dtype=torch.float64, device=DEVICE)
    if kernel == "b-spline":
        pred, target = pred * 30 - 7, target * 5 + 100
    return pred.to(dtype), target.to(dtype)


def _weight(shape, layout, dtype):
    """Soft weights in [0, 1) with about a third exactly zero."""
    wshape = (*LAYOUTS[layout](*shape[:2]), *shape[2:])
    w = torch.rand(wshape, dtype=torch.float64, device=DEVICE) * (torch.rand(wshape, device=DEVICE) > 0.3)
    return w.to(dtype)


def _run(op, pred, target, backend, grad_weight, needs=(True, True), **options):
    a = pred.detach().clone().requires_grad_(needs[0])
    b = target.detach().clone().requires_grad_(needs[1])
    out = op(a, b, backend=backend, **options)
    (out * grad_weight).sum().backward()
    return out.detach(), a.grad, b.grad


def _compare(op, names, pred, target, needs=(True, True), **options):
    with torch.no_grad():
        shape = op(pred, target, backend="torch", **options).shape
    grad_weight = torch.randn(shape, dtype=pred.dtype, device=DEVICE)
    expected = _run(op, pred, target, "torch", grad_weight, needs, **options)
    actual = _run(op, pred, target, "triton", grad_weight, needs, **options)
    assert_like_reference(names, actual, expected, pred.dtype, TOL[pred.dtype])
    return actual


# Every rank x reduction (the kernel's specialisations), the layouts and dtypes spread over them.
NCC_CASES = [(ndim, reduction, cycle(tuple(LAYOUTS), ndim, i), cycle(DTYPES, ndim, i))
             for ndim in (1, 2, 3) for i, reduction in enumerate(("none", "mean", "sum"))]


@pytest.mark.parametrize("ndim, reduction, layout, dtype", NCC_CASES)
def test_local_ncc_weight_matches_reference(ndim, reduction, layout, dtype):
    pred, target = _pair(SHAPES[ndim], dtype)
    weight = _weight(SHAPES[ndim], layout, dtype)
    _compare(ops.local_ncc, ("ncc", "grad_pred", "grad_target"), pred, target, kernel_size=3, reduction=reduction,
             weight=weight)


def test_local_ncc_weight_one_gradient_only():
    pred, target = _pair(SHAPES[2], torch.float64)
    weight = _weight(SHAPES[2], "item", torch.float64)
    for needs in ((True, False), (False, True)):
        _compare(ops.local_ncc, ("ncc", "grad_pred", "grad_target"), pred, target, needs, kernel_size=5,
                 kernel_type="gaussian", reduction="mean", weight=weight)


HISTOGRAM_CASES = [(kernel, ndim, cycle(tuple(LAYOUTS), ndim, i), cycle(DTYPES, ndim, i))
                   for ndim in (1, 2, 3) for i, kernel in enumerate(("gaussian", "b-spline"))]


@pytest.mark.parametrize("kernel, ndim, layout, dtype", HISTOGRAM_CASES)
def test_joint_histogram_weight_matches_reference(kernel, ndim, layout, dtype):
    pred, target = _pair(SHAPES[ndim], dtype, kernel)
    weight = _weight(SHAPES[ndim], layout, dtype)
    _compare(ops.joint_histogram, ("histogram", "grad_pred", "grad_target"), pred, target, num_bins=9, kernel=kernel,
             weight=weight)


@pytest.mark.parametrize("kernel", ("gaussian", "b-spline"))
def test_joint_histogram_zero_items_and_weighted_ties(kernel):
    """Item 0: all weights zero (an all-zero histogram, zero gradients). Item 1: the weighted
    voxels' min and max are tied, and unweighted voxels lie below / above / at them."""
    pred, target = _pair((2, 1, 6, 5), torch.float64, kernel)
    weight = _weight((2, 1, 6, 5), "item", torch.float64)
    weight[0] = 0
    weight[1, 0, 0, :2] = 0.5
    pred[1, 0, 0, :2] = -50.0  # two tied minima among the weighted voxels
    pred[1, 0, 1, :2] = 80.0
    weight[1, 0, 1, :2] = 0.7  # two tied maxima
    weight[1, 0, 2, :3] = 0
    pred[1, 0, 2, :3] = torch.tensor([-90.0, 200.0, 80.0], dtype=torch.float64)  # outside / at, weight 0
    hist, grad_pred, grad_target = _compare(ops.joint_histogram, ("histogram", "grad_pred", "grad_target"), pred,
                                            target, num_bins=8, kernel=kernel, weight=weight)
    assert hist[0].abs().max() == 0 and grad_pred[0].abs().max() == 0 and grad_target[0].abs().max() == 0
    torch.testing.assert_close(hist[1].sum().cpu(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("kernel", ("gaussian", "b-spline"))
def test_joint_histogram_weight_deterministic(kernel):
    pred, target = _pair(SHAPES[2], torch.float32, kernel)
    weight = _weight(SHAPES[2], "shared", torch.float32)
    _backend.set_deterministic(True)
    first = _compare(ops.joint_histogram, ("histogram", "grad_pred", "grad_target"), pred, target, num_bins=7,
                     kernel=kernel, weight=weight)
    second = _run(ops.joint_histogram, pred, target, "triton", torch.ones(1, device=DEVICE), num_bins=7, kernel=kernel,
                  weight=weight)
    assert torch.equal(first[0], second[0])


# ------------------------------------------------------------------------------- the losses

@pytest.mark.parametrize("ndim", (2, 3))
def test_masked_losses_gradcheck_on_triton(ndim):
    shape = (2, 1, 3, 4) if ndim == 2 else (1, 2, 2, 3, 3)
    mask = _weight(shape, "item" if ndim == 2 else "shared", torch.float64)
    losses = [(LocalNCCLoss(3), "gaussian", True), (GlobalMILoss(6), "gaussian", True),
              (GlobalMILoss(7, "b-spline"), "b-spline", False)]
    _backend.set_backend("triton")
    try:
        for loss, kernel, target_grad in losses:
            pred, target = _pair(shape, torch.float64, kernel)
            inputs = (pred.requires_grad_(), target.requires_grad_(target_grad))
            assert torch.autograd.gradcheck(lambda p, t, loss=loss: loss(p, t, mask), inputs, eps=1e-6, atol=1e-6,
                                            fast_mode=True)
    finally:
        _backend.set_backend(None)


def test_masked_losses_on_triton_equal_the_reference():
    pred, target = _pair((2, 2, 4, 5), torch.float32)
    mask = _weight((2, 2, 4, 5), "item", torch.float32) > 0
    mask[0] = False  # an empty item
    for loss in (LocalNCCLoss(3), LocalNCCLoss(3, reduction="none"), GlobalMILoss(6), GlobalMILoss(6, "b-spline")):
        results = []
        for backend in ("torch", "triton"):
            a = pred.clone().requires_grad_()
            _backend.set_backend(backend)
            try:
                value = loss(a, target, mask)
            finally:
                _backend.set_backend(None)
            (value * 0.5).sum().backward()
            results.append((value.detach(), a.grad))
        assert_like_reference(("value", "grad"), results[1], results[0], torch.float32, TOL[torch.float32])
        assert results[1][1][0].abs().max() == 0  # the empty item gets no gradient


class _Spy:
    """Records the launches of a kernel (arguments and options), then runs it."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_masked_lncc_mean_stays_fused(monkeypatch):
    """The masked mean: forward stores partial sums of the weighted map (no map buffer), the
    backward's coefficient pass gets the 0-d gradient and the weight itself."""
    spy = _Spy(local_ncc._statistics_kernel)
    monkeypatch.setattr(local_ncc, "_statistics_kernel", spy)
    shapes = []
    empty = _common.empty
    monkeypatch.setattr(_common, "empty", lambda shape, dtype, device: shapes.append(tuple(shape)) or
                        empty(shape, dtype, device))
    pred, target = _pair((2, 1, 5, 4), torch.float32)
    mask = _weight((1, 1, 5, 4), "shared", torch.float32)
    a = pred.clone().requires_grad_()
    _backend.set_backend("triton")
    try:
        value = LocalNCCLoss(3)(a, target, mask)
    finally:
        _backend.set_backend(None)
    assert pred.shape not in shapes
    (args, kwargs), = [launch for launch in spy.launches if launch[1]["OUT"] == local_ncc.OUT_PARTIAL]
    assert kwargs["HAS_W"] == 1 and args[9].shape == mask.shape
    spy.launches.clear()
    value.backward()
    (args, kwargs), = [launch for launch in spy.launches if launch[1]["OUT"] == local_ncc.OUT_COEFFICIENTS]
    assert kwargs["HAS_W"] == 1 and kwargs["GRAD"] == local_ncc.GRAD_SUM and args[6].dim() == 0
    assert all(kwargs["HAS_W"] == 0 for _, kwargs in spy.launches if kwargs["OUT"] == local_ncc.OUT_SUMS)


def test_no_weight_launches_the_unweighted_kernels(monkeypatch):
    spies = {name: _Spy(getattr(module, name)) for module, name in
             ((local_ncc, "_statistics_kernel"), (joint_histogram, "_histogram_kernel"),
              (joint_histogram, "_histogram_backward_kernel"), (joint_histogram, "_extremes_kernel"))}
    for name, spy in spies.items():
        monkeypatch.setattr(local_ncc if name == "_statistics_kernel" else joint_histogram, name, spy)
    pred, target = _pair((1, 1, 4, 5), torch.float32, "b-spline")
    a = pred.clone().requires_grad_()
    ops.local_ncc(a, target, 3, reduction="mean", backend="triton").backward()
    ops.joint_histogram(a, target, 6, "b-spline", backend="triton").sum().backward()
    ops.joint_histogram(a, target, 6, backend="triton").sum().backward()
    launches = [kwargs for spy in spies.values() for _, kwargs in spy.launches]
    assert len(launches) >= 7 and all(not kwargs["HAS_W"] for kwargs in launches)


class _HostReads(torch.overrides.TorchFunctionMode):
    """Records host reads of device values and tensors built from Python data made outside
    Triton (what a CUDA-graph capture cannot contain; as ``tests/test_cuda_graph.py``)."""

    NAMES = {"item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "tensor", "as_tensor",
             "from_numpy"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        if getattr(func, "__name__", "") in self.NAMES:
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if "triton" not in caller.split("/site-packages/")[-1].split("/")[0]:
                self.calls.append(f"{func.__name__} from {caller}:{sys._getframe(1).f_lineno}")
        return func(*args, **(kwargs or {}))


def test_masked_losses_read_nothing_back_after_the_first_call():
    """The mask's values are checked on the first call only (one host read); the next calls with
    the same mask, forward and backward, read nothing back (a CUDA graph can capture them)."""
    from regnet.losses import MSELoss

    pred, target = _pair((2, 1, 4, 5), torch.float32, "b-spline")
    mask = _weight((1, 1, 4, 5), "shared", torch.float32) > 0
    _backend.set_backend("triton")
    try:
        for loss in (LocalNCCLoss(3), GlobalMILoss(6), GlobalMILoss(6, "b-spline"), MSELoss()):
            loss(pred, target, mask)
            a = pred.clone().requires_grad_()
            with _HostReads() as spy:
                loss(a, target, mask).backward()
            assert spy.calls == [], (loss, spy.calls)
    finally:
        _backend.set_backend(None)
