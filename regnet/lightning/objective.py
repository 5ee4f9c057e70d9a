"""The training objective: a weighted sum of regnet similarity losses, regularisers of the
displacement field and an optional label Dice term (weak supervision).

Every term is one of regnet's losses (:mod:`regnet.losses`), so the networks are trained on
the same kernels as the iterative registrations.
"""

from __future__ import annotations

import torch
from torch import nn

from regnet import _checks, losses
from regnet._checks import ConfigError

SIMILARITIES = ("mse", "lncc", "mi")
REGULARISERS = ("bending", "diffusion")


def as_masks(moving_label: torch.Tensor, fixed_label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label inputs as float masks ``(B, L, *spatial)`` with the same channels.

    Float inputs are taken as they are (channel ``l`` = the mask / probability of label ``l``;
    zero channels are padding). Integer label maps ``(B, 1, *spatial)`` are one-hot encoded over
    the non-zero labels present in either map.
    """
    if moving_label.is_floating_point() and fixed_label.is_floating_point():
        return moving_label, fixed_label
    values = torch.unique(torch.cat([moving_label.flatten(), fixed_label.flatten()]))
    values = values[values != 0].view(1, -1, *[1] * (moving_label.dim() - 2))
    dtype = torch.get_default_dtype()
    return (moving_label == values).to(dtype), (fixed_label == values).to(dtype)


def soft_dice_per_channel(pred: torch.Tensor, target: torch.Tensor,
                          eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft Dice ``(B, L)`` of two mask tensors ``(B, L, *spatial)`` and a ``(B, L)`` bool of the
    channels present in the target (empty target channels are padding and are not scored)."""
    dims = tuple(range(2, pred.dim()))
    inter = (pred * target).sum(dims)
    total = pred.sum(dims) + target.sum(dims)
    return (2 * inter + eps) / (total + eps), target.sum(dims) > 0


class RegistrationObjective(nn.Module):
    """``sum_k w_k * similarity_k(warped, fixed) + sum_r w_r * reg_r(ddf) + w_label * (1 - Dice)``.

    Args:
        similarity: ``{"mse" | "lncc" | "mi": weight}`` (:class:`regnet.losses.MSELoss`,
            :class:`~regnet.losses.LocalNCCLoss`, :class:`~regnet.losses.GlobalMILoss`, all minimised).
        regularisation: ``{"bending" | "diffusion": weight}`` on the DDF ``(B, ndim, *spatial)`` in voxels.
        label_weight: weight of the soft Dice loss between the warped moving label masks and the
            fixed label masks (channels empty in the fixed masks are skipped).
        lncc_kernel_size: window of the local NCC (voxels).
        mi_num_bins: histogram bins of the mutual information.

    ``forward(warped, fixed, ddf, warped_label=None, fixed_label=None)`` returns
    ``(total, {term: value})`` (scalars, mean over the batch).
    """

    def __init__(self, similarity=None, regularisation=None, label_weight: float = 0.0,
                 lncc_kernel_size: int = 7, mi_num_bins: int = 32, owner: str = "RegistrationModule") -> None:
        super().__init__()
        self.similarity = _checks.weights(owner, "similarity", similarity, SIMILARITIES, error=ConfigError)
        self.regularisation = _checks.weights(owner, "regularisation", regularisation, REGULARISERS,
                                              error=ConfigError)
        self.label_weight = _checks.number(owner, "label_weight", label_weight, low=0.0, error=ConfigError)
        _checks.integer(owner, "lncc_kernel_size", lncc_kernel_size, low=1, error=ConfigError)
        _checks.integer(owner, "mi_num_bins", mi_num_bins, low=2, error=ConfigError)
        if not any(self.similarity.values()) and self.label_weight == 0:
            raise ConfigError(
                f"{owner}: nothing to match: similarity (terms {SIMILARITIES}) has no weight > 0 and "
                f"label_weight is 0, got similarity={similarity!r}, label_weight={label_weight!r}"
            )
        self.terms = nn.ModuleDict({
            "mse": losses.MSELoss(),
            "lncc": losses.LocalNCCLoss(kernel_size=lncc_kernel_size),
            "mi": losses.GlobalMILoss(num_bins=mi_num_bins),
            "bending": losses.BendingEnergyLoss(),
            "diffusion": losses.DiffusionLoss(),
        })

    @property
    def uses_images(self) -> bool:
        return any(self.similarity.values())

    def image_terms(self, warped, fixed, ddf=None) -> dict[str, torch.Tensor]:
        """The similarity terms, and the regularisers of ``ddf`` unless it is ``None``, unweighted."""
        parts = {}
        for name, weight in self.similarity.items():
            if weight:
                parts[name] = self.terms[name](warped, fixed)
        for name, weight in self.regularisation.items():
            if weight and ddf is not None:
                parts[name] = self.terms[name](ddf)
        return parts

    def weighted(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for name, value in parts.items():
            weight = self.label_weight if name == "label" else {**self.similarity, **self.regularisation}[name]
            total = weight * value if total is None else total + weight * value
        return total

    def forward(self, warped, fixed, ddf, warped_label=None, fixed_label=None):
        parts = self.image_terms(warped, fixed, ddf)
        if self.label_weight and warped_label is not None and fixed_label is not None:
            dice, present = soft_dice_per_channel(warped_label, fixed_label)
            per_item = ((1 - dice) * present).sum(1) / present.sum(1).clamp(min=1)
            parts["label"] = per_item.mean()
        total = self.weighted(parts)
        if total is None:  # only possible when the label term is configured but the batch has no labels
            raise ValueError(
                "RegistrationModule: label_weight > 0 and no similarity term, but the batch holds no "
                "'moving_label' / 'fixed_label'; give the data module labels or a similarity weight"
            )
        return total, parts
