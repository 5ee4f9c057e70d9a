"""Masks in registration (ANTs' -x): a corrupted region drags an unmasked registration away, the
masked one is not dragged; masks through register_images, the MONAI transforms and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regnet import AffineRegistration, SyNRegistration, ops
from regnet.io import Image, save_image
from regnet.registration import register_images


def _blobs(size: int = 48) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = (torch.exp(-((x - 0.15) ** 2 + (y + 0.1) ** 2) / 0.08)
             + 0.7 * torch.exp(-((x + 0.3) ** 2 + (y - 0.25) ** 2) / 0.03)
             + 0.5 * torch.exp(-((x + 0.1) ** 2 + (y + 0.4) ** 2) / 0.02))
    return image[None, None].double()


def _shifted(image: torch.Tensor, shift=(2.5, -1.5)) -> torch.Tensor:
    ddf = torch.tensor(shift, dtype=image.dtype).view(1, 2, 1, 1).expand(1, 2, *image.shape[2:])
    return ops.warp(image, ddf.contiguous())


def _corrupt(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright artefact (a lesion) over one corner; returns the image and the mask excluding it."""
    out = image.clone()
    out[..., 28:46, 30:46] = 1.6
    mask = torch.ones_like(image)
    mask[..., 26:48, 28:48] = 0
    return out, mask


