"""Label metrics and the validation figure of :class:`~regnet.lightning.RegistrationModule`.

Label inputs are either float masks ``(B, L, *spatial)`` (channel ``l`` = mask of label ``l``,
empty channels are padding) or integer label maps ``(B, 1, *spatial)``.
"""

from __future__ import annotations

import math

import torch

from regnet import metrics, ops


def warp_labels(label: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Warp labels with a DDF ``(B, ndim, *spatial)``: masks linearly (soft result), integer
    label maps with nearest-neighbour sampling (integer result). Outside the image: background."""
    if label.is_floating_point():
        return ops.warp(label.to(ddf.dtype), ddf, mode="bilinear", padding_mode="zeros")
    warped = ops.warp(label.to(ddf.dtype), ddf, mode="nearest", padding_mode="zeros")
    return warped.round().to(label.dtype)


@torch.no_grad()
def mask_dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Dice ``(B, L)`` of masks binarised at ``threshold``; NaN where a channel is empty in either."""
    dims = tuple(range(2, pred.dim()))
    p, t = pred > threshold, target > threshold
    inter = (p & t).sum(dims).double()
    sp, st = p.sum(dims).double(), t.sum(dims).double()
    dice = 2 * inter / (sp + st).clamp(min=1)
    return torch.where((sp > 0) & (st > 0), dice, torch.full_like(dice, math.nan))


@torch.no_grad()
def centroids(mask: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroids ``(B, L, ndim)`` of masks ``(B, L, *spatial)`` in voxel
    indices of the array axes; NaN for empty channels."""
    spatial = mask.shape[2:]
    weight = mask.double().clamp(min=0)
    total = weight.flatten(2).sum(-1)
    out = []
    for axis, n in enumerate(spatial):
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = n
        coord = torch.arange(n, dtype=torch.float64, device=mask.device).view(shape)
        out.append((weight * coord).flatten(2).sum(-1) / total)
    c = torch.stack(out, -1)
    return torch.where((total > 0)[..., None], c, torch.full_like(c, math.nan))


@torch.no_grad()
def centroid_distance(pred: torch.Tensor, target: torch.Tensor, spacing=None) -> torch.Tensor:
    """Distance ``(B, L)`` between the centroids of two mask tensors, in voxels, or in the units of
    ``spacing`` (one number per spatial axis, e.g. mm); NaN where a channel is empty in either."""
    diff = centroids(pred) - centroids(target)
    if spacing is not None:
        diff = diff * torch.as_tensor(spacing, dtype=diff.dtype, device=diff.device)
    return diff.norm(dim=-1)


def _mean_count(values: torch.Tensor) -> tuple[float, int]:
    values = values[~torch.isnan(values)]
    return (float(values.mean()), values.numel()) if values.numel() else (0.0, 0)


@torch.no_grad()
def label_metrics(warped_label: torch.Tensor, fixed_label: torch.Tensor) -> dict[str, tuple[float, int]]:
    """``{name: (mean, count)}`` over the (pair, label) entries where a metric is defined:
    ``"dice"`` (every label), and for masks ``"dice_first"`` (channel 0, e.g. the organ) and
    ``"centroid_distance"`` (voxels, every label). ``(0.0, 0)`` where nothing is defined; the
    same keys always (so that DDP ranks log the same metrics)."""
    if warped_label.is_floating_point():
        return {
            "dice": _mean_count(mask_dice(warped_label, fixed_label)),
            "dice_first": _mean_count(mask_dice(warped_label[:, :1], fixed_label[:, :1])),
            "centroid_distance": _mean_count(centroid_distance(warped_label, fixed_label)),
        }
    per_pair = [metrics.mean_dice(warped_label[b:b + 1], fixed_label[b:b + 1]) for b in range(warped_label.shape[0])]
    return {"dice": _mean_count(torch.tensor(per_pair, dtype=torch.float64))}


def overview_figure(fixed: torch.Tensor, moving: torch.Tensor, warped: torch.Tensor, title: str = ""):
    """A matplotlib ``Figure`` (no pyplot state) with the middle slice (last axis for 3D) of
    channel 0 of the first pair: fixed, moving, warped and |fixed - warped|."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def middle(x):
        x = x[0, 0].detach().float().cpu()
        return x[..., x.shape[-1] // 2] if x.dim() == 3 else x

    panels = [("fixed", middle(fixed)), ("moving", middle(moving)), ("warped", middle(warped))]
    panels.append(("|fixed - warped|", (panels[0][1] - panels[2][1]).abs()))
    figure = Figure(figsize=(3 * len(panels), 3.2))
    FigureCanvasAgg(figure)
    for k, (name, image) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        ax.imshow(image.T.numpy(), cmap="gray", origin="lower")
        ax.set_title(name)
        ax.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
