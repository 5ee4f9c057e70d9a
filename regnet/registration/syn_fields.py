"""The fields of a symmetric (SyN) registration from its two velocities: one helper for the
optimisation, :meth:`SyNRegistration.apply_flows` and :meth:`SyNRegistration.fields`.

``v_xy`` moves the moving image half-way, ``v_yx`` the static image; each half-way map is
``exp(v)`` and the full maps compose one half with the inverse of the other::

    xy_full = compose(exp(v_xy), exp(-v_yx))   # static grid -> moving: warps moving onto static
    yx_full = compose(exp(v_yx), exp(-v_xy))   # moving grid -> static: warps static onto moving

All fields are regnet DDFs ``(B, ndim, *spatial)`` in voxels of their grid; the four
exponentials are one :func:`regnet.ops.exp` call on a batch of ``4 B``.

Example::

    >>> half = half_maps(v_xy, v_yx, steps=7)     # (4B, ndim, *grid): xy, yx, then their inverses
    >>> full = full_maps(half)                    # (2B, ndim, *grid): xy_full, yx_full
"""

from __future__ import annotations

import torch

from regnet import ops


def half_maps(v_xy: torch.Tensor, v_yx: torch.Tensor, steps: int) -> torch.Tensor:
    """``exp`` of ``[v_xy, v_yx, -v_xy, -v_yx]`` on the velocities' grid, ``(4B, ndim, *grid)``
    (``padding_mode="border"``: a field is extended constantly outside its grid)."""
    return ops.exp(torch.cat([v_xy, v_yx, -v_xy, -v_yx]), steps, padding_mode="border")


def full_maps(half: torch.Tensor) -> torch.Tensor:
    """``[xy_full, yx_full]`` ``(2B, ndim, *grid)`` from :func:`half_maps`' output: each forward
    half-way map composed with the inverse of the other side's."""
    batch = half.shape[0] // 4
    forward = half[: 2 * batch]
    inverse_swapped = torch.cat([half[3 * batch:], half[2 * batch: 3 * batch]])  # exp(-v_yx), exp(-v_xy)
    return ops.compose(forward, inverse_swapped)
