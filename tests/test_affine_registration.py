"""AffineRegistration: recovery of known affines (2D, 3D, batches), parity with torchreg,
initialisation, early stopping, histories, label maps and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_file

from regnet import ops
from regnet.losses import GlobalMILoss, LocalNCCLoss, MSELoss
from regnet.registration import AffineRegistration


@pytest.fixture(autouse=True)
def _one_thread():
    """Small images gain nothing from intra-op threads, and on shared cores the thread pool's
    waits dominate: run these tests on one thread, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rotation2d(degrees: float, zoom=(1.0, 1.0), shift=(0.0, 0.0), dtype=torch.float32) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    linear = rot @ torch.diag(torch.tensor(zoom, dtype=torch.float64))
    return torch.cat([linear, torch.tensor(shift, dtype=torch.float64)[:, None]], dim=1)[None].to(dtype)


@pytest.fixture
def slice64(brain_slice):
    """The real r16 slice, area-downsampled to 64 x 64, float32."""
    return F.interpolate(brain_slice.float(), size=(64, 64), mode="area")


@pytest.fixture(scope="module")
def volume():
    """The real 3D T1 volume, downsampled to 40 x 48 x 56 and scaled to [0, 1]."""
    nib = pytest.importorskip("nibabel")
    data = np.asarray(nib.load(str(data_file("brain3d/subject_a_t1.nii.gz"))).dataobj, dtype=np.float32)
    vol = torch.from_numpy(data)[None, None]
    vol = F.interpolate(vol, size=(40, 48, 56), mode="area")
    return (vol - vol.min()) / (vol.max() - vol.min())


