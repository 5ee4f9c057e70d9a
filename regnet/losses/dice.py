"""Dice overlap of probability maps, one-hot maps or integer label maps, and the Dice loss.

Per batch item and channel (label), with sums over the spatial axes::

    dice = (2 * sum(p * t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr)

- MONAI: ``dice_loss`` / :class:`DiceLoss` with the defaults (``smooth_nr = smooth_dr =
  1e-5``) equal ``monai.losses.DiceLoss(include_background, smooth_nr=..., smooth_dr=...,
  reduction=...)`` on one-hot / probability maps; a float prediction with an integer target
  ``(B, 1, *spatial)`` equals MONAI's ``to_onehot_y=True``.
- torchreg: ``smooth_nr=0, smooth_dr=0`` on two float maps of one shape gives exactly
  torchreg's ``dice_score`` / ``dice_loss`` (mean over batch and channels of
  ``2 * sum(x1 * x2) / sum(x1 + x2)``), except that a channel empty in both inputs scores 1
  where torchreg returns NaN.

Input forms (``pred``, ``target``):

1. two float tensors ``(B, C, *spatial)`` of one shape: probability or one-hot maps;
   channel 0 is the background. ``labels`` must be ``None``.
2. two integer (or bool) label maps ``(B, 1, *spatial)``: one-hot encoded internally, one
   channel per label of ``labels`` (default: every value present in either map, sorted);
   the background is label 0. Not differentiable (an evaluation score).
3. a float map ``(B, C, *spatial)`` and an integer label map ``(B, 1, *spatial)`` (either
   way round): the label map is one-hot encoded to the ``C`` channels, channel ``c`` being
   label ``labels[c]`` (default ``labels = range(C)``, MONAI's ``to_onehot_y``); the
   background is the channel of label 0. With ``C == 1`` the label map is used as it is
   (a binary mask), as MONAI does.

Empty labels: a label absent from both inputs scores ``smooth_nr / smooth_dr`` (1 with the
defaults), and 1 when the denominator is 0 (``smooth_dr = 0``): never NaN. A label present
in one input only scores ``smooth_nr / (count + smooth_dr)``, about 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regnet import _checks
from regnet.losses._reduce import check_reduction, reduce


def _is_label_map(x: torch.Tensor) -> bool:
    return not x.is_floating_point() and not x.is_complex()


def _check_labels(fn: str, labels) -> list[int]:
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"{fn}: labels must be a sequence of ints or None, got {type(labels).__name__}")
    if len(labels) == 0 or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError(f"{fn}: labels must be a non-empty sequence of ints, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{fn}: labels must not repeat a value, got {labels!r}")
    return list(labels)


def _label_map_shape(fn: str, name: str, x: torch.Tensor) -> None:
    if x.shape[1] != 1:
        raise ValueError(
            f"{fn}: {name} is an integer label map, so it must have shape (B, 1, *spatial), got {tuple(x.shape)}"
        )


def _one_hot(x: torch.Tensor, labels: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, *spatial)`` label map -> ``(B, len(labels), *spatial)`` one-hot of ``dtype``."""
    values = torch.as_tensor(labels, device=x.device, dtype=x.dtype if x.dtype != torch.bool else torch.long)
    return (x == values.view(1, -1, *[1] * (x.dim() - 2))).to(dtype)


