"""``regnet.ops.affine_transform_params``: the affine parameters -> theta -> sample step as one op.

Oracle: the composition of the public ops, ``affine_transform(image, compose_affine(t, R, z,
s), ...)``, forward and every gradient (image and the four parameters), on both backends (Triton
through the interpreter, small shapes), 2D and 3D, batch > 1 and batch broadcasting; gradcheck in
float64; only the gradients asked for; bad input names the argument.
"""

import pytest
import torch

from regnet import ops
from regnet.ops import _backend, _torch

BACKENDS = ("torch", "triton")


def _triton_setup(monkeypatch):
    """The kernel tests' set-up: small blocks, poisoned buffers (skips without Triton)."""
    pytest.importorskip("triton")
    from triton_helpers import small_blocks_and_poisoned_buffers, triton_device

    if triton_device().type != "cpu":  # pragma: no cover - compiled kernels: tested in tests/triton_kernels
        pytest.skip("these tests use CPU tensors")
    small_blocks_and_poisoned_buffers(monkeypatch)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "triton":
        _triton_setup(monkeypatch)
    return request.param


def _parameters(batch, ndim, dtype=torch.float64, requires_grad=True):
    t = 0.2 * torch.randn(batch, ndim, dtype=dtype)
    r = torch.eye(ndim, dtype=dtype) + 0.2 * torch.randn(batch, ndim, ndim, dtype=dtype)
    z = 1 + 0.2 * torch.randn(batch, ndim, dtype=dtype)
    s = 0.2 * torch.randn(batch, ndim, dtype=dtype)
    return [p.requires_grad_(requires_grad) for p in (t, r, z, s)]


def _fused(image, t, r, z, s, shape, mode, padding, align, backend):
    return ops.affine_transform_params(image, t, r, z, s, shape, mode, padding, align, backend=backend)


def _composed(image, t, r, z, s, shape, mode, padding, align, backend):
    theta = ops.compose_affine(t, r, z, s)  # no Triton kernel: the reference, as the Triton op uses
    return ops.affine_transform(image, theta, shape, mode, padding, align, backend=backend)


def _results(fn, image, params, backend, weight, *options):
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in (image, *params)]
    out = fn(*leaves, *options, backend)
    grads = torch.autograd.grad((out * weight).sum(), [x for x in leaves if x.requires_grad], allow_unused=True)
    return out.detach(), grads


F32, F64 = torch.float32, torch.float64
# (ndim, mode, padding_mode, align_corners, dtype): each mode, padding, alignment and dtype in each rank
CASES = [(2, "bilinear", "border", True, F32), (2, "bilinear", "zeros", False, F64),
         (2, "nearest", "reflection", True, F32), (3, "bilinear", "reflection", False, F64),
         (3, "bilinear", "zeros", True, F32), (3, "nearest", "border", False, F64)]
# output shapes: 28 and 24 voxels, two programs of 16 (the second partial) per item on Triton
OUT_SHAPES = {2: (4, 7), 3: (4, 3, 2)}


