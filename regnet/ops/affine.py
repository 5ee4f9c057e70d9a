"""Affine ops: ``affine_grid`` (exactly ``torch.nn.functional.affine_grid``),
``affine_transform`` (fused ``grid_sample(image, affine_grid(theta))``), ``compose_affine``
(torchreg's ``[R @ S | t]``) and ``affine_transform_params`` (``affine_transform`` of
``compose_affine``'s ``theta``, one step), each with a hand-written backward."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops import _broadcast
from regnet.ops._backend import select


class AffineGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, size, align_corners, impl):
        ctx.save_for_backward(theta)
        ctx.options = (size, align_corners)
        ctx.impl = impl
        return impl.affine_grid_forward(theta, size, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return ctx.impl.affine_grid_backward(grad, theta, *ctx.options), None, None, None


class AffineTransformFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, theta, shape, mode, padding_mode, align_corners, impl):
        ctx.save_for_backward(image, theta)  # the grid is rebuilt in backward, never stored
        ctx.options = (shape, mode, padding_mode, align_corners)
        ctx.impl = impl
        return impl.affine_transform_forward(image, theta, shape, mode, padding_mode, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, theta = ctx.saved_tensors
        grad_image, grad_theta = ctx.impl.affine_transform_backward(
            grad, image, theta, *ctx.options, *ctx.needs_input_grad[:2]
        )
        return grad_image, grad_theta, None, None, None, None, None


class AffineTransformParamsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, translation, rotation, zoom, shear, shape, mode, padding_mode, align_corners, impl):
        out, saved = impl.affine_transform_params_forward(image, translation, rotation, zoom, shear, shape, mode,
                                                          padding_mode, align_corners)
        ctx.save_for_backward(image, translation, rotation, zoom, shear, *saved)
        ctx.options = (shape, mode, padding_mode, align_corners)
        ctx.impl = impl
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, translation, rotation, zoom, shear, *saved = ctx.saved_tensors
        grads = ctx.impl.affine_transform_params_backward(grad, image, translation, rotation, zoom, shear, saved,
                                                          *ctx.options, ctx.needs_input_grad[:5])
        return (*grads, None, None, None, None, None)


class ComposeAffineFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, translation, rotation, zoom, shear, impl):
        ctx.save_for_backward(translation, rotation, zoom, shear)
        ctx.impl = impl
        return impl.compose_affine_forward(translation, rotation, zoom, shear)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grads = ctx.impl.compose_affine_backward(grad, *ctx.saved_tensors, ctx.needs_input_grad[:4])
        return (*grads, None)


def _check_theta(fn: str, theta, batch: int | None, ndim: int | None) -> int:
    """Check ``theta`` ``(B, ndim, ndim + 1)``; return ndim."""
    _checks.tensor(fn, "theta", theta, ndims=(3,))
    n = theta.shape[1]
    if n not in (2, 3) or theta.shape[2] != n + 1 or (ndim is not None and n != ndim):
        want = f"(B, {ndim}, {ndim + 1})" if ndim else "(B, 2, 3) or (B, 3, 4)"
        raise ValueError(f"{fn}: theta must have shape {want}, got {tuple(theta.shape)}")
    if batch is not None and theta.shape[0] != batch:
        raise ValueError(f"{fn}: theta must have batch size {batch} to match the image, got {tuple(theta.shape)}")
    return n


def _check_parameters(fn: str, translation, rotation, zoom, shear) -> int:
    """Check the affine parameters (``compose_affine``'s); return ndim. Cheap when they are
    right (an affine registration calls it every iteration): the messages are built on failure."""
    _checks.tensor(fn, "rotation", rotation, ndims=(3,))
    batch, ndim = rotation.shape[0], rotation.shape[1]
    if ndim not in (2, 3) or rotation.shape[2] != ndim:
        raise ValueError(f"{fn}: rotation must have shape (B, 2, 2) or (B, 3, 3), got {tuple(rotation.shape)}")
    dtype, device = rotation.dtype, rotation.device
    same = True
    for name, x in (("translation", translation), ("zoom", zoom), ("shear", shear)):
        _checks.tensor(fn, name, x, ndims=(2,))
        if x.shape[0] != batch or x.shape[1] != ndim:
            raise ValueError(f"{fn}: {name} must have shape {(batch, ndim)} to match rotation "
                             f"{tuple(rotation.shape)}, got {tuple(x.shape)}")
        same = same and x.dtype == dtype and x.device == device
    if not same:
        _checks.same_device_dtype(fn, rotation=rotation, translation=translation, zoom=zoom, shear=shear)
    return ndim


def _check_spatial(fn: str, name: str, shape, ndim: int) -> tuple[int, ...]:
    if type(shape) is tuple and len(shape) == ndim and all(type(s) is int and s > 0 for s in shape):
        return shape  # the common case, quickly
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    ok = isinstance(shape, Sequence) and len(shape) == ndim
    ok = ok and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    if not ok:
        raise ValueError(f"{fn}: {name} must be {ndim} positive ints, got {shape!r}")
    return tuple(shape)


def affine_grid(
    theta: torch.Tensor,
    size: Sequence[int],
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Sampling grid of the affine map ``theta``, as :func:`torch.nn.functional.affine_grid`.

    Args:
        theta: ``(B, 2, 3)`` or ``(B, 3, 4)`` in normalised coordinates ``(x, y[, z])``.
        size: output size ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        align_corners: as in :func:`grid_sample`.

    Returns:
        grid ``(B, *size[2:], ndim)``, differentiable w.r.t. ``theta``.
    """
    fn = "affine_grid"
    ndim = _check_theta(fn, theta, None, None)
    if isinstance(size, torch.Size):
        size = tuple(size)
    if not isinstance(size, Sequence) or len(size) != ndim + 2:
        raise ValueError(f"affine_grid: size must be (B, C, *spatial) with {ndim} spatial sizes for theta "
                         f"{tuple(theta.shape)}, got {size!r}")
    _check_spatial(fn, "size", tuple(size[2:]), ndim)
    if size[0] != theta.shape[0]:
        raise ValueError(f"affine_grid: size[0] = {size[0]} must equal the batch size of theta {tuple(theta.shape)}")
    impl = select("affine_grid", theta.device, backend)
    return AffineGridFunction.apply(theta, tuple(int(s) for s in size), bool(align_corners), impl)


def affine_transform(
    image: torch.Tensor,
    theta: torch.Tensor,
    shape: Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Resample ``image`` through the affine map ``theta``, fused.

    Equal to ``grid_sample(image, affine_grid(theta, (B, C, *shape), align_corners), mode,
    padding_mode, align_corners)`` but no sampling grid is kept for the backward pass.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D.
        theta: ``(B, ndim, ndim + 1)``, normalised coordinates (``affine_grid``'s convention).
            The batch sizes are equal, or one of them is 1 and shared by every item of the
            other (:mod:`regnet.ops._broadcast`).
        shape: output spatial shape; defaults to the image's.

    Returns:
        ``(B, C, *shape)``, differentiable w.r.t. ``image`` and ``theta``.
    """
    fn = "affine_transform"
    _checks.tensor(fn, "image", image, ndims=(4, 5))
    ndim = image.dim() - 2
    _check_theta(fn, theta, None, ndim)
    _broadcast.output_batch(fn, "image", image, "theta", theta)
    _checks.same_device_dtype(fn, image=image, theta=theta)
    shape = tuple(image.shape[2:]) if shape is None else _check_spatial(fn, "shape", shape, ndim)
    _checks.choice(fn, "mode", mode, _checks.SAMPLING_MODES)
    _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
    impl = select("affine_transform", image.device, backend)
    image, folded = _broadcast.fold(image, theta)
    out = AffineTransformFunction.apply(image, theta, shape, mode, padding_mode, bool(align_corners), impl)
    return _broadcast.unfold(out, folded)


def compose_affine(
    translation: torch.Tensor,
    rotation: torch.Tensor,
    zoom: torch.Tensor,
    shear: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Affine matrix ``[R @ S | t]`` from its parameters, as torchreg's ``compose_affine``.

    ``S`` is upper triangular: ``diag(zoom)`` with the shear above the diagonal, row by row
    (3D: ``S[0,1], S[0,2], S[1,2]``; 2D: ``S[0,1] = shear[:, 0]``, ``shear[:, 1]`` unused).

    Args:
        translation: ``(B, ndim)``, normalised units.
        rotation: ``(B, ndim, ndim)``, used as given (any matrix).
        zoom: ``(B, ndim)``.
        shear: ``(B, ndim)``.

    Returns:
        theta ``(B, ndim, ndim + 1)``, differentiable w.r.t. all four.
    """
    _check_parameters("compose_affine", translation, rotation, zoom, shear)
    impl = select("compose_affine", rotation.device, backend)
    return ComposeAffineFunction.apply(translation, rotation, zoom, shear, impl)


def affine_transform_params(
    image: torch.Tensor,
    translation: torch.Tensor,
    rotation: torch.Tensor,
    zoom: torch.Tensor,
    shear: torch.Tensor,
    shape: Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Resample ``image`` through the affine map of the parameters, in one differentiable step.

    Equal to ``affine_transform(image, compose_affine(translation, rotation, zoom, shear),
    shape, mode, padding_mode, align_corners)`` (the same numbers, forward and backward) as one
    autograd node: the step an affine registration repeats every iteration. The reference
    backend keeps the forward's sampling grid for the backward (meant for the small images of a
    registration pyramid: ``ndim`` values per output voxel); the Triton backend keeps only
    ``theta``.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D; gets a gradient when it requires one.
        translation: ``(B, ndim)``, normalised units (``affine_grid``'s convention).
        rotation: ``(B, ndim, ndim)``, used as given (any matrix).
        zoom: ``(B, ndim)``.
        shear: ``(B, ndim)``; 3D: ``S[0,1], S[0,2], S[1,2]``; 2D: ``S[0,1] = shear[:, 0]``.
            The image and the parameters have equal batch sizes, or one of them has batch 1
            and is shared by every item of the other (:mod:`regnet.ops._broadcast`).
        shape: output spatial shape; defaults to the image's.
        mode, padding_mode, align_corners: as in :func:`grid_sample`.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses :func:`regnet.get_backend`.

    Returns:
        ``(B, C, *shape)``, differentiable w.r.t. ``image`` and the four parameters.

    Example::

        >>> image = torch.rand(2, 1, 32, 32)
        >>> t, z, s = torch.zeros(2, 2), torch.ones(2, 2), torch.zeros(2, 2)
        >>> r = torch.eye(2).repeat(2, 1, 1).requires_grad_()
        >>> affine_transform_params(image, t, r, z, s, align_corners=True).shape
        torch.Size([2, 1, 32, 32])
    """
    fn = "affine_transform_params"
    ndim = _check_parameters(fn, translation, rotation, zoom, shear)
    _checks.tensor(fn, "image", image)
    if image.dim() != ndim + 2:
        raise ValueError(f"{fn}: image must have shape (B, C, *spatial) with {ndim} spatial dimensions to match "
                         f"rotation {tuple(rotation.shape)}, got {tuple(image.shape)}")
    if image.shape[0] != rotation.shape[0]:
        _broadcast.output_batch(fn, "image", image, "rotation", rotation)
    if image.dtype != rotation.dtype or image.device != rotation.device:
        _checks.same_device_dtype(fn, image=image, rotation=rotation)
    shape = tuple(image.shape[2:]) if shape is None else _check_spatial(fn, "shape", shape, ndim)
    _checks.choice(fn, "mode", mode, _checks.SAMPLING_MODES)
    _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
    impl = select("affine_transform_params", image.device, backend)
    image, folded = _broadcast.fold(image, rotation)
    out = AffineTransformParamsFunction.apply(image, translation, rotation, zoom, shear, shape, mode, padding_mode,
                                              bool(align_corners), impl)
    return _broadcast.unfold(out, folded)
