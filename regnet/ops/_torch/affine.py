"""Reference backend for ``compose_affine`` (``theta = [R @ S | t]``, torchreg's formula) and
for ``affine_transform_params`` (that ``theta``, then ``affine_transform``, in one step).

``S`` is upper triangular: ``diag(zoom)`` plus shear above the diagonal, filled row by row
(3D: ``S[0, 1], S[0, 2], S[1, 2] = shear``; 2D: ``S[0, 1] = shear[0]``, ``shear[1]`` unused).

``affine_transform_params`` keeps the sampling grid of its forward for the backward (the
one reference op that does): it serves affine registration, whose images are small pyramid
levels (at most ~10 MB of grid at half resolution of a 160 x 192 x 224 volume), where the
Python and rebuild overhead of the two separate ops is a large part of an iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regnet.ops._torch.sampling import (
    affine_grid_backward,
    grid_sample_backward,
    grid_sample_forward,
    separable_affine_grid,
)

Grads4 = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def _shear_slots(ndim: int) -> list[tuple[int, int]]:
    """(row, col) of each used shear entry, in the order of the shear vector."""
    return [(0, 1), (0, 2), (1, 2)] if ndim == 3 else [(0, 1)]


def _square(zoom: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    square = torch.diag_embed(zoom)
    for k, (row, col) in enumerate(_shear_slots(zoom.shape[-1])):
        square[:, row, col] = shear[:, k]
    return square


def compose_affine_forward(translation: torch.Tensor, rotation: torch.Tensor, zoom: torch.Tensor,
                           shear: torch.Tensor) -> torch.Tensor:
    matrix = rotation @ _square(zoom, shear)
    return torch.cat([matrix, translation[:, :, None]], dim=-1)


def compose_affine_backward(grad: torch.Tensor, translation: torch.Tensor, rotation: torch.Tensor,
                            zoom: torch.Tensor, shear: torch.Tensor, needs: Sequence[bool]) -> Grads4:
    """Return gradients for ``(translation, rotation, zoom, shear)``; ``None`` where not needed."""
    grad_matrix = grad[..., :-1]
    grad_translation = grad[..., -1] if needs[0] else None
    grad_rotation = grad_matrix @ _square(zoom, shear).transpose(1, 2) if needs[1] else None
    grad_zoom = grad_shear = None
    if needs[2] or needs[3]:
        grad_square = rotation.transpose(1, 2) @ grad_matrix
        if needs[2]:
            grad_zoom = torch.diagonal(grad_square, dim1=1, dim2=2)
        if needs[3]:
            grad_shear = torch.zeros_like(shear)
            for k, (row, col) in enumerate(_shear_slots(zoom.shape[-1])):
                grad_shear[:, k] = grad_square[:, row, col]
    return grad_translation, grad_rotation, grad_zoom, grad_shear


def affine_transform_params_forward(
    image: torch.Tensor, translation: torch.Tensor, rotation: torch.Tensor, zoom: torch.Tensor,
    shear: torch.Tensor, shape: Sequence[int], mode: str, padding_mode: str, align_corners: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``grid_sample(image, grid)`` with ``grid`` built per axis from ``theta`` (see
    :func:`~regnet.ops._torch.sampling.separable_affine_grid`); saved: ``[theta, grid]``."""
    theta = compose_affine_forward(translation, rotation, zoom, shear)
    grid = separable_affine_grid(theta, shape, align_corners)
    return grid_sample_forward(image, grid, mode, padding_mode, align_corners), [theta, grid]


def affine_transform_params_backward(
    grad: torch.Tensor, image: torch.Tensor, translation: torch.Tensor, rotation: torch.Tensor,
    zoom: torch.Tensor, shear: torch.Tensor, saved: list[torch.Tensor], shape: Sequence[int], mode: str,
    padding_mode: str, align_corners: bool, needs: Sequence[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """ATen's sampler backward on the saved grid, then ``theta``'s gradient (a matmul with a
    cached base grid for small grids) chained through ``compose_affine``."""
    theta, grid = saved
    needs_image, needs_parameters = bool(needs[0]), any(needs[1:5])
    grad_image, grad_grid = grid_sample_backward(grad, image, grid, mode, padding_mode, align_corners, needs_image,
                                                 needs_parameters)
    if grad_grid is None:
        return grad_image, None, None, None, None
    grad_theta = affine_grid_backward(grad_grid, theta, (grid.shape[0], image.shape[1], *shape), align_corners)
    return (grad_image, *compose_affine_backward(grad_theta, translation, rotation, zoom, shear, needs[1:5]))
