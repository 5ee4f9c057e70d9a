"""Triton namespace of ``affine_transform_params``: ``theta`` from the affine parameters, then
the fused ``affine_transform`` kernels (:mod:`regnet.ops._triton.sampling`).

``theta = [R @ S | t]`` is a few tiny matrix products: it is formed, and its gradient chained
back to the parameters, by the reference's ``compose_affine`` (torch); the sampling and its
backward, where the time goes, are the sampling kernels with the ``theta`` source (no grid
in memory, the ``theta`` gradient reduced per program). Saved for the backward: ``theta``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regnet.ops._torch.affine import compose_affine_backward, compose_affine_forward
from regnet.ops._triton import sampling

Grads5 = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None,
               torch.Tensor | None]


def affine_transform_params_forward(
    image: torch.Tensor, translation: torch.Tensor, rotation: torch.Tensor, zoom: torch.Tensor,
    shear: torch.Tensor, shape: Sequence[int], mode: str, padding_mode: str, align_corners: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    theta = compose_affine_forward(translation, rotation, zoom, shear)
    return sampling.affine_transform_forward(image, theta, shape, mode, padding_mode, align_corners), [theta]


def affine_transform_params_backward(
    grad: torch.Tensor, image: torch.Tensor, translation: torch.Tensor, rotation: torch.Tensor,
    zoom: torch.Tensor, shear: torch.Tensor, saved: list[torch.Tensor], shape: Sequence[int], mode: str,
    padding_mode: str, align_corners: bool, needs: Sequence[bool],
) -> Grads5:
    (theta,) = saved
    grad_image, grad_theta = sampling.affine_transform_backward(
        grad, image, theta, shape, mode, padding_mode, align_corners, bool(needs[0]), any(needs[1:5]))
    if grad_theta is None:
        return grad_image, None, None, None, None
    return (grad_image, *compose_affine_backward(grad_theta, translation, rotation, zoom, shear, needs[1:5]))


NAME = "triton"
