"""Smoothness and folding of a displacement field: Jacobian determinant statistics and SDlogJ.

Two SDlogJ definitions are offered, because papers and challenges report both:

* :func:`sdlogj`: the standard deviation of ``log det J`` over the voxels with ``det J > 0``
  (inside a mask when one is given), ``det J`` from :func:`regnet.ops.jacobian_det`
  (``numpy.gradient`` derivatives on the whole grid);
* :func:`sdlogj_learn2reg`: exactly what the Learn2Reg challenge's evaluation code computes
  (central differences, a 2-voxel border cropped, ``log(clip(det + 3, 1e-9, 1e9))``).

Both take a voxel-unit DDF ``(B, ndim, *spatial)`` (``regnet.io.load_ddf`` gives one for a
``ddf.nii.gz`` or an ANTs warp). ``det(I + grad u)`` with ``u`` and the derivatives in voxels
equals the determinant in mm (``J_mm = S J_vox S^-1`` for the voxel size ``S``), also on
anisotropic grids.
"""

from __future__ import annotations

import math

import torch

from regnet import _checks, ops
from regnet.metrics import _inputs


def _det(fn: str, ddf: torch.Tensor, det: torch.Tensor | None = None) -> torch.Tensor:
    _checks.field(fn, "ddf", ddf)
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"{fn}: every spatial size of ddf must be >= 2, got shape {tuple(ddf.shape)}")
    if det is not None:
        expected = (ddf.shape[0], 1, *ddf.shape[2:])
        if tuple(det.shape) != expected:
            raise ValueError(f"{fn}: det must have shape {expected} (ops.jacobian_det of ddf), got {tuple(det.shape)}")
        return det.detach().double()
    return ops.jacobian_det(ddf.detach()).double()


