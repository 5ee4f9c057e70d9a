"""Triton field kernels (compose, exp) against the reference backend.

As in ``test_triton_sampling.py``: the kernels run on CPU tensors through the Triton
interpreter, every mode x padding x ndim is compared forward and backward on tiny random
fields with displacements far outside the grid, in float32 or float64 (each dtype meets each
option); buffers the kernels must fill start poisoned (NaN, or -7 for integer buffers), and
small blocks give several programs per batch item and a partial last block
(``tests/triton_kernels/conftest.py``).
"""

import pytest
import torch
from triton_helpers import DTYPES, MODES, PADDINGS, compare_with_reference, cycle, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import fields

DEVICE = triton_device()

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
# Every ndim x mode x padding (the kernels' specialisations) once, in float32 or float64 so
# that each dtype meets each ndim, mode and padding.
CASES = [(ndim, mode, padding, cycle(DTYPES, ndim, i, j))
         for ndim in (2, 3) for i, mode in enumerate(MODES) for j, padding in enumerate(PADDINGS)]
SPATIAL = {2: (5, 4), 3: (2, 3, 4)}


def _field(ndim, dtype, spatial=None, batch=2, scale=1.5, far=True):
    """``(batch, ndim, *spatial)``; by default 5 x 4 (2D) or 2 x 3 x 4 (3D): 20 / 24 voxels, two
    programs of 16 per item, the second partial."""
    spatial = spatial or SPATIAL[ndim]
    u = torch.randn(batch, ndim, *spatial[:ndim], dtype=dtype, device=DEVICE) * scale
    if far:  # every 7th displacement several grid sizes away (reflections, clamping, zeros)
        flat = u.view(-1)
        idx = torch.arange(0, flat.numel(), 7, device=DEVICE)
        sign = torch.randint(0, 2, idx.shape, device=DEVICE) * 2 - 1
        flat[idx] = sign * (8 + 30 * torch.rand(idx.shape, dtype=dtype, device=DEVICE))
    return u


def _compare(fn, inputs, tol=None, reference_dtype=None):
    """Triton vs reference, output and every input gradient. ``reference_dtype``: run the
    reference on the inputs cast to it (the oracle for float16/bfloat16 kernels)."""
    return compare_with_reference(fn, inputs, tol or TOL[inputs[0].dtype], reference_dtype=reference_dtype)


@pytest.mark.parametrize("ndim,mode,padding_mode,dtype", CASES)
def test_compose_matches_reference(ndim, mode, padding_mode, dtype):
    # far displacements in u2 (the sample points); moderate values in u1, since the reference's
    # normalised round trip of the point's coordinate is amplified by the sampled values
    u1, u2 = _field(ndim, dtype, far=False), _field(ndim, dtype)
    _compare(lambda a, b, backend: ops.compose(a, b, mode, padding_mode, backend=backend), (u1, u2))


@pytest.mark.parametrize("ndim,mode,padding_mode,dtype", CASES)
def test_exp_matches_reference(ndim, mode, padding_mode, dtype):
    # a velocity of a few voxels: the squarings move points across and out of the grid
    svf = _field(ndim, dtype, scale=3.0, far=False)
    _compare(lambda v, backend: ops.exp(v, 3, mode, padding_mode, backend=backend), (svf,))


@pytest.mark.parametrize("steps", (0, 1, 2, 4, 7, 10))
def test_exp_steps_and_checkpoint_segments(steps):
    """Every segment layout of the recomputing backward (ceil(sqrt(steps)) per segment)."""
    svf = _field(2, torch.float64, spatial=(3, 5), scale=4.0, far=False)
    _compare(lambda v, backend: ops.exp(v, steps, "bilinear", "border", backend=backend), (svf,))


def test_exp_saves_only_the_velocity():
    svf = _field(3, torch.float32, far=False).requires_grad_()
    ddf = ops.exp(svf, 7, backend="triton")
    saved = ddf.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].data_ptr() == svf.data_ptr()


def test_exp_many_steps_divides_first(monkeypatch):
    """Past the fused scale's range the velocity is divided first, as the reference does."""
    monkeypatch.setattr(fields, "_MAX_FUSED_STEPS", 1)
    svf = _field(2, torch.float32, spatial=(4, 5), scale=6.0, far=False)
    _compare(lambda v, backend: ops.exp(v, 3, "bilinear", "zeros", backend=backend), (svf,))


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_half_precision_inputs_accumulate_in_float32(dtype):
    """float16/bfloat16 fields: float32 arithmetic (exp: float32 intermediate fields), result
    rounded once; compared with the reference in float32 on the same (rounded) inputs."""
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.float16 else dict(rtol=5e-2, atol=5e-2)
    u1 = _field(3, torch.float32, far=False).to(dtype)
    u2 = _field(3, torch.float32, far=False).to(dtype)
    _compare(lambda a, b, backend: ops.compose(a, b, "bilinear", "border", backend=backend), (u1, u2),
             tol=tol, reference_dtype=torch.float32)
    _compare(lambda v, backend: ops.exp(v, 3, "bilinear", "zeros", backend=backend), (u1 * 2,),
             tol=tol, reference_dtype=torch.float32)


def test_axes_of_one_voxel():
    """An axis of one voxel samples at 0 whatever the displacement (MONAI's normalisation)."""
    for padding_mode in PADDINGS:
        u1 = _field(3, torch.float32, spatial=(1, 4, 3), batch=1, far=False)
        u2 = _field(3, torch.float32, spatial=(1, 4, 3), batch=1)
        _compare(lambda a, b, backend: ops.compose(a, b, "bilinear", padding_mode, backend=backend), (u1, u2))
        _compare(lambda v, backend: ops.exp(v, 3, "bilinear", padding_mode, backend=backend), (u2,))


def test_non_contiguous_inputs():
    u1 = _field(3, torch.float32, spatial=(4, 3, 2), far=False).permute(0, 1, 4, 3, 2)  # (2, 3, 2, 3, 4)
    u2 = _field(3, torch.float32, spatial=(2, 3, 4)).flip(2)
    svf = _field(2, torch.float32, spatial=(6, 5), far=False).transpose(2, 3)
    assert not (u1.is_contiguous() or svf.is_contiguous())
    _compare(lambda a, b, backend: ops.compose(a, b, "bilinear", "reflection", backend=backend), (u1, u2))
    _compare(lambda v, backend: ops.exp(v, 3, "bilinear", "border", backend=backend), (svf,))


@pytest.mark.parametrize("mode", MODES)
def test_compose_backward_computes_only_what_is_needed(mode):
    from regnet.ops import _torch

    u1, u2 = _field(2, torch.float32, far=False), _field(2, torch.float32)
    grad = torch.randn_like(u1)
    for needs in ((True, False), (False, True), (False, False), (True, True)):
        got = fields.compose_backward(grad, u1, u2, mode, "border", *needs)
        want = _torch.compose_backward(grad, u1, u2, mode, "border", *needs)
        for g, w, need in zip(got, want, needs):
            if not need:
                assert g is None, needs
            else:
                torch.testing.assert_close(g, w, **TOL[torch.float32])


def test_registered_for_compose_and_exp():
    from regnet.ops._triton import KERNELS

    for op in ("compose", "exp"):
        assert KERNELS[op] is fields
        assert _backend.select(op, DEVICE, backend="triton") is fields
    assert _backend.select("exp", torch.device("cpu")) is not fields  # auto: reference off CUDA
