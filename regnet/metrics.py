"""Evaluation metrics for registration: label overlap, surface distance, Jacobian statistics.

Plain functions returning Python numbers, computed without autograd on the tensors' own
device (CPU or CUDA), for 2D and 3D. Label maps are integer tensors ``(B, 1, *spatial)`` or
``(*spatial)`` (float tensors holding whole numbers are accepted too); label 0 is the
background.

Batches: a value per label is the mean over the image pairs of the batch for which it is
defined (see each function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from regnet import _checks, ops


def _label_maps(fn: str, pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label maps as ``(B, *spatial)`` integer tensors."""
    out = []
    for name, x in (("pred_labels", pred), ("target_labels", target)):
        _checks.tensor(fn, name, x, floating=False)
        if x.dim() in (2, 3):
            x = x[None]
        elif x.dim() in (4, 5):
            if x.shape[1] != 1:
                raise ValueError(f"{fn}: {name} must have shape (B, 1, *spatial) or (*spatial), got {tuple(x.shape)}")
            x = x[:, 0]
        else:
            raise ValueError(
                f"{fn}: {name} must have shape (B, 1, H, W[, D]) or (H, W[, D]), got {tuple(x.shape)}"
            )
        if x.is_complex():
            raise TypeError(f"{fn}: {name} must be an integer label map, got {x.dtype}")
        if x.is_floating_point():
            if not torch.equal(x, torch.round(x)):
                raise ValueError(
                    f"{fn}: {name} is a float tensor with non-integer values; label maps hold whole numbers"
                )
            x = x.long()
        elif x.dtype == torch.bool:
            x = x.long()
        out.append(x)
    pred, target = out
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred_labels and target_labels must have the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)} (as (B, *spatial))"
        )
    if pred.device != target.device:
        raise ValueError(
            f"{fn}: target_labels is on {target.device} but pred_labels is on {pred.device}; move both to one device"
        )
    return pred, target


def _labels(fn: str, labels, pred: torch.Tensor, target: torch.Tensor) -> list[int]:
    """The labels to evaluate: ``labels`` checked, or every non-zero value present in either map."""
    if labels is None:
        values = torch.unique(torch.cat([pred.flatten(), target.flatten()])).tolist()
        return [int(v) for v in values if v != 0]
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"{fn}: labels must be a sequence of ints or None, got {type(labels).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError(f"{fn}: labels must be ints, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{fn}: labels must not repeat a value, got {labels!r}")
    return list(labels)


def _label_counts(pred: torch.Tensor, target: torch.Tensor, labels: list[int]) -> tuple[list, list, list]:
    """Per pair and label: voxels in pred, in target, in both. Three ``B x K`` nested lists."""
    B, K = pred.shape[0], len(labels)
    values, order = torch.as_tensor(labels, dtype=torch.long, device=pred.device).sort()

    def index(x):  # position of each voxel's label in `labels`, K where it is not one of them
        flat = x.reshape(B, -1)
        pos = torch.searchsorted(values, flat).clamp_(max=K - 1)
        return torch.where(values[pos] == flat, order[pos], K)

    pi, ti = index(pred), index(target)
    offset = torch.arange(B, device=pred.device)[:, None] * (K + 1)
    n = B * (K + 1)
    count_p = torch.bincount((pi + offset).flatten(), minlength=n)
    count_t = torch.bincount((ti + offset).flatten(), minlength=n)
    count_both = torch.bincount((pi + offset)[pi == ti], minlength=n)
    counts = torch.stack([count_p, count_t, count_both]).view(3, B, K + 1)[:, :, :K].tolist()
    return counts[0], counts[1], counts[2]


@torch.no_grad()
def dice_per_label(pred_labels: torch.Tensor, target_labels: torch.Tensor, labels=None) -> dict[int, float]:
    """Dice ``2 |P & T| / (|P| + |T|)`` of each label, the usual brain-segmentation protocol.

    A label absent from either map of a pair is skipped for that pair (it is neither 0 nor 1);
    the value of a label is its mean Dice over the pairs of the batch in which it is present in
    both maps, and a label present in both maps of no pair is left out of the result.

    Args:
        pred_labels, target_labels: integer label maps ``(B, 1, *spatial)`` or ``(*spatial)``.
        labels: the labels to evaluate (default: every non-zero label present in either map;
            label 0, the background, is evaluated only if listed).

    Returns:
        ``{label: dice}`` in the order of ``labels`` (ascending by default).
    """
    fn = "dice_per_label"
    pred, target = _label_maps(fn, pred_labels, target_labels)
    labels = _labels(fn, labels, pred, target)
    if not labels:
        return {}
    count_p, count_t, count_both = _label_counts(pred, target, labels)
    result = {}
    for k, label in enumerate(labels):
        scores = [
            2.0 * count_both[b][k] / (count_p[b][k] + count_t[b][k])
            for b in range(pred.shape[0])
            if count_p[b][k] > 0 and count_t[b][k] > 0
        ]
        if scores:
            result[label] = sum(scores) / len(scores)
    return result


