"""Surface distance between label maps: the 95th-percentile Hausdorff distance (HD95), in mm."""

from __future__ import annotations

import math

import torch

from regnet.metrics import _inputs


def _surface(mask: torch.Tensor) -> torch.Tensor:
    """Voxels of ``mask`` with a face neighbour outside it (the image border counts as outside).

    ``mask & ~binary_erosion(mask)`` with the cross-shaped structuring element and zero
    border, as ``scipy.ndimage.binary_erosion`` in MONAI's ``get_mask_edges``.
    """
    nd = mask.dim()
    padded = mask.new_zeros([n + 2 for n in mask.shape])
    inner = tuple(slice(1, -1) for _ in range(nd))
    padded[inner] = mask
    eroded = mask.clone()
    for axis in range(nd):
        for shift in (0, 2):
            index = list(inner)
            index[axis] = slice(shift, shift + mask.shape[axis])
            eroded &= padded[tuple(index)]
    return mask & ~eroded


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) without its input-size limit."""
    s = values.sort().values
    pos = q * (s.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, s.numel() - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _nearest_distances(a: torch.Tensor, b: torch.Tensor, max_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For points ``a (N, d)``, ``b (M, d)``: distance from each ``a`` to the nearest ``b`` and vice versa.

    ``torch.cdist`` over chunks of ``a``, so at most ``max_elements`` distances exist at once.
    """
    rows = max(1, max_elements // max(1, b.shape[0]))
    a_to_b = []
    b_to_a = torch.full((b.shape[0],), math.inf, dtype=a.dtype, device=a.device)
    for start in range(0, a.shape[0], rows):
        d = torch.cdist(a[start : start + rows], b, compute_mode="donot_use_mm_for_euclid_dist")
        a_to_b.append(d.min(dim=1).values)
        b_to_a = torch.minimum(b_to_a, d.min(dim=0).values)
    return torch.cat(a_to_b), b_to_a


def _nearest_distances_kdtree(a: torch.Tensor, b: torch.Tensor):
    """:func:`_nearest_distances` with SciPy's k-d tree (exact, float64), or ``None`` without SciPy.

    ``O((N + M) log)`` instead of ``O(N M)``: a cortex surface at 1 mm has ~10^5 points.
    """
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        return None
    pa, pb = a.double().numpy(), b.double().numpy()
    a_to_b = cKDTree(pb).query(pa, k=1)[0]
    b_to_a = cKDTree(pa).query(pb, k=1)[0]
    return torch.from_numpy(a_to_b), torch.from_numpy(b_to_a)


@torch.no_grad()
def hausdorff95(
    pred_labels: torch.Tensor,
    target_labels: torch.Tensor,
    labels=None,
    spacing=None,
    percentile: float = 95.0,
    max_elements: int = 2**24,
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance between label surfaces, per label.

    Matches ``monai.metrics.compute_hausdorff_distance(one_hot_pred, one_hot_target,
    percentile=95, directed=False, spacing=spacing)`` (Euclidean): the surface of a label is
    its voxels with a face neighbour outside it (the image border counts as outside); with
    ``d(P -> T)`` the distances from each surface voxel of P to the nearest surface voxel of
    T, the value is ``max(q(d(P -> T)), q(d(T -> P)))``, ``q`` the ``percentile`` with linear
    interpolation (``torch.quantile``): the percentile of each directed distance set, then
    the larger, not the percentile of the pooled distances. Distances are in the units of
    ``spacing`` (mm with the image's voxel size, e.g. the NIfTI zooms in array order).

    Learn2Reg's evaluation (``compute_robust_hausdorff`` of DeepMind's ``surface-distance``)
    is the same max of two directed 95th percentiles, but on surface elements weighted by their
    area and with ``spacing`` 1 (voxels), so its values differ slightly from these.

    Empty labels: absent from both maps of a pair -> NaN; absent from one -> inf. (MONAI
    gives inf there only without ``percentile``; with one it returns NaN, the quantile of its
    all-inf distance list, which would be mistaken for "absent from both".) Over a batch, the
    value of a label is the mean over pairs ignoring NaN (an inf stays inf; NaN if the label is
    absent from every pair).

    Nearest surface points are found exactly, with SciPy's k-d tree for CPU tensors when SciPy
    is installed, otherwise with a chunked ``torch.cdist`` (``max_elements`` bounds its memory).

    Args:
        pred_labels, target_labels: integer label maps ``(B, 1, *spatial)`` or ``(*spatial)``.
        labels: the labels to evaluate (default: every non-zero label present in either map).
        spacing: voxel size per spatial axis (a number for isotropic voxels) for distances in
            mm; ``None``: voxels.
        percentile: in [0, 100]; 100 gives the (maximum) Hausdorff distance.
        max_elements: at most this many point-to-point distances are held at once (memory
            bound of the chunked ``torch.cdist``).

    Returns:
        ``{label: distance}`` in the order of ``labels`` (ascending by default).
    """
    fn = "hausdorff95"
    pred, target = _inputs.label_maps(fn, pred_labels, target_labels)
    if min(pred.shape[1:]) < 2:
        raise ValueError(
            f"{fn}: every spatial size must be >= 2, got label maps of spatial shape {tuple(pred.shape[1:])} "
            f"(a 2D map must be (H, W) or (B, 1, H, W); a 3-dimensional tensor is read as (H, W, D))"
        )
    if not (isinstance(percentile, (int, float)) and 0 <= percentile <= 100):
        raise ValueError(f"{fn}: percentile must be a number in [0, 100], got {percentile!r}")
    labels = _inputs.labels(fn, labels, pred, target)
    ndim = pred.dim() - 1
    scale = torch.tensor(_inputs.spacing(fn, spacing, ndim), dtype=torch.float32, device=pred.device)
    q = percentile / 100.0
    result = {}
    for label in labels:
        values = []
        for b in range(pred.shape[0]):
            p, t = pred[b] == label, target[b] == label
            p_any, t_any = bool(p.any()), bool(t.any())
            if not p_any and not t_any:
                continue  # NaN: skipped by the batch mean
            if not (p_any and t_any):
                values.append(math.inf)
                continue
            # Work inside the bounding box of both (plus one voxel): same surfaces, less work.
            nz = torch.nonzero(p | t)
            lo = (nz.min(dim=0).values - 1).clamp(min=0).tolist()
            hi = (nz.max(dim=0).values + 2).tolist()
            box = tuple(slice(a, c) for a, c in zip(lo, hi, strict=True))
            # A crop edge inside the image is outside both masks (the one-voxel margin), so
            # erosion with a zero border is unchanged by the crop.
            sp = torch.nonzero(_surface(p[box])).to(torch.float32) * scale
            st = torch.nonzero(_surface(t[box])).to(torch.float32) * scale
            found = _nearest_distances_kdtree(sp, st) if sp.device.type == "cpu" else None
            d_pt, d_tp = found if found is not None else _nearest_distances(sp, st, max_elements)
            values.append(max(_quantile(d_pt, q).item(), _quantile(d_tp, q).item()))
        result[label] = sum(values) / len(values) if values else math.nan
    return result
