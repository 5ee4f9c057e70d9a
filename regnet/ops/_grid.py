"""Normalised voxel-centre coordinates exactly as ATen places them (``affine_grid`` /
``grid_sample``): the arithmetic the sampling backends and :mod:`regnet.geometry` share.

Along an axis of ``n`` voxels, voxel ``i`` sits at ``-1 + 2 i / (n - 1)`` with
``align_corners=True`` and at ``(-1 + 2 i / (n - 1)) * (n - 1) / n`` (= ``(2 i + 1) / n - 1``)
with ``align_corners=False``; a single voxel sits at 0. Computed as ATen's
``affine_grid_generator`` does (``linspace``, then the scale), so grids built from it agree
with ATen's to the bit.

Example::

    >>> normalised_line(5, True, torch.float32, "cpu")
    tensor([-1.0000, -0.5000,  0.0000,  0.5000,  1.0000])
"""

from __future__ import annotations

import torch


def normalised_line(steps: int, align_corners: bool, dtype: torch.dtype, device: torch.device | str | None
                    ) -> torch.Tensor:
    """Normalised coordinates ``(steps,)`` of the voxel centres along one axis."""
    if steps <= 1:
        return torch.zeros(1, dtype=dtype, device=device)
    line = torch.linspace(-1, 1, steps, dtype=dtype, device=device)
    return line if align_corners else line * (steps - 1) / steps