@torch.no_grad()
def mean_dice(pred_labels: torch.Tensor, target_labels: torch.Tensor, labels=None) -> float:
    """Mean of :func:`dice_per_label` over the labels present in both maps; NaN if there is none."""
    scores = dice_per_label(pred_labels, target_labels, labels)
    return sum(scores.values()) / len(scores) if scores else math.nan


@torch.no_grad()
def jacobian_stats(ddf: torch.Tensor) -> dict[str, float]:
    """Statistics of the Jacobian determinant ``det(I + grad u)`` of a DDF (``regnet.ops.jacobian_det``).

    Pooled over all voxels of all batch items (call it per item for per-pair numbers).

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 2.

    Returns:
        ``{"fraction_nonpositive", "std_log", "min", "max", "mean"}`` (floats):
        the fraction of voxels with det <= 0 (folding); the standard deviation (population,
        ``ddof=0``) of ``log(det)`` over the voxels with det > 0 only, NaN if there is none
        (clamping det instead would mix the folding into this smoothness measure); and the
        minimum, maximum and mean of det.
    """
    fn = "jacobian_stats"
    _checks.field(fn, "ddf", ddf)
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"{fn}: every spatial size of ddf must be >= 2, got shape {tuple(ddf.shape)}")
    det = ops.jacobian_det(ddf).double()
    positive = det[det > 0]
    std_log = positive.log().std(correction=0) if positive.numel() else det.new_tensor(math.nan)
    values = torch.stack([(det <= 0).double().mean(), std_log, det.min(), det.max(), det.mean()]).tolist()
    return dict(zip(("fraction_nonpositive", "std_log", "min", "max", "mean"), values, strict=True))


def _spacing(fn: str, spacing, ndim: int) -> list[float]:
    if spacing is None:
        return [1.0] * ndim
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        spacing = [float(spacing)] * ndim
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.tolist()
    try:
        spacing = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: spacing must be None, a number or {ndim} numbers, got {spacing!r}") from None
    if len(spacing) != ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"{fn}: spacing must be {ndim} positive numbers (one per spatial axis), got {spacing!r}")
    return spacing


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
    lo = int(math.floor(pos))
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
    the larger, not the percentile of the pooled distances.

    Empty labels: absent from both maps of a pair -> NaN; absent from one -> inf. (MONAI
    gives inf there only without ``percentile``; with one it returns NaN, the quantile of its
    all-inf distance list, which would be mistaken for "absent from both".) Over a batch, the
    value of a label is the mean over pairs ignoring NaN (an inf stays inf; NaN if the label is
    absent from every pair).

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
    pred, target = _label_maps(fn, pred_labels, target_labels)
    if min(pred.shape[1:]) < 2:
        raise ValueError(
            f"{fn}: every spatial size must be >= 2, got label maps of spatial shape {tuple(pred.shape[1:])} "
            f"(a 2D map must be (H, W) or (B, 1, H, W); a 3-dimensional tensor is read as (H, W, D))"
        )
    if not (isinstance(percentile, (int, float)) and 0 <= percentile <= 100):
        raise ValueError(f"{fn}: percentile must be a number in [0, 100], got {percentile!r}")
    labels = _labels(fn, labels, pred, target)
    ndim = pred.dim() - 1
    scale = torch.tensor(_spacing(fn, spacing, ndim), dtype=torch.float32, device=pred.device)
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
            d_pt, d_tp = _nearest_distances(sp, st, max_elements)
            values.append(max(_quantile(d_pt, q).item(), _quantile(d_tp, q).item()))
        result[label] = sum(values) / len(values) if values else math.nan
    return result


# --- similarity of two images --------------------------------------------------------------

#: FreeSurfer labels scored in brain registration (voxelmorph's list, 30 structures).
SCORED_LABELS = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 31, 41, 42, 43, 46, 47, 49, 50,
                 51, 52, 53, 54, 60, 63)


@torch.no_grad()
def global_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all voxels of two images (float64); NaN for a constant image."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


@torch.no_grad()
def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared difference of all voxels of two images (float64)."""
    return float(((a.double() - b.double()) ** 2).mean())

