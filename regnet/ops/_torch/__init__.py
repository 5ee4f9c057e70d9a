"""Vectorised PyTorch reference backend: runs on any device and is the oracle for the
Triton kernels. Every backend namespace exposes these same functions."""

from regnet.ops._torch.affine import (
    affine_transform_params_backward,
    affine_transform_params_forward,
    compose_affine_backward,
    compose_affine_forward,
)
from regnet.ops._torch.gaussian import gaussian_smooth_backward, gaussian_smooth_forward
from regnet.ops._torch.jacobian import jacobian_det_backward, jacobian_det_forward
from regnet.ops._torch.joint_histogram import joint_histogram_backward, joint_histogram_forward
from regnet.ops._torch.local_ncc import local_ncc_backward, local_ncc_forward
from regnet.ops._torch.sampling import (
    affine_grid_backward,
    affine_grid_forward,
    affine_transform_backward,
    affine_transform_forward,
    compose_backward,
    compose_forward,
    exp_backward,
    exp_forward,
    grid_sample_backward,
    grid_sample_forward,
    warp_backward,
    warp_forward,
)

NAME = "torch"

__all__ = [
    "affine_grid_backward",
    "affine_grid_forward",
    "affine_transform_backward",
    "affine_transform_forward",
    "affine_transform_params_backward",
    "affine_transform_params_forward",
    "compose_affine_backward",
    "compose_affine_forward",
    "compose_backward",
    "compose_forward",
    "exp_backward",
    "exp_forward",
    "gaussian_smooth_backward",
    "gaussian_smooth_forward",
    "grid_sample_backward",
    "grid_sample_forward",
    "jacobian_det_backward",
    "jacobian_det_forward",
    "joint_histogram_backward",
    "joint_histogram_forward",
    "local_ncc_backward",
    "local_ncc_forward",
    "warp_backward",
    "warp_forward",
]