def _translation_error(reg: AffineRegistration, moving: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean distance (voxels) between the registration's and the true pull displacement."""
    from regnet.geometry import theta_to_ddf

    ddf = theta_to_ddf(reg.get_affine(), moving.shape[2:])
    return float((ddf - truth).norm(dim=1).mean())


def test_affine_with_a_static_mask_ignores_the_artefact():
    fixed = _blobs()
    moving = _shifted(fixed, (-2.5, 1.5))  # moving(x) = fixed(x - s): the pull field is +s
    truth = torch.tensor([2.5, -1.5], dtype=fixed.dtype).view(1, 2, 1, 1)
    corrupted, mask = _corrupt(fixed)
    options = dict(verbose=False, init=None, tolerance=0.0, iterations=(150, 60), with_zoom=False,
                   with_rotation=False)  # a translation: a free linear part could shrink the overlap instead
    plain = AffineRegistration(**options)
    plain(moving, corrupted)
    masked = AffineRegistration(**options)
    masked(moving, corrupted, static_mask=mask)
    error_plain, error_masked = _translation_error(plain, moving, truth), _translation_error(masked, moving, truth)
    assert error_plain > 0.4, error_plain          # dragged by the artefact
    assert error_masked < 0.25 * error_plain and error_masked < 0.2, (error_masked, error_plain)


def test_affine_with_a_moving_mask_ignores_an_artefact_in_the_moving_image():
    fixed = _blobs()
    moving, mask = _corrupt(_shifted(fixed, (-2.5, 1.5)))
    truth = torch.tensor([2.5, -1.5], dtype=fixed.dtype).view(1, 2, 1, 1)
    options = dict(verbose=False, init=None, tolerance=0.0, iterations=(150, 60), with_zoom=False,
                   with_rotation=False)
    plain = AffineRegistration(**options)
    plain(moving, fixed)
    masked = AffineRegistration(**options)
    masked(moving, fixed, moving_mask=mask)
    assert _translation_error(masked, moving, truth) < 0.5 * _translation_error(plain, moving, truth)


def test_syn_with_a_mask_is_not_dragged_into_an_intensity_hole():
    fixed = _blobs()
    moving = fixed.clone()
    moving[..., 14:24, 18:28] = 0.0  # an intensity hole in the moving image: the true field is 0
    mask = torch.ones_like(fixed)
    mask[..., 8:30, 12:34] = 0  # the hole and a margin of the LNCC window's radius: no window sees it
    options = dict(scales=(2, 1), iterations=(30, 20), verbose=False, tolerance=0.0)
    _, _, plain, _ = SyNRegistration(**options)(moving, fixed)
    _, _, masked, _ = SyNRegistration(**options)(moving, fixed, moving_mask=mask)
    region = (slice(None), slice(None), slice(14, 24), slice(18, 28))
    dragged, kept = plain[region].norm(dim=1).mean(), masked[region].norm(dim=1).mean()
    assert dragged > 0.3 and kept < 0.5 * dragged, (float(dragged), float(kept))


def test_masks_must_fit_their_images():
    fixed, moving = _blobs(), _blobs()
    with pytest.raises(ValueError, match="static_mask"):
        AffineRegistration(verbose=False)(moving, fixed, static_mask=torch.ones(1, 1, 40, 48))
    with pytest.raises(ValueError, match="moving_mask"):
        SyNRegistration(verbose=False)(moving, fixed, moving_mask=-torch.ones_like(fixed))
    with pytest.raises(ValueError, match="static_mask"):
        AffineRegistration(verbose=False)(moving, fixed, static_mask=torch.ones(1, 2, 48, 48))


def _image(data: torch.Tensor, affine=None) -> Image:
    return Image(data.float(), np.eye(3) if affine is None else affine)


def test_register_images_with_masks_and_their_checks():
    fixed = _blobs()
    corrupted, mask = _corrupt(fixed)
    moving = _shifted(fixed, (-2.0, 1.0))
    config = {"affine": {"scales": [2, 1], "iterations": [100, 40], "init": None, "with_zoom": False,
                         "with_rotation": False, "tolerance": 0.0}}
    plain = register_images(_image(corrupted), _image(moving), "affine", config, "cpu", False)
    masked = register_images(_image(corrupted), _image(moving), "affine", config, "cpu", False,
                             fixed_mask=_image(mask))
    true = np.array([2.0, -1.0])
    assert np.abs(masked.matrix[:2, 2] - true).max() < 0.5 * np.abs(plain.matrix[:2, 2] - true).max()
    assert masked.report["masks"] == {"fixed": "in memory", "moving": None}
    with pytest.raises(ValueError, match="binary"):
        register_images(_image(fixed), _image(moving), "affine", config, "cpu", False, fixed_mask=_image(mask * 0.5))
    with pytest.raises(ValueError, match="grid"):
        register_images(_image(fixed), _image(moving), "affine", config, "cpu", False,
                        moving_mask=_image(mask, np.diag([2.0, 2.0, 1.0])))
    with pytest.raises(ValueError, match="empty"):
        register_images(_image(fixed), _image(moving), "affine", config, "cpu", False, fixed_mask=_image(mask * 0))


def test_monai_transform_mask_keys():
    pytest.importorskip("monai")
    from regnet.transforms import RegisterAffined

    fixed = _blobs()
    corrupted, mask = _corrupt(fixed)
    moving = _shifted(fixed, (-2.0, 1.0))
    config = {"affine": {"scales": [2, 1], "iterations": [100, 40], "init": None, "with_zoom": False,
                         "with_rotation": False, "tolerance": 0.0}}
    data = {"moving": moving[0].float(), "fixed": corrupted[0].float(), "fixed_mask": mask[0].float()}
    out = RegisterAffined("moving", fixed_key="fixed", config=config, mask_keys=("fixed_mask", None))(data)
    plain = RegisterAffined("moving", fixed_key="fixed", config=config)(data)
    true = np.array([2.0, -1.0])
    assert (np.abs(out["affine"][:2, 2].numpy() - true).max()
            < 0.5 * np.abs(plain["affine"][:2, 2].numpy() - true).max())
    with pytest.raises(KeyError, match="mask_keys"):
        RegisterAffined("moving", fixed_key="fixed", mask_keys=("nope", None))(data)
    with pytest.raises(ValueError, match="mask_keys"):
        RegisterAffined("moving", fixed_key="fixed", mask_keys="fixed_mask")


def test_cli_masks_and_bad_masks(tmp_path):
    from regnet.cli import main

    fixed = _blobs()
    corrupted, mask = _corrupt(fixed)
    moving = _shifted(fixed, (-2.0, 1.0))
    for name, data in (("fixed.nii.gz", corrupted), ("moving.nii.gz", moving), ("mask.nii.gz", mask),
                       ("soft.nii.gz", mask * 0.5), ("small.nii.gz", mask[..., :40, :40])):
        save_image(tmp_path / name, data[0].float(), np.eye(3))
    config = tmp_path / "c.yaml"
    config.write_text("affine: {scales: [2, 1], iterations: [60, 20]}\n")
    args = ["register", "--fixed", str(tmp_path / "fixed.nii.gz"), "--moving", str(tmp_path / "moving.nii.gz"),
            "--transform", "affine", "--config", str(config), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "ok"), "--fixed-mask", str(tmp_path / "mask.nii.gz")]) == 0
    for bad, option in (("soft.nii.gz", "--fixed-mask"), ("small.nii.gz", "--moving-mask")):
        out = tmp_path / f"bad_{bad}"
        assert main([*args, "--out", str(out), option, str(tmp_path / bad)]) == 2
        assert not out.exists()