def _inside(det: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The values of ``det (B, 1, *spatial)`` inside ``mask`` (all of them without one), flat."""
    if mask is None:
        return det.flatten()
    return det[mask.expand_as(det)]


def _std_log_positive(det: torch.Tensor) -> torch.Tensor:
    positive = det if bool((det > 0).all()) else det[det > 0]  # no compaction copy without folding
    return positive.log().std(correction=0) if positive.numel() else det.new_tensor(math.nan)


@torch.no_grad()
def jacobian_stats(ddf: torch.Tensor, mask=None, det: torch.Tensor | None = None) -> dict[str, float]:
    """Statistics of the Jacobian determinant ``det(I + grad u)`` of a DDF (``regnet.ops.jacobian_det``).

    Pooled over all voxels of all batch items (call it per item for per-pair numbers).

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 2.
        mask: optional region, ``(*spatial)`` or ``(B or 1, 1, *spatial)``, non-zero inside
            (integer, bool or whole-number float tensor): every statistic is then over the
            voxels inside it only (the determinant is still computed on the whole grid).
        det: ``ops.jacobian_det(ddf)`` when the caller has it already (not computed again).

    Returns:
        ``{"fraction_nonpositive", "std_log", "min", "max", "mean"}`` (floats):
        the fraction of voxels with det <= 0 (folding); the standard deviation (population,
        ``ddof=0``) of ``log(det)`` over the voxels with det > 0 only, NaN if there is none
        (clamping det instead would mix the folding into this smoothness measure; this is
        :func:`sdlogj`); and the minimum, maximum and mean of det. All NaN for an empty mask.
    """
    fn = "jacobian_stats"
    det = _det(fn, ddf, det)
    det = _inside(det, _inputs.field_mask(fn, mask, ddf))
    keys = ("fraction_nonpositive", "std_log", "min", "max", "mean")
    if det.numel() == 0:
        return dict.fromkeys(keys, math.nan)
    values = torch.stack([(det <= 0).double().mean(), _std_log_positive(det), det.min(), det.max(), det.mean()])
    return dict(zip(keys, values.tolist(), strict=True))


@torch.no_grad()
def sdlogj(ddf: torch.Tensor, mask=None) -> float:
    """Standard deviation of ``log det J`` (SDlogJ), the usual smoothness measure of a deformation.

    ``J = I + grad u``, derivatives as ``numpy.gradient`` in voxels (central inside, one-sided
    at the first and last voxel: :func:`regnet.ops.jacobian_det`); the population standard
    deviation (``ddof=0``) of ``log(det J)`` over the voxels with ``det J > 0`` (folded voxels
    have no logarithm; report them with ``jacobian_stats(...)["fraction_nonpositive"]``),
    inside ``mask`` when given. Equal to ``jacobian_stats(ddf, mask)["std_log"]``.

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 2;
            a batch is pooled (call it per item for per-pair numbers).
        mask: optional ``(*spatial)`` or ``(B or 1, 1, *spatial)`` region, non-zero inside
            (e.g. the fixed image's brain mask).

    Returns:
        A float; NaN when no voxel (inside the mask) has ``det J > 0``.
    """
    fn = "sdlogj"
    det = _inside(_det(fn, ddf), _inputs.field_mask(fn, mask, ddf))
    return float(_std_log_positive(det)) if det.numel() else math.nan


#: Border cropped by Learn2Reg's ``jacobian_determinant`` on each side of each axis, voxels.
LEARN2REG_CROP = 2


def learn2reg_jacobian_det(ddf: torch.Tensor) -> torch.Tensor:
    """``det(I + grad u)`` as Learn2Reg computes it: ``(B, 1, *[n - 4 for n in spatial])``, float64.

    Central differences ``(u[i + 1] - u[i - 1]) / 2`` along each axis (``scipy.ndimage.correlate``
    with ``[-0.5, 0, 0.5]``), then the outer 2 voxels of every axis are dropped (where the zero
    padding of ``correlate`` would enter). ``ddf``: ``(B, ndim, *spatial)`` in voxels, every
    spatial size >= 5.
    """
    return _learn2reg_det("learn2reg_jacobian_det", ddf)


def _learn2reg_det(fn: str, ddf: torch.Tensor) -> torch.Tensor:
    _checks.field(fn, "ddf", ddf)
    c = LEARN2REG_CROP
    if min(ddf.shape[2:]) < 2 * c + 1:
        raise ValueError(f"{fn}: every spatial size of ddf must be >= {2 * c + 1} (Learn2Reg crops {c} voxels "
                         f"on each side), got shape {tuple(ddf.shape)}")
    u = ddf.detach().double()
    ndim = u.shape[1]
    crop = [slice(c, n - c) for n in u.shape[2:]]
    rows = []  # rows[i][j] = d u_i / d x_j + delta_ij on the cropped grid
    for i in range(ndim):
        row = []
        for j in range(ndim):
            ahead, behind = list(crop), list(crop)
            ahead[j] = slice(c + 1, u.shape[2 + j] - c + 1)
            behind[j] = slice(c - 1, u.shape[2 + j] - c - 1)
            derivative = 0.5 * (u[(slice(None), i, *ahead)] - u[(slice(None), i, *behind)])
            row.append(derivative + 1.0 if i == j else derivative)
        rows.append(row)
    if ndim == 2:
        det = rows[0][0] * rows[1][1] - rows[0][1] * rows[1][0]
    else:
        det = (rows[0][0] * (rows[1][1] * rows[2][2] - rows[1][2] * rows[2][1])
               - rows[0][1] * (rows[1][0] * rows[2][2] - rows[1][2] * rows[2][0])
               + rows[0][2] * (rows[1][0] * rows[2][1] - rows[1][1] * rows[2][0]))
    return det[:, None]


@torch.no_grad()
def sdlogj_learn2reg(ddf: torch.Tensor, mask=None) -> float:
    """SDlogJ exactly as the Learn2Reg challenge's evaluation computes it.

    From ``MDL-UzL/L2R`` (``evaluation/utils.py`` ``jacobian_determinant`` and
    ``evaluation.py``)::

        det = det(I + grad u)[2:-2, 2:-2, 2:-2]   # central differences (u[i+1] - u[i-1]) / 2
        sdlogj = std(log(clip(det + 3, 1e-9, 1e9)))          # population std (ddof=0)

    ``u`` in voxels; the 2-voxel border of every axis is left out (see
    :func:`learn2reg_jacobian_det`). The ``+ 3`` keeps the logarithm finite for folded voxels
    (down to det = -3), so unlike :func:`sdlogj` folding raises this value instead of being left
    out; for small deformations it is about a quarter of :func:`sdlogj` (``d log(det + 3) =
    d det / 4`` at det = 1). With ``mask``, the standard deviation is over the voxels of the
    cropped grid inside ``mask[2:-2, ...]`` (Learn2Reg's masked evaluation). 2D fields are
    handled the same way (2x2 determinant); Learn2Reg itself is 3D.

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, every spatial size >= 5; a batch is
            pooled (call it per item for per-pair numbers, as Learn2Reg does per case).
        mask: optional ``(*spatial)`` or ``(B or 1, 1, *spatial)`` region, non-zero inside.

    Returns:
        A float (NaN for an empty mask).
    """
    fn = "sdlogj_learn2reg"
    det = _learn2reg_det(fn, ddf)
    m = _inputs.field_mask(fn, mask, ddf)
    if m is not None:
        c = LEARN2REG_CROP
        m = m[(slice(None), slice(None), *[slice(c, n - c) for n in m.shape[2:]])]
    values = torch.log((_inside(det, m) + 3.0).clamp(1e-9, 1e9))
    return float(values.std(correction=0)) if values.numel() else math.nan
