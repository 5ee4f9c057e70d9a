"""Reference backend for ``compose_affine``: ``theta = [R @ S | t]`` (torchreg's formula).

``S`` is upper triangular: ``diag(zoom)`` plus shear above the diagonal, filled row by row
(3D: ``S[0, 1], S[0, 2], S[1, 2] = shear``; 2D: ``S[0, 1] = shear[0]``, ``shear[1]`` unused).
"""

from __future__ import annotations

import torch


def _shear_slots(ndim: int):
    """(row, col) of each used shear entry, in the order of the shear vector."""
    return [(0, 1), (0, 2), (1, 2)] if ndim == 3 else [(0, 1)]


def _square(zoom, shear):
    square = torch.diag_embed(zoom)
    for k, (row, col) in enumerate(_shear_slots(zoom.shape[-1])):
        square[:, row, col] = shear[:, k]
    return square


def compose_affine_forward(translation, rotation, zoom, shear):
    matrix = rotation @ _square(zoom, shear)
    return torch.cat([matrix, translation[:, :, None]], dim=-1)


def compose_affine_backward(grad, translation, rotation, zoom, shear, needs):
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
