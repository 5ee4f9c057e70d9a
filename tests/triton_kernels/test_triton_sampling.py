"""Triton sampling kernels (grid_sample, warp, affine_transform) against the reference backend.

The kernels run on CPU tensors through the Triton interpreter (with ``TRITON_INTERPRET=0``
on a machine with CUDA, on the GPU against ATen's CUDA grid sampler).

Every mode x padding x align_corners x ndim combination (each kernel specialisation) is
compared once per source, forward and backward, on tiny random inputs with points far outside
the image, in float32 (1 and 3 channels) or float64, spread so that each dtype meets every
mode, padding and alignment. Buffers the kernels must fill completely start as NaN, and small
blocks make several programs (and a partial last block) per batch item
(``tests/triton_kernels/conftest.py``).
"""

import itertools

import pytest
import torch
from triton_helpers import MODES, PADDINGS, compare_with_reference, cycle, far, triton_device

from regnet import ops
from regnet.ops import _backend
from regnet.ops._triton import sampling

DEVICE = triton_device()

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
# (dtype, channels): float32 with one and several channels, float64 with two, spread over the
# combinations of the kernel's options (see ``CASES``).
KINDS = ((torch.float32, 1), (torch.float32, 3), (torch.float64, 2))
# Every ndim x mode x padding x align_corners (the kernel's specialisations) once, each with
# one of KINDS chosen so that every kind meets each ndim, mode, padding and alignment.
CASES = [
    (ndim, mode, padding, align, *cycle(KINDS, i, j, int(align)))
    for ndim in (2, 3) for i, mode in enumerate(MODES) for j, padding in enumerate(PADDINGS) for align in (True, False)
]


def _image(ndim, channels, dtype, spatial=(3, 4, 5), batch=2):
    return torch.randn(batch, channels, *spatial[:ndim], dtype=dtype, device=DEVICE)


def _grid(ndim, dtype, padding_mode, out_spatial=(4, 3, 2), batch=2):
    grid = (torch.rand(batch, *out_spatial[:ndim], ndim, dtype=dtype, device=DEVICE) * 2 - 1) * 1.5
    far(grid, 5, 5.0, 50.0)  # several reflections away
    if padding_mode != "reflection":
        # ATen's CPU reflection in 2D is not exact this far out; zeros / border are.
        far(grid.view(-1)[2:], 11, 1e7, 1e7)
    return grid


def _ddf(ndim, dtype, spatial=(3, 4, 5), batch=2):
    ddf = torch.randn(batch, ndim, *spatial[:ndim], dtype=dtype, device=DEVICE) * 2
    return far(ddf, 5, 10.0, 60.0)


def _theta(ndim, dtype, batch=2):
    theta = torch.eye(ndim, ndim + 1, dtype=dtype, device=DEVICE) * 1.3
    theta = theta + 0.25 * torch.randn(batch, ndim, ndim + 1, dtype=dtype, device=DEVICE)
    theta[1:] *= 6  # a second pair samples mostly far outside
    return theta


def _compare(fn, inputs, overrides=None):
    """Triton against the reference; ``overrides`` replaces ``TOL`` per result name."""
    compare_with_reference(fn, inputs, TOL[inputs[0].dtype], overrides=overrides)


@pytest.mark.parametrize("ndim,mode,padding_mode,align_corners,dtype,channels", CASES)
def test_grid_sample_matches_reference(ndim, mode, padding_mode, align_corners, dtype, channels):
    image = _image(ndim, channels, dtype)
    grid = _grid(ndim, dtype, padding_mode)
    _compare(lambda x, g, backend: ops.grid_sample(x, g, mode, padding_mode, align_corners, backend=backend),
             (image, grid))


@pytest.mark.parametrize("ndim,mode,padding_mode,align_corners,dtype,channels", CASES)
def test_affine_transform_matches_reference(ndim, mode, padding_mode, align_corners, dtype, channels):
    image = _image(ndim, channels, dtype)
    theta = _theta(ndim, dtype)
    shape = (4, 3, 2)[:ndim]  # output grid differs from the image grid
    # The theta gradient sums coordinate-weighted terms over every output point; with the
    # second pair sampling several reflections away, float32 rounding of the sample positions
    # (the two backends build them in different orders) shows up at ~1e-4 of its size.
    loose = {"grad[1]": dict(rtol=3e-4, atol=1e-4)} if dtype == torch.float32 else None
    _compare(lambda x, t, backend: ops.affine_transform(x, t, shape, mode, padding_mode, align_corners,
                                                        backend=backend), (image, theta), loose)


# warp: align_corners=True only (MONAI's Warp); every ndim x mode x padding, kinds spread.
@pytest.mark.parametrize("ndim,mode,padding_mode,dtype,channels",
                         [(ndim, mode, padding, *cycle(KINDS, i, j)) for ndim in (2, 3)
                          for i, mode in enumerate(MODES) for j, padding in enumerate(PADDINGS)])
def test_warp_matches_reference(ndim, mode, padding_mode, dtype, channels):
    image = _image(ndim, channels, dtype)
    ddf = _ddf(ndim, dtype)
    _compare(lambda x, u, backend: ops.warp(x, u, mode, padding_mode, backend=backend), (image, ddf))