def _moved_by(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``image`` resampled through ``theta``: registering ``image`` onto it recovers ``theta``."""
    return ops.affine_transform(image, theta.to(image.dtype), padding_mode="zeros", align_corners=True)


# --- recovery of known affines ----------------------------------------------------------------

def test_recovers_known_2d_affine(slice64):
    theta = _rotation2d(8.0, zoom=(1.08, 0.95), shift=(0.06, -0.05))
    static = _moved_by(slice64, theta)
    reg = AffineRegistration(scales=(2, 1), verbose=False)
    moved = reg(slice64, static)
    assert moved.shape == static.shape
    torch.testing.assert_close(reg.get_affine(), theta, atol=0.015, rtol=0)
    assert F.mse_loss(moved, static) < 0.1 * F.mse_loss(slice64, static)


def test_registers_inside_no_grad(slice64):
    theta = _rotation2d(8.0, shift=(0.06, -0.05))
    static = _moved_by(slice64, theta)
    with torch.no_grad():
        reg = AffineRegistration(scales=(2, 1), verbose=False)
        reg(slice64, static)
    torch.testing.assert_close(reg.get_affine(), theta, atol=0.015, rtol=0)


def test_recovers_known_3d_affine(volume):
    a, b = math.radians(6.0), math.radians(-4.0)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    linear = rx @ ry @ torch.diag(torch.tensor([1.05, 0.96, 1.0]))
    theta = torch.cat([linear, torch.tensor([[0.05], [-0.04], [0.03]])], dim=1)[None].float()
    static = _moved_by(volume, theta)
    reg = AffineRegistration(scales=(2, 1), iterations=(200, 50), verbose=False)
    moved = reg(volume, static)
    assert moved.shape == static.shape
    assert reg.get_affine().shape == (1, 3, 4)
    torch.testing.assert_close(reg.get_affine(), theta, atol=0.02, rtol=0)


def test_batch_of_pairs_recovered_independently(slice64):
    thetas = torch.cat([_rotation2d(6.0, shift=(0.05, 0.0)), _rotation2d(-5.0, zoom=(0.95, 1.05), shift=(-0.04, 0.06))])
    moving = slice64.expand(2, -1, -1, -1).contiguous()
    static = _moved_by(moving, thetas)
    settings = dict(scales=(2, 1), iterations=(100, 40), tolerance=0, verbose=False)
    reg = AffineRegistration(**settings)
    reg(moving, static)
    assert all(p.shape[0] == 2 for p in reg.parameters)
    torch.testing.assert_close(reg.get_affine(), thetas, atol=0.015, rtol=0)
    # Each item follows the trajectory it would follow alone (Adam steps element-wise and
    # the batch loss is the mean of per-item losses).
    for b in range(2):
        single = AffineRegistration(**settings)
        single(moving[b:b + 1], static[b:b + 1])
        torch.testing.assert_close(reg.get_affine()[b:b + 1], single.get_affine(), atol=2e-4, rtol=0)


def test_batch_early_stop_waits_for_every_item(slice64):
    # Item 0 starts at its solution with a large irreducible loss (noise), item 1 far from its
    # solution with a small loss: the batch's total hardly improves while item 1 still does.
    thetas = torch.cat([_rotation2d(0.0), _rotation2d(10.0, zoom=(1.1, 1.1), shift=(0.1, -0.08))])
    moving = slice64.expand(2, -1, -1, -1).contiguous()
    static = _moved_by(moving, thetas)
    static[0] += 0.7 * torch.randn_like(static[0])
    settings = dict(scales=(2,), iterations=(300,), init=None, verbose=False)
    per_item = AffineRegistration(**settings)
    per_item(moving, static)
    torch.testing.assert_close(per_item.get_affine()[1], thetas[1], atol=0.01, rtol=0)
    # a loss that gives only the batch total: convergence is judged on the total, which stops early
    total = AffineRegistration(dissimilarity_function=lambda a, b: ((a - b) ** 2).mean(), **settings)
    total(moving, static)
    assert len(total.loss_history[0]) < len(per_item.loss_history[0])


def test_moving_and_static_of_different_shapes(brain_slice):
    image = brain_slice.float()
    moving = F.interpolate(image, size=(96, 80), mode="area")  # same extent, other grid
    static = F.interpolate(image, size=(64, 64), mode="area")
    reg = AffineRegistration(scales=(2, 1), verbose=False)
    moved = reg(moving, static)
    assert moved.shape == static.shape
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(reg.get_affine(), identity, atol=0.02, rtol=0)


# --- parity with torchreg ---------------------------------------------------------------------

@pytest.mark.parametrize("with_shear", [False, True])
def test_matches_torchreg(brain_slice, with_shear):
    torchreg = pytest.importorskip("torchreg")
    moving = F.interpolate(brain_slice.float(), size=(48, 48), mode="area")
    static = _moved_by(moving, _rotation2d(7.0, zoom=(1.05, 0.97), shift=(0.08, -0.05)))
    settings = dict(scales=(1,), iterations=(60,), learning_rate=1e-2, verbose=False, with_shear=with_shear,
                    dissimilarity_function=torch.nn.MSELoss())
    _compare_with_torchreg(torchreg, moving, static, False, settings)


def test_matches_torchreg_3d(volume):
    torchreg = pytest.importorskip("torchreg")
    moving = F.interpolate(volume, size=(20, 24, 28), mode="area")
    theta = torch.tensor([[[1.04, 0.05, 0.0, 0.05], [-0.05, 0.98, 0.02, -0.03], [0.0, -0.02, 1.0, 0.02]]])
    static = _moved_by(moving, theta)
    settings = dict(scales=(1,), iterations=(40,), learning_rate=1e-2, verbose=False, with_shear=True)
    _compare_with_torchreg(torchreg, moving, static, True, settings)


def _compare_with_torchreg(torchreg, moving, static, is_3d, settings):
    theirs = torchreg.AffineRegistration(is_3d=is_3d, **settings)
    moved_theirs = theirs(moving, static)
    ours = AffineRegistration(init=None, tolerance=0, **settings)
    moved_ours = ours(moving, static)
    torch.testing.assert_close(ours.get_affine(), theirs.get_affine(), atol=1e-5, rtol=0)
    torch.testing.assert_close(moved_ours, moved_theirs, atol=1e-5, rtol=0)
    for mine, their in zip(ours.parameters, theirs._parameters):
        torch.testing.assert_close(mine.detach(), their.detach(), atol=1e-5, rtol=0)


# --- initialisation ---------------------------------------------------------------------------

def test_com_init_aligns_centres_of_mass(slice64):
    shift = (0.2, -0.15)
    static = _moved_by(slice64, _rotation2d(0.0, shift=shift))
    reg = AffineRegistration(scales=(1,), iterations=(0,), verbose=False)  # init only
    reg(slice64, static)
    translation, rotation, zoom, shear = (p.detach() for p in reg.parameters)
    assert torch.equal(zoom, torch.ones(1, 2)) and torch.equal(shear, torch.zeros(1, 2))
    torch.testing.assert_close(translation, torch.tensor([shift]), atol=0.02, rtol=0)
    torch.testing.assert_close(rotation, torch.eye(2)[None])
    assert reg.loss_history == [[]]
    none = AffineRegistration(scales=(1,), iterations=(0,), init=None, verbose=False)
    none(slice64, static)
    assert torch.equal(none.get_affine(), torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]))


def test_moments_init_finds_large_rotations(slice64):
    # a batch of two pairs whose best principal-axes candidates differ
    thetas = torch.cat([_rotation2d(70.0, shift=(0.05, 0.05)), _rotation2d(-120.0, shift=(-0.05, 0.0))])
    moving = slice64.expand(2, -1, -1, -1).contiguous()
    static = _moved_by(moving, thetas)
    init = AffineRegistration(scales=(2,), iterations=(0,), init="moments", verbose=False)
    init(moving, static)  # no iteration: candidates chosen by their starting loss
    torch.testing.assert_close(init.get_affine(), thetas, atol=0.12, rtol=0)
    reg = AffineRegistration(scales=(2, 1), init="moments", verbose=False)
    reg(moving, static)
    assert all(p.shape[0] == 2 for p in reg.parameters)
    torch.testing.assert_close(reg.get_affine(), thetas, atol=0.02, rtol=0)
    # the coarsest level's history is that of the kept candidates: it ends at their loss
    coarse = F.interpolate(static, size=(32, 32), mode="area")
    assert len(reg.loss_history[0]) > 0 and reg.loss_history[0][-1] < 0.2 * F.mse_loss(
        F.interpolate(moving, size=(32, 32), mode="area"), coarse).item()
    com = AffineRegistration(scales=(2, 1), verbose=False)  # the centre of mass alone misses them
    com(moving, static)
    assert (com.get_affine() - thetas).abs().amax() > 0.1


def test_explicit_init_overrides(slice64):
    static = _moved_by(slice64, _rotation2d(0.0, shift=(0.2, 0.0)))
    translation = torch.tensor([[0.01, 0.02]])
    rotation = _rotation2d(3.0)[..., :2]
    reg = AffineRegistration(scales=(1,), iterations=(0,), init_translation=translation,
                             init_rotation=rotation, init="moments", verbose=False)
    reg(slice64, static)
    assert torch.equal(reg.parameters[0].detach(), translation)
    assert torch.equal(reg.parameters[1].detach(), rotation)


# --- stopping, histories, output --------------------------------------------------------------

def test_early_stopping_before_the_limit(slice64):
    static = _moved_by(slice64, _rotation2d(0.0, shift=(0.03, 0.0)))
    reg = AffineRegistration(scales=(2,), iterations=(400,), verbose=False)
    reg(slice64, static)
    assert 2 * reg.check_every <= len(reg.loss_history[0]) < 400
    full = AffineRegistration(scales=(2,), iterations=(60,), tolerance=0, verbose=False)
    full(slice64, static)
    assert len(full.loss_history[0]) == 60


def test_loss_history_and_times(slice64):
    static = _moved_by(slice64, _rotation2d(3.0))
    reg = AffineRegistration(scales=(4, 2, 1), iterations=(7, 5, 0), tolerance=0, verbose=False)
    reg(slice64, static)
    assert [len(h) for h in reg.loss_history] == [7, 5, 0]
    assert all(isinstance(v, float) for h in reg.loss_history for v in h)
    assert len(reg.level_times) == 3 and all(t >= 0 for t in reg.level_times)
    assert reg(slice64, static, return_moved=False) is None
    assert [len(h) for h in reg.loss_history] == [7, 5, 0]  # a new call starts new histories


def test_verbose_false_prints_nothing(slice64, capfd):
    static = _moved_by(slice64, _rotation2d(2.0))
    AffineRegistration(scales=(2,), iterations=(20,), verbose=False)(slice64, static)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    AffineRegistration(scales=(2,), iterations=(20,), verbose=True)(slice64, static)
    out, err = capfd.readouterr()
    assert "affine" in out + err


def test_transform_label_map_nearest(slice64):
    static = _moved_by(slice64, _rotation2d(5.0, shift=(0.05, 0.0)))
    reg = AffineRegistration(scales=(2,), iterations=(30,), verbose=False)
    reg(slice64, static)
    labels = (slice64 > 0.2).long() + (slice64 > 0.5).long() * 6  # values {0, 1, 7}
    moved = reg.transform(labels)
    assert moved.dtype == torch.long and moved.shape == labels.shape
    assert set(moved.unique().tolist()) <= {0, 1, 7}
    as_float = reg.transform(labels.float(), mode="nearest")
    assert set(as_float.unique().tolist()) <= {0.0, 1.0, 7.0}
    torch.testing.assert_close(as_float, moved.float())
    bigger = reg.transform(slice64, shape=(80, 70))
    assert bigger.shape == (1, 1, 80, 70)
    theta = reg.get_affine(with_grad=True)
    assert theta.requires_grad and not reg.get_affine().requires_grad
    assert reg.transform(slice64, with_grad=True).requires_grad
    with pytest.raises(ValueError, match="nearest"):
        reg.transform(labels, mode="bilinear")


def test_other_losses_and_callables(slice64):
    static = _moved_by(slice64, _rotation2d(4.0, shift=(0.04, 0.0)))
    pair = (slice64.expand(2, -1, -1, -1), static.expand(2, -1, -1, -1))
    for loss in (LocalNCCLoss(kernel_size=5), GlobalMILoss(num_bins=16), MSELoss(reduction="sum"),
                 lambda a, b: ((a - b) ** 2).mean(), lambda a, b: ((a - b) ** 2).flatten(1).mean(1)):
        reg = AffineRegistration(scales=(2,), iterations=(20,), dissimilarity_function=loss, verbose=False)
        reg(*pair)
        assert len(reg.loss_history[0]) >= 1 and all(math.isfinite(v) for v in reg.loss_history[0])
    with pytest.raises(ValueError, match="dissimilarity_function must return"):
        AffineRegistration(scales=(2,), iterations=(2,), verbose=False,
                           dissimilarity_function=lambda a, b: (a - b) ** 2)(*pair)


def test_reset_and_float64(slice64):
    static = _moved_by(slice64, _rotation2d(2.0))
    reg = AffineRegistration(scales=(2,), iterations=(10,), verbose=False)
    reg(slice64.double(), static.double())
    assert reg.get_affine().dtype == torch.float64
    reg.reset()
    assert reg.parameters is None and reg.loss_history == [] and reg.level_times == []
    with pytest.raises(RuntimeError, match="call reg"):
        reg.get_affine()
    with pytest.raises(RuntimeError, match="call reg"):
        reg.transform(slice64)


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(scales=()), ValueError, "scales"),
        (dict(scales=(4, 0.5)), ValueError, "scales"),
        (dict(iterations=(10,)), ValueError, "iterations must have one entry per scale"),
        (dict(iterations=(10, -1)), ValueError, "iterations"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(learning_rate=(1e-2,)), ValueError, "learning_rate"),
        (dict(is_3d="yes"), TypeError, "is_3d"),
        (dict(verbose=1), TypeError, "verbose"),
        (dict(dissimilarity_function="mse"), TypeError, "dissimilarity_function"),
        (dict(optimizer=None), TypeError, "optimizer"),
        (dict(init_zoom=[1.0, 1.0]), TypeError, "init_zoom"),
        (dict(with_shear=None), TypeError, "with_shear"),
        (dict(interp_mode="bicubic"), ValueError, "interp_mode"),
        (dict(padding_mode="wrap"), ValueError, "padding_mode"),
        (dict(init="ants"), ValueError, "init"),
        (dict(tolerance=-0.1), ValueError, "tolerance"),
        (dict(tolerance=float("nan")), ValueError, "tolerance"),
        (dict(check_every=0), ValueError, "check_every"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AffineRegistration(**kwargs)


def test_bad_inputs():
    image = torch.rand(1, 1, 16, 16)
    reg = AffineRegistration(scales=(1,), iterations=(1,), verbose=False)
    with pytest.raises(TypeError, match="moving must be a torch.Tensor"):
        reg(image.numpy(), image)
    with pytest.raises(ValueError, match="static must be"):
        reg(image, torch.rand(16, 16))
    with pytest.raises(ValueError, match="batch size"):
        reg(image, torch.rand(2, 1, 16, 16))
    with pytest.raises(TypeError, match="floating dtype"):
        reg(image, (image * 10).long())
    with pytest.raises(ValueError, match="NaN"):
        reg(image, torch.full_like(image, float("nan")))
    with pytest.raises(ValueError, match="is_3d=True"):
        AffineRegistration(is_3d=True, verbose=False)(image, image)
    with pytest.raises(ValueError, match="trilinear"):
        AffineRegistration(interp_mode="trilinear", verbose=False)(image, image)
    with pytest.raises(ValueError, match=r"init_translation must have shape \(1, 2\)"):
        AffineRegistration(init_translation=torch.zeros(1, 3), verbose=False)(image, image)
    with pytest.raises(ValueError, match=r"init_rotation must have shape \(1, 2, 2\)"):
        AffineRegistration(init_rotation=torch.eye(2), verbose=False)(image, image)
    with pytest.raises(ValueError, match="init_zoom contains NaN"):
        AffineRegistration(init_zoom=torch.tensor([[1.0, float("nan")]]), verbose=False)(image, image)
    reg(image, image)
    with pytest.raises(ValueError, match=r"B = 1 and 2 spatial"):
        reg.transform(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"B = 1 and 2 spatial"):
        reg.transform(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        reg.transform(image, mode="bicubic")