@pytest.mark.parametrize("ndim,mode,padding_mode,align_corners,dtype", CASES)
def test_equals_the_composition_of_the_public_ops(backend, ndim, mode, padding_mode, align_corners, dtype):
    image = torch.rand(2, 2, *(5, 6, 4)[:ndim], dtype=dtype, requires_grad=True)
    params = _parameters(2, ndim, dtype)
    shape = OUT_SHAPES[ndim]
    options = (shape, mode, padding_mode, align_corners)
    weight = torch.randn(2, 2, *shape, dtype=dtype)
    out, grads = _results(_fused, image, params, backend, weight, *options)
    want_out, want_grads = _results(_composed, image, params, backend, weight, *options)
    assert out.shape == (2, 2, *shape) and out.dtype == dtype
    # the same computation: equal up to the order of the (atomic) image-gradient sums
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, want_out, **tol)
    assert len(grads) == 5
    for name, got, want in zip(("image", "translation", "rotation", "zoom", "shear"), grads, want_grads):
        torch.testing.assert_close(got, want, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("shared", ("image", "parameters"))
def test_batch_broadcast(backend, shared):
    """One image moved by B parameter sets, or B images by one: as the explicit batch of copies."""
    image = torch.rand(1 if shared == "image" else 3, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    params = _parameters(1 if shared == "parameters" else 3, 2)
    options = ((4, 5), "bilinear", "border", True)
    weight = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    out, grads = _results(_fused, image, params, backend, weight, *options)
    leaves = [x.detach().clone().requires_grad_() for x in (image, *params)]
    big = [x.expand(3, *x.shape[1:]).contiguous() for x in leaves]  # autograd sums the copies
    want = _composed(*big, *options, "torch")
    want_grads = torch.autograd.grad((want * weight).sum(), leaves)
    torch.testing.assert_close(out, want.detach(), rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ndim", (2, 3))
def test_gradcheck_reference(ndim):
    image = torch.rand(2, 1, *(4, 5, 3)[:ndim], dtype=torch.float64, requires_grad=True)
    params = _parameters(2, ndim)
    for padding_mode, align_corners in (("zeros", False), ("border", True)):
        assert torch.autograd.gradcheck(
            lambda x, t, r, z, s, p=padding_mode, a=align_corners: ops.affine_transform_params(
                x, t, r, z, s, (3, 4, 2)[:ndim], "bilinear", p, a, backend="torch"),
            (image, *params))


def test_gradcheck_triton(monkeypatch):
    _triton_setup(monkeypatch)
    image = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    params = _parameters(1, 2)
    assert torch.autograd.gradcheck(
        lambda x, t, r, z, s: ops.affine_transform_params(x, t, r, z, s, (3, 2), "bilinear", "reflection", False,
                                                          backend="triton"), (image, *params))


def test_only_the_needed_gradients(backend):
    """The registration's case: an image without gradient and some parameters frozen."""
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    t, r, z, s = _parameters(2, 2)
    s.requires_grad_(False)
    out = ops.affine_transform_params(image, t, r, z, s, None, "bilinear", "border", True, backend=backend)
    assert out.shape == image.shape
    out.square().sum().backward()
    assert image.grad is None and s.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (t, r, z))
    theta = ops.compose_affine(t, r, z, s)
    grad_theta, = torch.autograd.grad(
        ops.affine_transform(image, theta, None, "bilinear", "border", True, backend=backend).square().sum(), theta)
    torch.testing.assert_close(t.grad, grad_theta[..., -1], rtol=1e-12, atol=1e-12)


def test_reference_keeps_the_grid_triton_only_theta(backend):
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    out = ops.affine_transform_params(image, *_parameters(2, 2), (3, 4), backend=backend)
    saved = out.grad_fn.saved_tensors
    grids = [x for x in saved if x.shape == (2, 3, 4, 2)]
    assert len(grids) == (1 if backend == "torch" else 0)
    assert any(x.shape == (2, 2, 3) for x in saved)  # theta


def test_selected_like_the_other_ops():
    assert _backend.select("affine_transform_params", torch.device("cpu")) is _torch
    pytest.importorskip("triton")
    from regnet.ops._triton import KERNELS
    from regnet.ops._triton import affine as triton_affine

    assert KERNELS["affine_transform_params"] is triton_affine
    assert _backend.select("affine_transform_params", torch.device("cpu"), backend="triton") is triton_affine


def _good(ndim=2, batch=2):
    return torch.rand(batch, 1, *(5, 6, 4)[:ndim]), *_parameters(batch, ndim, torch.float32, requires_grad=False)


@pytest.mark.parametrize("change,error,message", [
    (lambda a: {"image": a["image"].numpy()}, TypeError, "image must be a torch.Tensor"),
    (lambda a: {"image": a["image"].long()}, TypeError, "image must have a floating dtype"),
    (lambda a: {"image": a["image"][0]}, ValueError, r"image must have shape \(B, C, \*spatial\) with 2 spatial"),
    (lambda a: {"image": torch.rand(3, 1, 5, 6)}, ValueError, "image has batch size 3 and rotation 2"),
    (lambda a: {"image": a["image"].double()}, TypeError, "rotation has dtype torch.float32 but image"),
    (lambda a: {"translation": a["translation"].tolist()}, TypeError, "translation must be a torch.Tensor"),
    (lambda a: {"rotation": torch.rand(2, 2, 3)}, ValueError, r"rotation must have shape \(B, 2, 2\) or"),
    (lambda a: {"zoom": torch.rand(2, 3)}, ValueError, r"zoom must have shape \(2, 2\) to match rotation"),
    (lambda a: {"shear": torch.rand(1, 2)}, ValueError, r"shear must have shape \(2, 2\)"),
    (lambda a: {"shear": a["shear"].double()}, TypeError, "shear has dtype torch.float64"),
    (lambda a: {"shape": (4, 0)}, ValueError, "shape must be 2 positive ints"),
    (lambda a: {"shape": (4, 5, 6)}, ValueError, "shape must be 2 positive ints"),
    (lambda a: {"mode": "bicubic"}, ValueError, "mode must be one of"),
    (lambda a: {"padding_mode": "mirror"}, ValueError, "padding_mode must be one of"),
    (lambda a: {"backend": "numpy"}, ValueError, "backend"),
])
def test_bad_input_names_the_argument(change, error, message):
    image, t, r, z, s = _good()
    args = dict(image=image, translation=t, rotation=r, zoom=z, shear=s)
    args.update(change(args))
    with pytest.raises(error, match=f"affine_transform_params.*{message}"):
        ops.affine_transform_params(**args)


def test_exported_with_defaults():
    assert "affine_transform_params" in ops.__all__
    image, *params = _good(3, 1)
    theta = ops.compose_affine(*params)
    torch.testing.assert_close(ops.affine_transform_params(image, *params), ops.affine_transform(image, theta),
                               rtol=0, atol=0)