@pytest.mark.parametrize("padding_mode,align_corners", itertools.product(PADDINGS, (True, False)))
def test_axes_of_one_voxel(padding_mode, align_corners):
    """Size-1 axes: align_corners=True reflection has an empty span; warp samples at 0."""
    spatial = (1, 4, 1)
    image = _image(3, 2, torch.float32, spatial=spatial, batch=1)
    grid = _grid(3, torch.float32, padding_mode, out_spatial=(2, 1, 3), batch=1)
    _compare(lambda x, g, backend: ops.grid_sample(x, g, "bilinear", padding_mode, align_corners, backend=backend),
             (image, grid))
    theta = _theta(3, torch.float32, batch=1)
    _compare(lambda x, t, backend: ops.affine_transform(x, t, (1, 3, 2), "bilinear", padding_mode, align_corners,
                                                        backend=backend), (image, theta))
    if align_corners:
        ddf = _ddf(3, torch.float32, spatial=spatial, batch=1)
        _compare(lambda x, u, backend: ops.warp(x, u, "bilinear", padding_mode, backend=backend), (image, ddf))


@pytest.mark.parametrize("padding_mode,align_corners", itertools.product(PADDINGS, (True, False)))
@pytest.mark.parametrize("ndim", (2, 3))
def test_nearest_rounds_ties_to_even(ndim, padding_mode, align_corners):
    """Sample points exactly half-way between voxels (exact in float32) round as nearbyint."""
    n = 5 if align_corners else 4
    image = _image(ndim, 2, torch.float32, spatial=(n, n, n), batch=1)
    # voxel coordinate p = -1.5, -0.5, ..., n + 0.5 on every axis (the diagonal): every tie in
    # and around the image, on each axis
    p = torch.arange(-1.5, n + 1.0, 1.0, device=DEVICE)
    g = p / 2 - 1 if align_corners else (2 * p + 1) / 4 - 1
    grid = g.view(1, -1, *[1] * (ndim - 1), 1).expand(1, len(g), *[1] * (ndim - 1), ndim).contiguous()
    _compare(lambda x, q, backend: ops.grid_sample(x, q, "nearest", padding_mode, align_corners, backend=backend),
             (image, grid))


def test_theta_gradient_summed_over_many_programs():
    image = _image(2, 2, torch.float32, spatial=(9, 11))
    theta = _theta(2, torch.float32)
    theta[1] /= 6
    # 9 x 13 output voxels = 8 programs of 16 per batch item, the last one partial.
    _compare(lambda x, t, backend: ops.affine_transform(x, t, (9, 13), "bilinear", "border", True, backend=backend),
             (image, theta))


def test_non_contiguous_inputs():
    image = _image(3, 4, torch.float32, spatial=(5, 4, 3)).permute(0, 1, 4, 3, 2)[:, ::2]  # (2, 2, 3, 4, 5)
    grid = _grid(3, torch.float32, "border", out_spatial=(2, 3, 4)).permute(0, 3, 2, 1, 4)  # (2, 4, 3, 2, 3)
    ddf = _ddf(3, torch.float32, spatial=(5, 4, 3)).permute(0, 1, 4, 3, 2)  # (2, 3, 3, 4, 5)
    theta = _theta(3, torch.float32).transpose(1, 2).contiguous().transpose(1, 2)
    assert not (image.is_contiguous() or grid.is_contiguous() or ddf.is_contiguous() or theta.is_contiguous())
    _compare(lambda x, g, backend: ops.grid_sample(x, g, "bilinear", "border", False, backend=backend), (image, grid))
    _compare(lambda x, u, backend: ops.warp(x, u, "bilinear", "reflection", backend=backend), (image, ddf))
    _compare(lambda x, t, backend: ops.affine_transform(x, t, None, "bilinear", "zeros", False, backend=backend),
             (image, theta))


@pytest.mark.parametrize("mode", MODES)
def test_backward_computes_only_what_is_needed(mode):
    from regnet.ops import _torch

    image = _image(2, 2, torch.float32)
    grid = _grid(2, torch.float32, "zeros")
    ddf = _ddf(2, torch.float32)
    theta = _theta(2, torch.float32)
    shape = (4, 3)
    calls = (
        ("grid_sample", (image, grid), (mode, "zeros", False),
         grid.shape[1:-1]),
        ("warp", (image, ddf), (mode, "border"), ddf.shape[2:]),
        ("affine_transform", (image, theta), (shape, mode, "reflection", True), shape),
    )
    for op, inputs, options, out_spatial in calls:
        grad = torch.randn(2, 2, *out_spatial, device=DEVICE)
        ours = getattr(sampling, f"{op}_backward")
        ref = getattr(_torch, f"{op}_backward")
        for needs in ((True, False), (False, True), (False, False)):
            got = ours(grad, *inputs, *options, *needs)
            want = ref(grad, *inputs, *options, *needs)
            for g, w, need in zip(got, want, needs):
                if not need:
                    assert g is None, (op, needs)
                else:
                    torch.testing.assert_close(g, w, **TOL[torch.float32])


def test_registered_for_the_sampling_ops():
    from regnet.ops._triton import KERNELS

    for op in ("grid_sample", "warp", "affine_transform"):
        assert KERNELS[op] is sampling
        assert _backend.select(op, DEVICE, backend="triton") is sampling
    assert _backend.select("warp", torch.device("cpu")) is not sampling  # auto: reference off CUDA
    with pytest.raises(ValueError, match="no Triton kernel"):
        _backend.select("jacobian_det", DEVICE, backend="triton")
