"""Label overlap: Dice per label, its mean, and Learn2Reg's robustness score Dice30."""

from __future__ import annotations

import math

import numpy as np
import torch

from regnet import _checks
from regnet.metrics import _inputs

#: FreeSurfer labels scored in brain registration (voxelmorph's list, 30 structures).
SCORED_LABELS = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 31, 41, 42, 43, 46, 47, 49, 50,
                 51, 52, 53, 54, 60, 63)

#: How :func:`dice30` reduces the lowest values.
DICE30_METHODS = ("lowest_mean", "quantile")


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
    (Learn2Reg decides presence on the fixed and the *unwarped* moving label maps, so a label
    that vanishes in the warped map scores 0 there: pass the labels present in both inputs and
    count a missing result as 0, as ``scripts/bench_brain_pairs.py`` does.)

    Args:
        pred_labels, target_labels: integer label maps ``(B, 1, *spatial)`` or ``(*spatial)``.
        labels: the labels to evaluate (default: every non-zero label present in either map;
            label 0, the background, is evaluated only if listed).

    Returns:
        ``{label: dice}`` in the order of ``labels`` (ascending by default).
    """
    fn = "dice_per_label"
    pred, target = _inputs.label_maps(fn, pred_labels, target_labels)
    labels = _inputs.labels(fn, labels, pred, target)
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


def dice30(values, fraction: float = 0.3, method: str = "lowest_mean") -> float:
    """Learn2Reg's robustness score "DSC30": how well the hardest cases are registered.

    ``values`` are Dice scores of many cases, usually every (pair, structure) Dice of a
    benchmark; NaN entries (structures absent from a pair) are ignored.

    * ``method="lowest_mean"`` (default; the Learn2Reg papers' wording, "the 30% lowest DSC of
      all cases"): the mean of the ``k = ceil(fraction * n)`` lowest of the ``n`` values.
    * ``method="quantile"``: the ``fraction`` quantile with linear interpolation
      (``numpy.quantile(values, 0.3)``), which is what the Learn2Reg evaluation code
      (``MDL-UzL/L2R``, ``evaluation.py``: ``cases_results.quantile(.3)``) reports as the
      aggregate ``"30"`` of a metric; there the values are the per-pair mean Dice scores.

    Args:
        values: Dice scores in [0, 1] (NaN allowed): a sequence, NumPy array or tensor of any shape.
        fraction: in (0, 1]; 1 gives the mean (``lowest_mean``) or the maximum (``quantile``).
        method: ``"lowest_mean"`` or ``"quantile"``.

    Returns:
        A float; NaN when no value is finite.
    """
    fn = "dice30"
    _checks.string_choice(fn, "method", method, DICE30_METHODS)
    fraction = _checks.number(fn, "fraction", fraction, low=0.0, low_open=True, high=1.0)
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: values must be numbers (a sequence, array or tensor), got {type(values).__name__}") \
            from None
    array = array[~np.isnan(array)]
    if np.any((array < 0) | (array > 1)):
        bad = array[(array < 0) | (array > 1)]
        raise ValueError(f"{fn}: values must be Dice scores in [0, 1] (or NaN), got {bad[:5].tolist()}")
    if array.size == 0:
        return math.nan
    if method == "quantile":
        return float(np.quantile(array, fraction))
    k = max(1, math.ceil(round(fraction * array.size, 9)))  # round: 0.3 * 10 is 3.0000000000000004
    return float(np.sort(array)[:k].mean())
