"""The contract of each backend family: what a backend namespace implements for its ops.

A backend namespace (a module: :mod:`regnet.ops._torch`, or one registered in
``regnet.ops._triton.KERNELS``) implements ``<op>_forward`` / ``<op>_backward`` for the ops
of a family with these signatures; :func:`regnet.ops._backend.select` returns the family's
protocol type, and mypy checks each namespace against it (``regnet/ops/_backend.py``).

Conventions shared by every family:

- Arguments arrive checked by the public op (shapes, dtypes, devices, options), in the
  op's layouts (``docs/conventions.md``): images ``(B, C, *spatial)``, fields
  ``(B, ndim, *spatial)`` in voxels, grids ``(B, *out_spatial, ndim)`` and ``theta``
  ``(B, ndim, ndim + 1)`` normalised; ``mode`` / ``padding_mode`` are the op's strings.
- A backward takes the gradient of the forward's output first and one ``needs_*`` flag per
  differentiable input; it returns one gradient per such input, ``None`` where the flag is
  false, each with its input's shape and dtype.
- Forwards that keep state for their backward (``exp``, ``affine_transform_params``) return
  ``(output, saved)``; ``saved`` is a list of tensors the op stores with
  ``ctx.save_for_backward`` and hands back (the backward may consume the list).

The parameters are positional-only: the ops call them positionally (``reduction`` and ``weight`` of
``local_ncc`` by keyword), so implementations may name them as they like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor

#: Gradients of two inputs, ``None`` where not needed.
Grads2 = tuple[Tensor | None, Tensor | None]

SamplingOp = Literal["grid_sample", "warp", "affine_transform"]
FieldOp = Literal["compose", "exp"]
SmoothingOp = Literal["gaussian_smooth"]
LocalNCCOp = Literal["local_ncc"]
JointHistogramOp = Literal["joint_histogram"]
AffineGridOp = Literal["affine_grid"]
AffineCompositionOp = Literal["compose_affine"]
AffineParamsOp = Literal["affine_transform_params"]
JacobianOp = Literal["jacobian_det"]


@runtime_checkable
class SamplingBackend(Protocol):
    """``grid_sample``, ``warp`` (``align_corners=True``, MONAI's ``Warp``) and
    ``affine_transform`` (``shape``: the output's spatial shape). The image may have batch 1
    for a source of batch ``B`` (its gradient then sums over the items)."""

    def grid_sample_forward(self, input: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool,
                            /) -> Tensor: ...

    def grid_sample_backward(self, grad: Tensor, input: Tensor, grid: Tensor, mode: str, padding_mode: str,
                             align_corners: bool, needs_input: bool, needs_grid: bool, /) -> Grads2: ...

    def warp_forward(self, image: Tensor, ddf: Tensor, mode: str, padding_mode: str, /) -> Tensor: ...

    def warp_backward(self, grad: Tensor, image: Tensor, ddf: Tensor, mode: str, padding_mode: str,
                      needs_image: bool, needs_ddf: bool, /) -> Grads2: ...

    def affine_transform_forward(self, image: Tensor, theta: Tensor, shape: Sequence[int], mode: str,
                                 padding_mode: str, align_corners: bool, /) -> Tensor: ...

    def affine_transform_backward(self, grad: Tensor, image: Tensor, theta: Tensor, shape: Sequence[int], mode: str,
                                  padding_mode: str, align_corners: bool, needs_image: bool, needs_theta: bool,
                                  /) -> Grads2: ...


@runtime_checkable
class FieldBackend(Protocol):
    """``compose(u1, u2) = u2 + u1(x + u2)`` and ``exp`` (scaling and squaring, ``steps``
    squarings; ``saved`` is whatever the backward needs, e.g. the intermediate fields)."""

    def compose_forward(self, u1: Tensor, u2: Tensor, mode: str, padding_mode: str, /) -> Tensor: ...

    def compose_backward(self, grad: Tensor, u1: Tensor, u2: Tensor, mode: str, padding_mode: str, needs_u1: bool,
                         needs_u2: bool, /) -> Grads2: ...

    def exp_forward(self, svf: Tensor, steps: int, mode: str, padding_mode: str, /) -> tuple[Tensor, list[Tensor]]:
        ...

    def exp_backward(self, grad: Tensor, saved: list[Tensor], steps: int, mode: str, padding_mode: str,
                     /) -> Tensor: ...


@runtime_checkable
class SmoothingBackend(Protocol):
    """``gaussian_smooth``: ``sigma`` one float per spatial axis (voxels, 0: not smoothed),
    SciPy's boundary ``mode`` and ``truncate``."""

    def gaussian_smooth_forward(self, x: Tensor, sigma: Sequence[float], mode: str, truncate: float, /) -> Tensor:
        ...

    def gaussian_smooth_backward(self, grad: Tensor, sigma: Sequence[float], mode: str, truncate: float,
                                 /) -> Tensor: ...


@runtime_checkable
class LocalNCCBackend(Protocol):
    """``local_ncc``: window ``k`` (1-D weights in the inputs' dtype and device), MONAI's window
    volume ``V``, ``smooth_nr``, ``floor``, ``eps`` (see :mod:`regnet.ops._torch.local_ncc`);
    ``reduction`` ``"none"`` (the map), ``"mean"`` or ``"sum"`` (0-d; its gradient is 0-d);
    ``weight`` ``None`` or ``(B or 1, C or 1, *spatial)`` in the inputs' dtype, multiplying the map
    before the reduction (and the incoming gradient per voxel in backward)."""

    def local_ncc_forward(self, pred: Tensor, target: Tensor, k: Tensor, V: float, smooth_nr: float, floor: float,
                          eps: float, /, reduction: str = "none", weight: Tensor | None = None) -> Tensor: ...

    def local_ncc_backward(self, grad: Tensor, pred: Tensor, target: Tensor, k: Tensor, V: float, smooth_nr: float,
                           floor: float, eps: float, needs_pred: bool, needs_target: bool, /,
                           reduction: str = "none", weight: Tensor | None = None) -> Grads2: ...


@runtime_checkable
class JointHistogramBackend(Protocol):
    """``joint_histogram``: ``(B, num_bins, num_bins)``; ``kernel`` ``"gaussian"`` (with its
    ``preterm = 1 / (2 sigma^2)``) or ``"b-spline"``; ``weight`` ``None`` or ``(B or 1, C or 1,
    *spatial)`` in the inputs' dtype: each sample counts with its weight, each item's histogram
    is divided by its total weight (B-spline bins placed from the voxels of weight > 0)."""

    def joint_histogram_forward(self, pred: Tensor, target: Tensor, num_bins: int, kernel: str, preterm: float,
                                weight: Tensor | None = None, /) -> Tensor: ...

    def joint_histogram_backward(self, grad: Tensor, pred: Tensor, target: Tensor, num_bins: int, kernel: str,
                                 preterm: float, needs_pred: bool, needs_target: bool,
                                 weight: Tensor | None = None, /) -> Grads2: ...


@runtime_checkable
class AffineGridBackend(Protocol):
    """``affine_grid``: ``size`` is ``(B, C, *spatial)``; the backward returns the ``theta``
    gradient."""

    def affine_grid_forward(self, theta: Tensor, size: Sequence[int], align_corners: bool, /) -> Tensor: ...

    def affine_grid_backward(self, grad_grid: Tensor, theta: Tensor, size: Sequence[int], align_corners: bool,
                             /) -> Tensor: ...


@runtime_checkable
class AffineCompositionBackend(Protocol):
    """``compose_affine``: ``theta = [R @ S | t]`` from ``(translation, rotation, zoom, shear)``;
    ``needs`` has four flags, the backward four gradients."""

    def compose_affine_forward(self, translation: Tensor, rotation: Tensor, zoom: Tensor, shear: Tensor,
                               /) -> Tensor: ...

    def compose_affine_backward(self, grad: Tensor, translation: Tensor, rotation: Tensor, zoom: Tensor,
                                shear: Tensor, needs: Sequence[bool],
                                /) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]: ...


@runtime_checkable
class AffineParamsBackend(Protocol):
    """``affine_transform_params``: ``affine_transform(image, compose_affine(translation,
    rotation, zoom, shear), shape, ...)`` in one step. ``needs`` has five flags (image and
    the four parameters), the backward five gradients."""

    def affine_transform_params_forward(self, image: Tensor, translation: Tensor, rotation: Tensor, zoom: Tensor,
                                        shear: Tensor, shape: Sequence[int], mode: str, padding_mode: str,
                                        align_corners: bool, /) -> tuple[Tensor, list[Tensor]]: ...

    def affine_transform_params_backward(
        self, grad: Tensor, image: Tensor, translation: Tensor, rotation: Tensor, zoom: Tensor, shear: Tensor,
        saved: list[Tensor], shape: Sequence[int], mode: str, padding_mode: str, align_corners: bool,
        needs: Sequence[bool], /,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None]: ...


@runtime_checkable
class JacobianBackend(Protocol):
    """``jacobian_det``: ``(B, 1, *spatial)`` from a DDF ``(B, ndim, *spatial)``."""

    def jacobian_det_forward(self, ddf: Tensor, /) -> Tensor: ...

    def jacobian_det_backward(self, grad: Tensor, ddf: Tensor, /) -> Tensor: ...


#: The family of each op: ``isinstance(namespace, FAMILIES[op])`` checks (by name) that a
#: namespace has the op's functions; mypy checks the signatures (``regnet/ops/_backend.py``).
FAMILIES: dict[str, type] = {
    **dict.fromkeys(("grid_sample", "warp", "affine_transform"), SamplingBackend),
    **dict.fromkeys(("compose", "exp"), FieldBackend),
    "gaussian_smooth": SmoothingBackend,
    "local_ncc": LocalNCCBackend,
    "joint_histogram": JointHistogramBackend,
    "affine_grid": AffineGridBackend,
    "compose_affine": AffineCompositionBackend,
    "affine_transform_params": AffineParamsBackend,
    "jacobian_det": JacobianBackend,
}
