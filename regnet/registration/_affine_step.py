"""Temporary: the fused affine step until ``regnet.ops.affine_transform_params`` lands."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet.ops import _torch as _reference
from regnet.ops._backend import select
from regnet.ops._torch.sampling import separable_affine_grid


class _TransformByParameters(torch.autograd.Function):
    """``affine_transform(image, compose_affine(t, R, z, s))`` as one autograd node: the
    optimisation loop's only differentiable step before the loss. Same numbers as the two
    public ops. One node instead of two, and on the reference backend the sampling grid of
    the forward pass is kept for the backward (the levels of an affine pyramid are small:
    at most ~10 MB at half resolution of a 160 x 192 x 224 volume): at 64 x 64 on the CPU,
    where Python overhead is most of an iteration, each saves ~10% of it. ``image`` gets no
    gradient."""

    @staticmethod
    def forward(ctx, image, translation, rotation, zoom, shear, shape, mode, padding_mode, align_corners, impls):
        compose_impl, sample_impl = impls
        theta = compose_impl.compose_affine_forward(translation, rotation, zoom, shear)
        ctx.options = (shape, mode, padding_mode, align_corners)
        ctx.impls = impls
        if sample_impl is _reference:
            grid = separable_affine_grid(theta, shape, align_corners)
            ctx.save_for_backward(image, theta, grid, translation, rotation, zoom, shear)
            return _reference.grid_sample_forward(image, grid, mode, padding_mode, align_corners)
        ctx.save_for_backward(image, theta, None, translation, rotation, zoom, shear)
        return sample_impl.affine_transform_forward(image, theta, shape, mode, padding_mode, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, theta, grid, *parameters = ctx.saved_tensors
        compose_impl, sample_impl = ctx.impls
        shape, mode, padding_mode, align_corners = ctx.options
        if grid is not None:
            _, grad_grid = _reference.grid_sample_backward(grad, image, grid, mode, padding_mode, align_corners,
                                                           False, True)
            grad_theta = _reference.affine_grid_backward(grad_grid, theta, (*image.shape[:2], *shape), align_corners)
        else:
            _, grad_theta = sample_impl.affine_transform_backward(grad, image, theta, *ctx.options, False, True)
        grads = compose_impl.compose_affine_backward(grad_theta, *parameters, ctx.needs_input_grad[1:5])
        return (None, *grads, None, None, None, None, None)


def affine_transform_params(image, translation, rotation, zoom, shear, shape=None, mode="bilinear",
                            padding_mode="zeros", align_corners=False, *, backend=None):
    impls = (select("compose_affine", image.device, backend), select("affine_transform", image.device, backend))
    shape = tuple(image.shape[2:]) if shape is None else tuple(shape)
    return _TransformByParameters.apply(image, translation, rotation, zoom, shear, shape, mode, padding_mode,
                                        bool(align_corners), impls)
