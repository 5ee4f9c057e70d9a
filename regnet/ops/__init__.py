"""Differentiable registration primitives.

Each op is one public function backed by a ``torch.autograd.Function`` with a hand-written
backward, computed by a backend chosen per call (see :mod:`regnet.ops._backend`).

Conventions (see ``docs/conventions.md``): images ``(B, C, *spatial)``; displacement and
velocity fields ``(B, ndim, *spatial)`` in voxels, channel ``i`` along spatial axis ``i``,
pull convention ``warped(x) = moving(x + u(x))``; sampling grids and ``theta`` exactly as
``torch.nn.functional.grid_sample`` / ``affine_grid``.
"""

from regnet.ops._state import get_backend, is_deterministic, set_backend, set_deterministic
from regnet.ops.affine import affine_grid, affine_transform, affine_transform_params, compose_affine
from regnet.ops.compose import compose
from regnet.ops.exp import exp
from regnet.ops.gaussian import gaussian_smooth
from regnet.ops.grid_sample import grid_sample
from regnet.ops.jacobian import jacobian_det
from regnet.ops.joint_histogram import joint_histogram
from regnet.ops.local_ncc import local_ncc
from regnet.ops.warp import warp

__all__ = [
    "affine_grid",
    "affine_transform",
    "affine_transform_params",
    "compose",
    "compose_affine",
    "exp",
    "gaussian_smooth",
    "get_backend",
    "grid_sample",
    "is_deterministic",
    "jacobian_det",
    "joint_histogram",
    "local_ncc",
    "set_backend",
    "set_deterministic",
    "warp",
]