def _overlap(fn: str, pred, target, include_background: bool, labels):
    """Sums over space ``(sum(p * t), sum(p), sum(t))``, each ``(B, K)``, for the channels kept."""
    _checks.tensor(fn, "pred", pred, floating=False)
    _checks.tensor(fn, "target", target, floating=False)
    for name, x in (("pred", pred), ("target", target)):
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{fn}: {name} must have shape (B, C, *spatial) with 2 or 3 spatial dimensions, got {tuple(x.shape)}"
            )
        if x.is_complex():
            raise TypeError(f"{fn}: {name} must be floating, integer or bool, got {x.dtype}")
    if pred.device != target.device:
        raise ValueError(f"{fn}: target is on {target.device} but pred is on {pred.device}; move both to one device")
    if pred.shape[0] != target.shape[0] or pred.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"{fn}: pred and target must have the same batch size and spatial shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if labels is not None:
        labels = _check_labels(fn, labels)
    spatial_dims = tuple(range(2, pred.dim()))
    pred_int, target_int = _is_label_map(pred), _is_label_map(target)

    if pred_int and target_int:  # form 2: two label maps, counted label by label
        _label_map_shape(fn, "pred", pred)
        _label_map_shape(fn, "target", target)
        if labels is None:
            labels = torch.unique(torch.cat([pred.flatten(), target.flatten()])).tolist()
            labels = [int(v) for v in labels]
        if not include_background:
            labels = [v for v in labels if v != 0]
        if not labels:
            raise ValueError(
                f"{fn}: no label to score: pred and target hold only the background (label 0) and "
                f"include_background=False; pass labels=[...] to score labels absent from both (they score 1)"
            )
        dtype = torch.get_default_dtype()
        inter, p_sum, t_sum = [], [], []
        for value in labels:
            p, t = pred == value, target == value
            inter.append((p & t).sum(spatial_dims)[:, 0])
            p_sum.append(p.sum(spatial_dims)[:, 0])
            t_sum.append(t.sum(spatial_dims)[:, 0])
        return tuple(torch.stack(v, dim=1).to(dtype) for v in (inter, p_sum, t_sum))

    if pred_int or target_int:  # form 3: one float map, one label map
        soft, hard = (target, pred) if pred_int else (pred, target)
        _label_map_shape(fn, "pred" if pred_int else "target", hard)
        channels = soft.shape[1]
        if channels == 1:
            if labels is not None:
                raise ValueError(
                    f"{fn}: labels cannot be used with a one-channel float map (the label map is used as a binary mask)"
                )
            hard = hard.to(soft.dtype)
            keep = None
        else:
            if labels is None:
                labels = list(range(channels))
            elif len(labels) != channels:
                raise ValueError(
                    f"{fn}: labels must give the label of each of the {channels} channels of the float map, "
                    f"got {len(labels)} labels {labels!r}"
                )
            hard = _one_hot(hard, labels, soft.dtype)
            keep = None if include_background or 0 not in labels else [c for c, v in enumerate(labels) if v != 0]
        if keep is not None:
            soft, hard = soft[:, keep], hard[:, keep]
        p, t = (hard, soft) if pred_int else (soft, hard)
        return (p * t).sum(spatial_dims), p.sum(spatial_dims), t.sum(spatial_dims)

    # form 1: two float maps of one shape
    if labels is not None:
        raise ValueError(
            f"{fn}: labels applies to integer label maps only; pred and target are both float "
            f"({pred.dtype}, {target.dtype}), their channels are the labels"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: float pred and target must have the same shape (B, C, *spatial), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    _checks.same_device_dtype(fn, pred=pred, target=target)
    if not include_background and pred.shape[1] > 1:
        pred, target = pred[:, 1:], target[:, 1:]
    return (pred * target).sum(spatial_dims), pred.sum(spatial_dims), target.sum(spatial_dims)


def _dice(fn, pred, target, include_background, smooth_nr, smooth_dr, labels) -> torch.Tensor:
    inter, p_sum, t_sum = _overlap(fn, pred, target, include_background, labels)
    numerator = 2 * inter + smooth_nr
    denominator = p_sum + t_sum + smooth_dr
    defined = denominator != 0
    ratio = numerator / torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, ratio, torch.ones_like(ratio))


def dice_score(
    pred: torch.Tensor,
    target: torch.Tensor,
    include_background: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    reduction: str = "mean",
    labels: Sequence[int] | None = None,
) -> torch.Tensor:
    """Dice overlap of ``pred`` and ``target`` (module docstring: input forms, empty labels).

    Args:
        pred, target: ``(B, C, *spatial)`` float maps and/or ``(B, 1, *spatial)`` integer label maps.
        include_background: keep the background (channel 0 of float maps, label 0 of label maps).
            A one-channel float map keeps its channel either way, as in MONAI.
        smooth_nr, smooth_dr: added to numerator and denominator (MONAI's defaults 1e-5; 0 and 0
            for torchreg's score).
        reduction: ``"mean"`` or ``"sum"`` over batch and channels, or ``"none"``: ``(B, K)`` for
            the ``K`` channels kept (MONAI's ``DiceLoss`` returns ``(B, K, 1, ..., 1)``).
        labels: label values for integer label maps (see the module docstring).
    """
    fn = "dice_score"
    check_reduction(fn, reduction)
    return reduce(_dice(fn, pred, target, include_background, smooth_nr, smooth_dr, labels), reduction)


def dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    include_background: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    reduction: str = "mean",
    labels: Sequence[int] | None = None,
) -> torch.Tensor:
    """``1 - dice`` per batch item and channel, reduced; arguments as :func:`dice_score`."""
    fn = "dice_loss"
    check_reduction(fn, reduction)
    return reduce(1 - _dice(fn, pred, target, include_background, smooth_nr, smooth_dr, labels), reduction)


class DiceLoss(torch.nn.Module):
    """Dice loss ``1 - dice`` as a module; see :func:`dice_score` for the arguments and input forms.

    ``DiceLoss()`` equals ``monai.losses.DiceLoss()`` on probability / one-hot maps;
    ``DiceLoss(smooth_nr=0, smooth_dr=0)`` equals torchreg's ``dice_loss``.
    """

    def __init__(
        self,
        include_background: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: str = "mean",
        labels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_reduction("DiceLoss", reduction)
        self.include_background = include_background
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.reduction = reduction
        self.labels = None if labels is None else _check_labels("DiceLoss", labels)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(
            pred, target, self.include_background, self.smooth_nr, self.smooth_dr, self.reduction, self.labels
        )

    def extra_repr(self) -> str:
        return (
            f"include_background={self.include_background}, smooth_nr={self.smooth_nr}, "
            f"smooth_dr={self.smooth_dr}, reduction={self.reduction!r}, labels={self.labels}"
        )
