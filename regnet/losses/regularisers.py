"""Smoothness regularisers of a displacement field: bending energy, diffusion, linear elasticity.

Every function takes a DDF ``(B, ndim, *spatial)`` in voxels (channel ``i`` moves along
spatial axis ``i``), 2D or 3D, float32 or float64, any batch size, with every spatial size
>= 3 (the stencils span three voxels). The modules hold only configuration.

- :func:`bending_energy` / :class:`BendingEnergyLoss` equal ``monai.losses.BendingEnergyLoss``
  and :func:`diffusion` / :class:`DiffusionLoss` equal ``monai.losses.DiffusionLoss``
  (same ``normalize`` and ``reduction`` options, same values and gradients).
- :func:`linear_elasticity` / :class:`LinearElasticityLoss` compute torchreg's
  ``LinearElasticity`` energy on regnet's DDF convention, without torchreg's two bugs (see
  :func:`linear_elasticity`), and in 2D as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regnet import _checks
from regnet.losses._diffusion_energy import DiffusionEnergy
from regnet.losses._reduce import check_reduction, reduce
from regnet.ops._constants import constant


def _check_ddf(fn: str, ddf) -> torch.Tensor:
    _checks.field(fn, "ddf", ddf)
    if min(ddf.shape[2:]) < 3:
        raise ValueError(
            f"{fn}: every spatial size of ddf must be >= 3 (the finite-difference stencils span three voxels), "
            f"got shape {tuple(ddf.shape)}"
        )
    return ddf


def _shifted(x: torch.Tensor, shifts: dict[int, int]) -> torch.Tensor:
    """``x`` on the interior ``[1:-1]`` of every spatial axis, shifted by ``shifts[axis]`` in {-1, 0, 1}."""
    index = [slice(None), slice(None)]
    for axis in range(x.dim() - 2):
        s = shifts.get(axis, 0)
        index.append(slice(1 + s, x.shape[axis + 2] - 1 + s))
    return x[tuple(index)]


def _first(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Central difference ``(x[i+1] - x[i-1]) / 2`` along spatial ``axis`` on the interior of every axis."""
    return (_shifted(x, {axis: 1}) - _shifted(x, {axis: -1})) / 2.0


def _second(x: torch.Tensor, axis1: int, axis2: int) -> torch.Tensor:
    """Compact second difference on the interior: ``[1, -2, 1]`` if the axes agree, the 4-point mixed stencil if not."""
    if axis1 == axis2:
        return _shifted(x, {axis1: 1}) - 2 * _shifted(x, {}) + _shifted(x, {axis1: -1})
    return (
        _shifted(x, {axis1: 1, axis2: 1})
        - _shifted(x, {axis1: 1, axis2: -1})
        - _shifted(x, {axis1: -1, axis2: 1})
        + _shifted(x, {axis1: -1, axis2: -1})
    ) / 4.0


def _component_scale(ddf: torch.Tensor, numerator: float) -> torch.Tensor:
    """``numerator / n_a`` for component ``a``, shaped ``(1, ndim, 1, ...)`` to broadcast over a DDF."""
    spatial = ddf.shape[2:]
    values = [numerator / n for n in spatial]
    return constant(values, ddf.dtype, ddf.device).view(1, -1, *[1] * len(spatial))


