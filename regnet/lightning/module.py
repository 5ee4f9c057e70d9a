"""``RegistrationModule``: learning-based pairwise registration on regnet's kernels.

A MONAI backbone sees ``cat([moving, fixed], 1)`` and predicts a stationary velocity field
(``transform="svf"``, integrated by :func:`regnet.ops.exp`: diffeomorphic) or a displacement
field (``transform="ddf"``). The moving image is pulled through the field by
:func:`regnet.ops.warp`; the loss is a weighted sum of regnet losses
(:class:`~regnet.lightning.objective.RegistrationObjective`).

Conventions (``docs/conventions.md``): images ``(B, C, *spatial)``; every field is
``(B, ndim, *spatial)`` in voxels of the fixed grid with ``warped(x) = moving(x + ddf(x))``.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from regnet import _checks, metrics, ops
from regnet._checks import ConfigError
from regnet.geometry import theta_to_ddf
from regnet.lightning.evaluation import label_metrics, overview_figure, warp_labels
from regnet.lightning.networks import BACKBONES, AffineHead, FlowBackbone
from regnet.lightning.objective import RegistrationObjective, as_masks

TRANSFORMS = ("svf", "ddf")
AFFINE_MODES = ("none", "head", "prealign")


class RegistrationModule(pl.LightningModule):
    """Train a network to register a moving image onto a fixed image.

    Batches are dictionaries (as :class:`~regnet.lightning.PairDataModule` yields): ``"moving"``
    and ``"fixed"`` ``(B, C, *spatial)`` on one grid, optionally ``"moving_label"`` and
    ``"fixed_label"`` (float masks ``(B, L, *spatial)`` or integer label maps ``(B, 1, *spatial)``).

    Args:
        ndim: spatial dimensions, 2 or 3.
        image_channels: ``C``, channels of each image (the network sees ``2 * C``).
        backbone: ``"voxelmorph"`` (MONAI ``VoxelMorphUNet``), ``"unet"`` (``UNet``),
            ``"basicunet"`` (``BasicUNet``), ``"regunet"`` (``RegUNet``) or ``"localnet"`` (``LocalNet``).
        channels: features per level (``None``: :data:`regnet.lightning.networks.DEFAULT_CHANNELS`;
            ``regunet`` / ``localnet`` use ``channels[0]`` as the initial width and
            ``len(channels)`` levels). Spatial sizes must be divisible by ``2**(levels - 1)``
            (voxelmorph: ``2**(len / 2)``, basicunet: 16).
        transform: ``"svf"`` (velocity, integrated with ``integration_steps`` scaling-and-squaring
            steps) or ``"ddf"`` (displacement predicted directly).
        integration_steps: squarings of :func:`regnet.ops.exp` (``svf`` only).
        affine: ``"none"``; ``"head"``: a small CNN predicts an affine map first (trained jointly);
            ``"prealign"``: :class:`regnet.AffineRegistration` (iterative, no gradients, the
            similarity of this objective) aligns each pair before the network.
        prealign_iterations: iterations of each pre-alignment level (``affine="prealign"``).
        similarity: ``{"mse" | "lncc" | "mi": weight}`` (default ``{"lncc": 1.0}``).
        regularisation: ``{"bending" | "diffusion": weight}`` on the deformable DDF, in voxels
            (default ``{"diffusion": 1.0}``).
        label_weight: weight of the Dice loss of the labels warped by the same field (weak
            supervision); 0 trains on images only.
        lncc_kernel_size, mi_num_bins: options of the LNCC and MI losses.
        lr, weight_decay: Adam (LightningCLI's ``--optimizer`` replaces it).
        instance_steps: test-time instance optimisation: Adam steps on the predicted field
            (velocity or DDF) with the image terms of this objective, in ``test_step`` and
            ``predict_step`` (0: off). Needs a similarity term.
        instance_lr: Adam step size of the instance optimisation (voxels).
        log_figure: draw fixed / moving / warped of the first validation batch each validation
            (to the logger if it takes figures, else ``<log_dir>/figures/*.png``).
    """

    def __init__(
        self,
        ndim: int = 3,
        image_channels: int = 1,
        backbone: str = "voxelmorph",
        channels: list[int] | None = None,
        transform: str = "svf",
        integration_steps: int = 7,
        affine: str = "none",
        prealign_iterations: int = 50,
        similarity: dict[str, float] | None = None,
        regularisation: dict[str, float] | None = None,
        label_weight: float = 0.0,
        lncc_kernel_size: int = 7,
        mi_num_bins: int = 32,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        instance_steps: int = 0,
        instance_lr: float = 0.1,
        log_figure: bool = True,
    ) -> None:
        super().__init__()
        owner = "RegistrationModule"
        if ndim not in (2, 3) or isinstance(ndim, bool):
            raise ConfigError(f"{owner}: ndim must be 2 or 3, got {ndim!r}")
        _checks.integer(owner, "image_channels", image_channels, low=1, error=ConfigError)
        _checks.string_choice(owner, "backbone", backbone, BACKBONES, error=ConfigError)
        _checks.string_choice(owner, "transform", transform, TRANSFORMS, error=ConfigError)
        _checks.integer(owner, "integration_steps", integration_steps, low=0, error=ConfigError)
        _checks.string_choice(owner, "affine", affine, AFFINE_MODES, error=ConfigError)
        _checks.integer(owner, "prealign_iterations", prealign_iterations, low=1, error=ConfigError)
        _checks.number(owner, "lr", lr, low=0.0, low_open=True, error=ConfigError)
        _checks.number(owner, "weight_decay", weight_decay, low=0.0, error=ConfigError)
        _checks.integer(owner, "instance_steps", instance_steps, low=0, error=ConfigError)
        _checks.number(owner, "instance_lr", instance_lr, low=0.0, low_open=True, error=ConfigError)
        if similarity is None:
            similarity = {"lncc": 1.0}
        if regularisation is None:
            regularisation = {"diffusion": 1.0}
        self.save_hyperparameters()
        self.objective = RegistrationObjective(similarity, regularisation, label_weight, lncc_kernel_size,
                                               mi_num_bins, owner=owner)
        if instance_steps and not self.objective.uses_images:
            raise ConfigError(f"{owner}: instance_steps={instance_steps} needs a similarity term with a weight > 0 "
                              f"(instance optimisation sees no labels), got similarity={similarity!r}")
        if affine == "prealign" and not self.objective.uses_images:
            raise ConfigError(f"{owner}: affine='prealign' needs a similarity term with a weight > 0, "
                              f"got similarity={similarity!r}")
        self.backbone = FlowBackbone(backbone, ndim, 2 * image_channels, channels)
        self.affine_head = AffineHead(ndim, 2 * image_channels) if affine == "head" else None

    # --- the transform ------------------------------------------------------------------------

    def _check_pair(self, moving, fixed) -> None:
        fn = "RegistrationModule"
        for name, x in (("moving", moving), ("fixed", fixed)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != self.hparams.ndim + 2 or x.shape[1] != self.hparams.image_channels:
                raise ValueError(f"{fn}: {name} must have shape (B, {self.hparams.image_channels}, *spatial) with "
                                 f"{self.hparams.ndim} spatial dimensions (ndim, image_channels), got {tuple(x.shape)}")
        if moving.shape != fixed.shape:
            raise ValueError(f"{fn}: moving and fixed must have the same shape (resample them onto one grid, e.g. "
                             f"PairDataModule(spatial_size=...)), got {tuple(moving.shape)} and {tuple(fixed.shape)}")
        d = self.backbone.divisor
        if any(s % d for s in fixed.shape[2:]):
            raise ValueError(f"{fn}: backbone {self.hparams.backbone!r} needs every spatial size divisible by {d} "
                             f"(data spatial_size), got {tuple(fixed.shape[2:])}")

    def _to_ddf(self, field: torch.Tensor) -> torch.Tensor:
        if self.hparams.transform == "svf":
            return ops.exp(field, self.hparams.integration_steps, padding_mode="border")
        return field

    def _prealign(self, moving, fixed) -> torch.Tensor:
        from regnet.registration import AffineRegistration

        similarity = lambda a, b: self.objective.weighted(self.objective.image_terms(a, b, None))  # noqa: E731
        with torch.inference_mode(False), torch.enable_grad():
            reg = AffineRegistration(scales=(2, 1), iterations=self.hparams.prealign_iterations, verbose=False,
                                     dissimilarity_function=similarity, align_corners=True)
            reg(moving.clone(), fixed.clone(), return_moved=False)
            return reg.get_affine().clone()

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Register ``moving`` onto ``fixed`` (both ``(B, C, *spatial)``, one grid).

        Returns a dict: ``"ddf"`` the total displacement ``(B, ndim, *spatial)`` in voxels
        (``warped = regnet.ops.warp(moving, ddf)``), ``"warped"`` ``(B, C, *spatial)``,
        ``"field"`` the network output (velocity for ``svf``, else the deformable DDF),
        ``"deformable_ddf"`` (the non-affine part), and with an affine stage ``"theta"``
        ``(B, ndim, ndim + 1)`` (normalised, ``align_corners=True``) and ``"affine_ddf"``.
        """
        self._check_pair(moving, fixed)
        out = {}
        moving_in = moving
        if self.hparams.affine != "none":
            if self.hparams.affine == "head":
                theta = self.affine_head(torch.cat([moving, fixed], 1))
            else:
                theta = self._prealign(moving, fixed)
            out["theta"] = theta
            out["affine_ddf"] = theta_to_ddf(theta, fixed.shape[2:])
            moving_in = ops.warp(moving, out["affine_ddf"])
        out["field"] = self.backbone(torch.cat([moving_in, fixed], 1))
        return self._finish(moving, out)

    def _finish(self, moving, out):
        deformable = self._to_ddf(out["field"])
        out["deformable_ddf"] = deformable
        out["ddf"] = deformable if "affine_ddf" not in out else ops.compose(out["affine_ddf"], deformable)
        out["warped"] = ops.warp(moving, out["ddf"])
        return out

    # --- steps --------------------------------------------------------------------------------

    def _losses(self, batch, out):
        warped_label = fixed_label = None
        has_labels = "moving_label" in batch and "fixed_label" in batch
        if self.objective.label_weight and has_labels:
            moving_label, fixed_label = as_masks(batch["moving_label"], batch["fixed_label"])
            warped_label = ops.warp(moving_label.to(out["ddf"].dtype), out["ddf"], padding_mode="zeros")
        return self.objective(out["warped"], batch["fixed"], out["deformable_ddf"], warped_label, fixed_label)

    def training_step(self, batch, batch_idx):
        out = self(batch["moving"], batch["fixed"])
        total, parts = self._losses(batch, out)
        size = batch["fixed"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=size)
        return total

    def _evaluate(self, batch, stage: str, refine: bool):
        out = self(batch["moving"], batch["fixed"])
        if refine and self.hparams.instance_steps:
            out = self.instance_optimise(batch["moving"], batch["fixed"], out)
        total, parts = self._losses(batch, out)
        size = batch["fixed"].shape[0]
        logs = {f"{stage}/loss": (total, size)}
        logs.update({f"{stage}/{name}": (value, size) for name, value in parts.items()})
        logs[f"{stage}/folding"] = (metrics.jacobian_stats(out["ddf"])["fraction_nonpositive"], size)
        if "moving_label" in batch and "fixed_label" in batch:
            warped_label = warp_labels(batch["moving_label"], out["ddf"])
            for name, (value, count) in label_metrics(warped_label, batch["fixed_label"]).items():
                logs[f"{stage}/{name}"] = (value, count)  # weighted by the entries where it is defined
        for name, (value, weight) in logs.items():
            self.log(name, value, sync_dist=True, batch_size=weight,
                     prog_bar=name in (f"{stage}/loss", f"{stage}/dice"))
        return out

    def validation_step(self, batch, batch_idx):
        out = self._evaluate(batch, "val", refine=False)
        if batch_idx == 0 and self.hparams.log_figure:
            self._log_figure(batch, out)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", refine=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """Returns ``{"warped": (B, C, *spatial), "ddf": (B, ndim, *spatial)}`` (voxels of the
        fixed grid, ``warped = regnet.ops.warp(moving, ddf)``), plus ``"warped_label"`` when the
        batch has ``"moving_label"`` and ``"case"`` names when it has them. With
        ``instance_steps > 0`` the field is refined first (:meth:`instance_optimise`)."""
        out = self(batch["moving"], batch["fixed"])
        if self.hparams.instance_steps:
            out = self.instance_optimise(batch["moving"], batch["fixed"], out)
        result = {"warped": out["warped"], "ddf": out["ddf"]}
        if "moving_label" in batch:
            result["warped_label"] = warp_labels(batch["moving_label"], out["ddf"])
        if "case" in batch:
            result["case"] = batch["case"]
        return result

    def instance_optimise(self, moving, fixed, out, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Refine a prediction ``out`` of :meth:`forward` for this pair: ``steps`` (default
        ``instance_steps``) Adam steps of size ``instance_lr`` on the network's field (velocity
        or DDF; the affine part is kept) minimising the objective's image terms, as the
        iterative registrations do (loss scaled by batch * voxels, see docs/conventions.md).
        Works under ``torch.inference_mode`` (Lightning's test/predict). Returns a new dict."""
        steps = self.hparams.instance_steps if steps is None else steps
        with torch.inference_mode(False), torch.enable_grad():
            moving, fixed = moving.clone(), fixed.clone()
            base = {k: out[k].detach().clone() for k in ("theta", "affine_ddf") if k in out}
            field = nn.Parameter(out["field"].detach().clone())
            optimiser = torch.optim.Adam([field], lr=self.hparams.instance_lr)
            scale = float(fixed.shape[0] * fixed[0, 0].numel())
            for _ in range(steps):
                optimiser.zero_grad(set_to_none=True)
                trial = self._finish(moving, {**base, "field": field})
                parts = self.objective.image_terms(trial["warped"], fixed, trial["deformable_ddf"])
                (self.objective.weighted(parts) * scale).backward()
                optimiser.step()
            with torch.no_grad():
                result = self._finish(moving, {**base, "field": field.detach().clone()})
        return result

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # --- figure -------------------------------------------------------------------------------

    def _log_figure(self, batch, out) -> None:
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        figure = overview_figure(batch["fixed"], batch["moving"], out["warped"],
                                 title=f"epoch {self.current_epoch}, step {self.global_step}")
        experiment = getattr(self.logger, "experiment", None) if self.logger is not None else None
        if experiment is not None and hasattr(experiment, "add_figure"):  # TensorBoard
            experiment.add_figure("val/overview", figure, global_step=self.global_step)
            return
        if self.logger is not None and hasattr(self.logger, "log_image"):  # W&B, Neptune, ...
            try:
                self.logger.log_image(key="val/overview", images=[figure])
                return
            except (TypeError, NotImplementedError):
                pass
        # the logger's folder, not trainer.log_dir: that one is a collective (broadcast) under DDP
        folder = Path(getattr(self.logger, "log_dir", None) or trainer.default_root_dir) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"val_epoch{self.current_epoch:04d}_step{self.global_step:07d}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        figure.savefig(tmp, dpi=80)
        tmp.replace(path)
