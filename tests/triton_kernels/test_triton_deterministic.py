"""Deterministic mode of the Triton kernels: no float atomics, bitwise repeatable gradients.

``regnet.ops._backend.set_deterministic(True)`` (or ``torch.use_deterministic_algorithms``)
switches the image gradient of the sampling ops and the sampled-field gradient of compose /
exp to the sort + gather formulation of :mod:`regnet.ops._triton.scatter`, and the ``theta``
gradient to per-program partial sums. The interpreter runs programs one after another, so
it cannot show atomics racing; these tests check instead that the atomic code paths are not
launched at all, that the gradients still match the reference, and that two runs agree bit
for bit. Buffers start poisoned (NaN, -7 for integer buffers), blocks are small
(``tests/triton_kernels/conftest.py``).
"""

import pytest
import torch
from triton_helpers import MODES, PADDINGS, cycle, far, run_weighted, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import fields, sampling, scatter

DEVICE = triton_device()

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


class _Spy:
    """Stands in for a kernel: records the constexpr options of each launch, then launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(kwargs)
            return self.kernel[grid](*args, **kwargs)
        return launch



@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    monkeypatch.setattr(scatter, "BLOCK", 32)  # fewer interpreted programs; still a partial last block
    spies = {
        "sample": _Spy(sampling._sample_backward_kernel),
        "step": _Spy(fields._step_backward_kernel),
        "gather": _Spy(scatter._csr_gather_kernel),
    }
    monkeypatch.setattr(sampling, "_sample_backward_kernel", spies["sample"])
    monkeypatch.setattr(fields, "_step_backward_kernel", spies["step"])
    monkeypatch.setattr(scatter, "_csr_gather_kernel", spies["gather"])
    _backend.set_deterministic(True)
    yield spies
    _backend.set_deterministic(False)


def _no_atomics(spies):
    """No launch took an atomic path; the gather ran."""
    for kw in spies["sample"].launches:
        assert not kw["NEED_IMAGE"] and kw["DET"], kw
    for kw in spies["step"].launches:
        assert not kw["NEED_1"] and not kw["G2_ATOMIC"], kw
    assert spies["gather"].launches


def _check(fn, inputs, spies, repeat=False):
    """Matches the reference and took no atomic path; ``repeat``: a second run is bitwise
    identical."""
    dtype = inputs[0].dtype
    with torch.no_grad():
        shape = fn(*inputs, backend="torch").shape
    weight = torch.randn(shape, dtype=dtype, device=DEVICE)
    expected = run_weighted(fn, inputs, "torch", weight)
    first = run_weighted(fn, inputs, "triton", weight)
    second = run_weighted(fn, inputs, "triton", weight) if repeat else first
    for i, (a, b, e) in enumerate(zip(first, second, expected)):
        assert not a.isnan().any(), f"[{i}]: NaN (an element the kernel did not write)"
        torch.testing.assert_close(a, e, **TOL[dtype], msg=lambda m, i=i: f"[{i}]: {m}")
        assert torch.equal(a, b), f"[{i}]: two runs differ"
    _no_atomics(spies)


# 20 / 24 voxels per item: the gather (blocks of 32) spans two programs, the second partial
SPATIAL = {2: (5, 4), 3: (2, 3, 4)}


def _inputs(ndim, dtype):
    image = torch.randn(2, 2, *SPATIAL[ndim], dtype=dtype, device=DEVICE)
    grid = far((torch.rand(2, *(4, 3, 2)[:ndim], ndim, dtype=dtype, device=DEVICE) * 2 - 1) * 1.5, 5, 5.0, 50.0)
    ddf = far(torch.randn(2, ndim, *SPATIAL[ndim], dtype=dtype, device=DEVICE) * 2, 5, 10.0, 60.0)
    theta = torch.eye(ndim, ndim + 1, dtype=dtype, device=DEVICE) * 1.3
    theta = theta + 0.25 * torch.randn(2, ndim, ndim + 1, dtype=dtype, device=DEVICE)
    return image, grid, ddf, theta


def _sampling_ops(spies, ndim, mode, padding_mode, dtype, repeat=False):
    image, grid, ddf, theta = _inputs(ndim, dtype)
    _check(lambda x, g, backend: ops.grid_sample(x, g, mode, padding_mode, False, backend=backend),
           (image, grid), spies, repeat)
    _check(lambda x, u, backend: ops.warp(x, u, mode, padding_mode, backend=backend), (image, ddf), spies, repeat)
    _check(lambda x, t, backend: ops.affine_transform(x, t, (4, 3, 2)[:ndim], mode, padding_mode, True,
                                                      backend=backend), (image, theta), spies, repeat)


def _field_ops(spies, ndim, mode, padding_mode, dtype, repeat=False):
    u1 = torch.randn(2, ndim, *SPATIAL[ndim], dtype=dtype, device=DEVICE) * 1.5
    u2 = far(torch.randn(2, ndim, *SPATIAL[ndim], dtype=dtype, device=DEVICE) * 1.5, 7, 8.0, 40.0)
    _check(lambda a, b, backend: ops.compose(a, b, mode, padding_mode, backend=backend), (u1, u2), spies, repeat)
    svf = torch.randn(2, ndim, *SPATIAL[ndim], dtype=dtype, device=DEVICE) * 3
    _check(lambda v, backend: ops.exp(v, 3, mode, padding_mode, backend=backend), (svf,), spies, repeat)


# The deterministic path adds the plan kernel (corners and weights from the same sample points
# as the atomic path, tested for every mode x padding in the other files) and the gather: every
# rank x padding once, the modes spread so that each rank meets both.
CASES = [(ndim, cycle(MODES, ndim, j), padding) for ndim in (2, 3) for j, padding in enumerate(PADDINGS)]


@pytest.mark.parametrize("ndim,mode,padding_mode", CASES)
def test_sampling_ops(_setup, ndim, mode, padding_mode):
    _sampling_ops(_setup, ndim, mode, padding_mode, torch.float32)


@pytest.mark.parametrize("ndim,mode,padding_mode", CASES)
def test_compose_and_exp(_setup, ndim, mode, padding_mode):
    _field_ops(_setup, ndim, mode, padding_mode, torch.float32)


@pytest.mark.parametrize("ndim,dtype", ((2, torch.float32), (3, torch.float64)))
def test_two_runs_are_bitwise_identical(_setup, ndim, dtype):
    _sampling_ops(_setup, ndim, "bilinear", "reflection", dtype, repeat=True)
    _field_ops(_setup, ndim, "bilinear", "border", dtype, repeat=True)


def test_long_rows_many_points_on_one_voxel(_setup):
    """Border padding clamps most points onto a few corner voxels: rows of very different
    lengths in one program."""
    image = torch.randn(1, 3, 4, 5, device=DEVICE)
    grid = torch.rand(1, 9, 11, 2, device=DEVICE) * 40 - 20
    _check(lambda x, g, backend: ops.grid_sample(x, g, "bilinear", "border", True, backend=backend),
           (image, grid), _setup)


def test_torch_deterministic_algorithms_switch_it_on(_setup):
    _backend.set_deterministic(False)
    assert not _backend.is_deterministic()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert _backend.is_deterministic()
        image = torch.randn(1, 1, 4, 5, device=DEVICE, requires_grad=True)
        ddf = torch.randn(1, 2, 4, 5, device=DEVICE)
        ops.warp(image, ddf, backend="triton").sum().backward()
    finally:
        torch.use_deterministic_algorithms(before)
    _no_atomics(_setup)


def test_set_deterministic_checks_its_argument():
    with pytest.raises(TypeError, match="bool"):
        _backend.set_deterministic(1)
    _backend.set_deterministic(False)
    assert _backend.is_deterministic() == torch.are_deterministic_algorithms_enabled()