def bending_energy(ddf: torch.Tensor, normalize: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Bending energy ``sum_ij (d2 u / dx_i dx_j)^2`` of a DDF, as ``monai.losses.BendingEnergyLoss``.

    Pure second derivatives use the ``[1, -2, 1]`` stencil, mixed ones the compact 4-point
    central stencil; both are evaluated on the interior ``[1:-1]`` of every spatial axis, and
    each mixed term is counted twice (``d_ij`` and ``d_ji``). Zero for every affine field.

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 3.
        normalize: scale the derivative ``d2 u_a / dx_i dx_j`` by ``n_i * n_j / n_a`` (spatial
            sizes ``n``), i.e. derivatives of the field as a fraction of the image size, so that
            the value is roughly independent of the sampling resolution (MONAI's ``normalize``).
        reduction: ``"mean"`` (over batch, components and interior voxels), ``"sum"`` or
            ``"none"`` (the energy density, ``(B, ndim, *[n - 2 for n in spatial])``).
    """
    fn = "bending_energy"
    _check_ddf(fn, ddf)
    check_reduction(fn, reduction)
    spatial = ddf.shape[2:]
    energy = None
    for i in range(len(spatial)):
        d2 = _second(ddf, i, i)
        if normalize:
            d2 = d2 * _component_scale(ddf, float(spatial[i] ** 2))
        energy = d2**2 if energy is None else energy + d2**2
        for j in range(i + 1, len(spatial)):
            d2 = _second(ddf, i, j)
            if normalize:
                d2 = d2 * _component_scale(ddf, float(spatial[i] * spatial[j]))
            energy = energy + 2 * d2**2
    return reduce(energy, reduction)


def diffusion(ddf: torch.Tensor, normalize: bool = False, reduction: str = "mean",
              divergence_weight: float = 0.0) -> torch.Tensor:
    """Diffusion energy ``sum_i (d u / dx_i)^2`` of a DDF, as ``monai.losses.DiffusionLoss``,
    optionally plus ``divergence_weight * (div u)^2``.

    First derivatives are central differences ``(u[i+1] - u[i-1]) / 2`` on the interior
    ``[1:-1]`` of every spatial axis. Zero for every translation.

    The divergence term penalises local volume change (``log det J ~ div u`` for small
    displacements) more than shear and shift: up to boundary terms, diffusion plus ``beta (div
    u)^2`` is the linear-elastic (Navier) energy with Lame parameters ``mu = 2``, ``lambda = 2
    (beta - 1)``. SyN's default in 3D (``regnet.registration.syn.default_regulariser``): on the
    brain pairs it gives fields of lower SDlogJ at the same Dice (``docs/registration.md``).
    With ``divergence_weight = 0`` (the default) the value is MONAI's.

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 3.
        normalize: scale ``d u_a / dx_i`` by ``n_i / n_a`` (MONAI's ``normalize``; the
            divergence is unchanged by it).
        reduction: ``"mean"`` (over batch, components and interior voxels: ``(sum |grad u|^2 +
            beta sum (div u)^2) / (B * ndim * interior voxels)``), ``"sum"`` or ``"none"``
            (``(B, ndim, *[n - 2 for n in spatial])``, ``beta (div u)^2 / ndim`` added to each
            component, so that its sum and mean are the others').
        divergence_weight: ``beta >= 0``.

    Example::

        >>> diffusion(torch.zeros(1, 3, 8, 8, 8), divergence_weight=3.0)
        tensor(0.)
    """
    fn = "diffusion"
    _check_ddf(fn, ddf)
    check_reduction(fn, reduction)
    beta = _checks.number(fn, "divergence_weight", divergence_weight, low=0.0)
    if not normalize and reduction != "none":
        return DiffusionEnergy.apply(ddf, reduction, beta)  # the same, one autograd node
    spatial = ddf.shape[2:]
    energy = None
    div = None
    for i in range(len(spatial)):
        g = _first(ddf, i)
        if beta:
            div = g[:, i:i + 1] if div is None else div + g[:, i:i + 1]
        if normalize:
            g = g * _component_scale(ddf, float(spatial[i]))
        energy = g**2 if energy is None else energy + g**2
    if div is not None:
        energy = energy + (beta / len(spatial)) * div**2
    return reduce(energy, reduction)


def _gradient_replicate(x: torch.Tensor, axis: int) -> torch.Tensor:
    """torchreg's ``jacobi_gradient`` stencil for one axis.

    Central difference on the interior of every spatial axis (a valid 3x3[x3] convolution),
    then replicate-padded by one voxel on every side, so the output has the shape of ``x``.
    """
    nd = x.dim() - 2
    return F.pad(_first(x, axis), (1, 1) * nd, mode="replicate")


def linear_elasticity(ddf: torch.Tensor, mu: float = 2.0, lam: float = 1.0) -> torch.Tensor:
    """torchreg's linear-elasticity regulariser on a voxel DDF, without torchreg's bugs; 2D and 3D.

    What torchreg computes (``torchreg.metrics.LinearElasticity``, flow ``(1, H, W, D, 3)`` in
    normalised ``[-1, 1]`` units, ``align_corners=True``): it applies its ``jacobi_gradient``
    twice, so the "displacement gradient" that enters Hooke's law is a *second* derivative.
    In normalised coordinates ``xi_b = i_b / s_b - 1`` with ``s_b = (n_b - 1) / 2`` and the
    normalised flow ``w_a = u_a / s_a`` of the voxel DDF ``u``, for every direction ``c``::

        H^c_ab = d2 w_a / (d xi_c d xi_b) = (s_b * s_c / s_a) * P(D_c P(D_b u_a)),
        e^c    = (H^c + H^c^T) / 2,   sigma^c = 2 mu e^c + lam tr(H^c) I,
        energy = mean over (batch, c, voxels) of  sum_{a <= b} (sigma^c_ab)^2

    with ``D_b`` the central difference along axis ``b`` evaluated on the interior of every
    axis and ``P`` replicate padding by one voxel (torchreg's valid 3x3x3 convolution + pad).
    Off-diagonal stress entries count once, as in torchreg. The energy is zero for every
    affine field (not only rigid ones), its gradient at a zero field is zero, and, being
    measured in normalised coordinates, its weight hardly depends on the image size. It is
    not the textbook first-order strain energy of ``grad u`` (non-zero for affine stretches),
    which torchreg's variable names suggest it meant; regnet keeps torchreg's numbers.

    Differences from torchreg (a cubic volume, batch 1, gives torchreg's numbers once its
    identity leak is removed -- ``LinearElasticity().id_grid`` set to zeros -- values and
    autograd gradients; the tests check this):

    1. *Identity leak*: torchreg adds its identity grid in both gradient passes, so a zero
       field scores ``(2 mu + lam)^2 + 2 lam^2 + 2 mu^2`` (35 for the defaults) and its
       gradient there is non-zero (the regulariser pushes an identity map away from
       identity). regnet leaves the identity out: zero field -> 0, zero gradient.
    2. *Axis order on non-cubic volumes*: torchreg converts flow channel ``k`` (ordered
       x, y, z = reversed array axes) with the size of array axis ``k``, in both passes, so
       its factor is ``s_{2-a} * s_{2-b} / s_a`` where the formula above has
       ``s_b * s_c / s_a``; the two agree only on cubic volumes. regnet's energy does not
       depend on the order of the axes (permuting the axes and components of the DDF gives
       the same value); torchreg's does.
    3. torchreg accepts batch size 1 only (its convolution takes the batch as input
       channels) and 3D only; regnet takes any batch (the mean over the batch) and 2D, where
       the same formula uses the 2x2 stress ``sigma_xx, sigma_xy, sigma_yy``.

    Args:
        ddf: ``(B, ndim, *spatial)`` voxel displacements, ndim 2 or 3, every spatial size >= 3.
        mu, lam: Lame parameters (torchreg's defaults 2 and 1).

    Returns:
        A scalar tensor, differentiable w.r.t. ``ddf``.
    """
    fn = "linear_elasticity"
    _check_ddf(fn, ddf)
    spatial = ddf.shape[2:]
    nd = len(spatial)
    B = ddf.shape[0]
    s = [(n - 1) / 2.0 for n in spatial]
    # first[b]: (B, nd_a, *spatial) = P(D_b u_a) for all components a.
    first = [_gradient_replicate(ddf, b) for b in range(nd)]
    # stacked over b into channels: (B * nd_a, nd_b, *spatial), so the second pass is one padded op per c.
    first = torch.stack(first, dim=2).reshape(B * nd, nd, *spatial)
    # scale[a][b] * s_c = s_b * s_c / s_a
    scale = constant([s[b] / s[a] for a in range(nd) for b in range(nd)], ddf.dtype, ddf.device)
    scale = scale.view(1, nd, nd, *[1] * nd)
    total = None
    for c in range(nd):
        H = _gradient_replicate(first, c).view(B, nd, nd, *spatial) * (scale * s[c])  # H[:, a, b]
        trace = sum(H[:, a, a] for a in range(nd))
        energy = None
        for a in range(nd):
            sigma = 2 * mu * H[:, a, a] + lam * trace
            energy = sigma**2 if energy is None else energy + sigma**2
            for b in range(a + 1, nd):
                sigma = mu * (H[:, a, b] + H[:, b, a])  # 2 mu * (H_ab + H_ba) / 2
                energy = energy + sigma**2
        total = energy.mean() if total is None else total + energy.mean()
    return total / nd


class BendingEnergyLoss(torch.nn.Module):
    """Bending energy of a DDF as a module; see :func:`bending_energy` (equals MONAI's ``BendingEnergyLoss``)."""

    def __init__(self, normalize: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction("BendingEnergyLoss", reduction)
        self.normalize = normalize
        self.reduction = reduction

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        return bending_energy(ddf, self.normalize, self.reduction)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, reduction={self.reduction!r}"


class DiffusionLoss(torch.nn.Module):
    """Diffusion energy of a DDF as a module; see :func:`diffusion` (equals MONAI's
    ``DiffusionLoss`` with ``divergence_weight=0``, the default)."""

    def __init__(self, normalize: bool = False, reduction: str = "mean", divergence_weight: float = 0.0) -> None:
        super().__init__()
        check_reduction("DiffusionLoss", reduction)
        self.normalize = normalize
        self.reduction = reduction
        self.divergence_weight = _checks.number("DiffusionLoss", "divergence_weight", divergence_weight, low=0.0)

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        return diffusion(ddf, self.normalize, self.reduction, self.divergence_weight)

    def extra_repr(self) -> str:
        extra = f", divergence_weight={self.divergence_weight}" if self.divergence_weight else ""
        return f"normalize={self.normalize}, reduction={self.reduction!r}{extra}"


class LinearElasticityLoss(torch.nn.Module):
    """torchreg's linear-elasticity regulariser as a module; see :func:`linear_elasticity`."""

    def __init__(self, mu: float = 2.0, lam: float = 1.0) -> None:
        super().__init__()
        self.mu = mu
        self.lam = lam

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        return linear_elasticity(ddf, self.mu, self.lam)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, lam={self.lam}"
