"""Landmark accuracy: target registration error (TRE)."""

from __future__ import annotations

import numpy as np
import torch

from regnet import _checks
from regnet.geometry import sample_at_voxels
from regnet.metrics import _inputs


def _points(fn: str, name: str, points, ndim: int | None = None) -> torch.Tensor:
    """``(N, ndim)`` points (sequence, array or tensor) as a float64 CPU tensor."""
    if isinstance(points, torch.Tensor):
        array = points.detach().cpu().double()
    else:
        try:
            array = torch.from_numpy(np.asarray(points, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: {name} must be an (N, ndim) array of coordinates, got "
                            f"{type(points).__name__}") from None
    if array.dim() != 2 or array.shape[1] not in (2, 3) or (ndim is not None and array.shape[1] != ndim):
        want = f"(N, {ndim})" if ndim is not None else "(N, 2) or (N, 3)"
        raise ValueError(f"{fn}: {name} must have shape {want} (one point per row), got {tuple(array.shape)}")
    if not bool(torch.isfinite(array).all()):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return array


@torch.no_grad()
def tre(points_fixed, points_moving, spacing=None, ddf: torch.Tensor | None = None) -> dict:
    """Target registration error: distance between corresponding landmarks after registration.

    Two uses:

    * ``ddf=None``: ``points_fixed[n]`` and ``points_moving[n]`` are already in one frame (e.g.
      the moving landmarks mapped onto the fixed image, or fixed landmarks mapped onto the
      moving image by your transform, against the moving ones). The error of point ``n`` is
      ``|| (points_fixed[n] - points_moving[n]) * spacing ||``: with voxel coordinates pass
      the voxel size (mm) to get mm; with world coordinates (mm) leave ``spacing=None``.
    * ``ddf`` given (the registration's voxel DDF ``(1, ndim, *spatial)`` on the fixed grid, pull:
      fixed voxel ``x`` maps to ``x + u(x)``): ``points_fixed`` are fixed-grid voxel
      coordinates (array axis order), mapped to ``p + u(p)`` (``u`` interpolated linearly, border
      values outside the grid) and compared with ``points_moving``, voxel coordinates of the
      moving landmarks on the same grid (``regnet.io.load_ddf`` gives the DDF of a
      ``ddf.nii.gz``; when the moving image lies on another grid, map its landmarks into
      fixed voxels first). This is Learn2Reg's ``compute_tre``, except that Learn2Reg
      interpolates ``u`` with cubic splines (``scipy.ndimage.map_coordinates`` default).

    Args:
        points_fixed, points_moving: ``(N, ndim)`` coordinates (sequence, NumPy array or
            tensor), ndim 2 or 3, row ``n`` of one the partner of row ``n`` of the other.
        spacing: voxel size per axis (a number for isotropic voxels) multiplying the coordinate
            differences; ``None``: 1 (coordinates already in mm).
        ddf: optional ``(1, ndim, *spatial)`` voxel displacement field (see above).

    Returns:
        ``{"per_point": [N floats], "mean", "std" (population), "median", "max"}``; the
        statistics are NaN for ``N = 0``.
    """
    fn = "tre"
    fixed = _points(fn, "points_fixed", points_fixed)
    ndim = fixed.shape[1]
    moving = _points(fn, "points_moving", points_moving, ndim)
    if moving.shape[0] != fixed.shape[0]:
        raise ValueError(f"{fn}: points_fixed and points_moving must hold the same number of points, "
                         f"got {fixed.shape[0]} and {moving.shape[0]}")
    scale = torch.tensor(_inputs.spacing(fn, spacing, ndim), dtype=torch.float64)
    if ddf is not None:
        _checks.field(fn, "ddf", ddf)
        if ddf.shape[0] != 1 or ddf.shape[1] != ndim:
            raise ValueError(f"{fn}: ddf must have shape (1, {ndim}, *spatial) for {ndim}D points, "
                             f"got {tuple(ddf.shape)}")
        if fixed.shape[0]:
            grid = fixed.T.reshape(ndim, fixed.shape[0], *([1] * (ndim - 1))).to(ddf.device)
            u = sample_at_voxels(ddf.detach(), grid, mode="bilinear", padding_mode="border")
            fixed = fixed + u.reshape(ndim, -1).T.double().cpu()
    distances = ((fixed - moving) * scale).norm(dim=1)
    if distances.numel() == 0:
        nan = float("nan")
        return {"per_point": [], "mean": nan, "std": nan, "median": nan, "max": nan}
    return {
        "per_point": distances.tolist(),
        "mean": float(distances.mean()),
        "std": float(distances.std(correction=0)),
        "median": float(np.median(distances.numpy())),
        "max": float(distances.max()),
    }
