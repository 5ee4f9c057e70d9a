"""SyNRegistration: recovers known diffeomorphisms on real slices, symmetric fields,
batches of pairs, the output conventions, progress silence and bad input."""

import pytest
import torch
import torch.nn.functional as F

from regnet import ops
from regnet.registration.syn import SyNRegistration


def _smooth_svf(shape, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, len(shape), *([4] * len(shape)), generator=generator) * scale
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(coarse, size=shape, mode=mode, align_corners=True)


def _ncc(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture
def small_slice(brain_slice):
    return F.interpolate(brain_slice.float(), size=(64, 64), mode="bilinear", align_corners=True)


def _fast(**kwargs):
    return SyNRegistration(scales=(2, 1), iterations=(30, 20), verbose=False, **kwargs)


def test_recovers_a_known_deformation_of_a_real_slice(small_slice):
    v = _smooth_svf((64, 64), 2.0, seed=3)
    moving = ops.warp(small_slice, ops.exp(v, padding_mode="border"))
    moved, moved_static, ddf, inverse = _fast()(moving, small_slice)
    assert _ncc(moved, small_slice) > _ncc(moving, small_slice) + 0.05
    truth = ops.exp(-v, padding_mode="border")  # moving(x + truth(x)) = static(x)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert (ddf - truth)[inner].norm(dim=1).mean() < 0.5 * truth[inner].norm(dim=1).mean()
    assert (ops.jacobian_det(ddf) > 0).all()
    assert moved_static.shape == moving.shape and inverse.shape == ddf.shape


def test_forward_and_inverse_fields_are_inverse_maps(small_slice):
    v = _smooth_svf((64, 64), 2.0, seed=4)
    moving = ops.warp(small_slice, ops.exp(v, padding_mode="border"))
    reg = _fast()
    _, _, ddf, inverse = reg(moving, small_slice)
    residual = ops.compose(ddf, inverse)[:, :, 6:-6, 6:-6]
    assert residual.abs().max() < 0.2 * ddf.abs().max()


def test_outputs_follow_the_ddf_convention(small_slice):
    """The returned image is the moving image warped by the returned DDF (pull, voxels)."""
    moving = torch.roll(small_slice, shifts=(2, -1), dims=(2, 3))
    reg = _fast()
    moved, moved_static, ddf, inverse = reg(moving, small_slice)
    torch.testing.assert_close(moved, ops.warp(moving, ddf))
    torch.testing.assert_close(moved_static, ops.warp(small_slice, inverse))
    torch.testing.assert_close(reg.transform(moving), moved)
    torch.testing.assert_close(reg.transform(small_slice, direction="inverse"), moved_static)


def test_batch_of_pairs_is_registered_independently(small_slice):
    moving = torch.cat([ops.warp(small_slice, ops.exp(_smooth_svf((64, 64), 2.0, seed=s))) for s in (5, 6)])
    static = small_slice.expand(2, -1, -1, -1).contiguous()
    batched = _fast(tolerance=0)(moving, static)[2]
    alone = torch.cat([_fast(tolerance=0)(moving[i:i + 1], static[i:i + 1])[2] for i in range(2)])
    # Adam is per element and the loss is a sum of per-pair terms: the pairs do not interact
    # beyond the mean's 1/B factor, which Adam's normalisation removes. (Early stopping looks
    # at the summed loss, so it is off here.)
    torch.testing.assert_close(batched, alone, rtol=1e-3, atol=2e-2)


def test_3d_runs_and_improves():
    static = F.avg_pool3d(torch.rand(1, 1, 24, 28, 20), 3, stride=1, padding=1)
    moving = ops.warp(static, ops.exp(_smooth_svf((24, 28, 20), 1.5, seed=7)))
    reg = SyNRegistration(scales=(2, 1), iterations=(10, 5), verbose=False)
    moved, _, ddf, _ = reg(moving, static)
    assert ddf.shape == (1, 3, 24, 28, 20)
    assert _ncc(moved, static) > _ncc(moving, static)
    assert [len(h) for h in reg.loss_history] == [10, 5] and len(reg.level_times) == 2


def test_velocity_scale_per_level():
    """One factor per level: each level's velocity grid is its images' grid divided by its factor
    (level_shape: ceil), the velocity carried over between grids; (f, f) equals the scalar f."""
    static = F.avg_pool3d(torch.rand(1, 1, 24, 28, 20), 3, stride=1, padding=1)
    moving = ops.warp(static, ops.exp(_smooth_svf((24, 28, 20), 1.5, seed=7)))
    reg = SyNRegistration(scales=(2, 1), iterations=(6, 3), velocity_scale=(1.0, 2.0), verbose=False)
    moved, _, ddf, _ = reg(moving, static)
    assert reg.velocity_scale == (1.0, 2.0) and reg.v_xy.shape == (1, 3, 12, 14, 10)  # 24 x 28 x 20 / 2
    assert ddf.shape == (1, 3, 24, 28, 20) and _ncc(moved, static) > _ncc(moving, static)
    same = [SyNRegistration(scales=(2, 1), iterations=(4, 2), velocity_scale=v, verbose=False)(moving, static)[2]
            for v in (1.5, (1.5, 1.5))]
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="velocity_scale must have one entry per scale"):
        SyNRegistration(scales=(2, 1), velocity_scale=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="velocity_scale must be numbers >= 1"):
        SyNRegistration(scales=(2, 1), velocity_scale=(1.0, 0.5))


def test_quiet_when_not_verbose(small_slice, capsys):
    _fast()(small_slice, small_slice)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_early_stopping_and_reset(small_slice):
    reg = SyNRegistration(scales=(1,), iterations=(200,), tolerance=0.5, check_every=5, verbose=False)
    reg(small_slice, small_slice)
    assert len(reg.loss_history[0]) < 200
    reg.reset()
    assert reg.v_xy is None and reg.loss_history == []
    with pytest.raises(RuntimeError, match="call the registration"):
        reg.fields()


@pytest.mark.parametrize(
    "moving,static,error,match",
    [
        (torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9), ValueError, "one grid"),
        (torch.zeros(1, 1, 8, 8), torch.zeros(2, 1, 8, 8), ValueError, "batch size"),
        (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), ValueError, r"\(B, C, H, W\)"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int64), torch.zeros(1, 1, 8, 8), TypeError, "floating"),
        (torch.full((1, 1, 8, 8), float("nan")), torch.zeros(1, 1, 8, 8), ValueError, "NaN"),
    ],
)
def test_bad_input(moving, static, error, match):
    with pytest.raises(error, match=match):
        _fast()(moving, static)


def test_bad_options():
    with pytest.raises(ValueError, match="iterations"):
        SyNRegistration(scales=(2, 1), iterations=(10,))
    with pytest.raises(ValueError, match="scales"):
        SyNRegistration(scales=(0,))
    reg = _fast()
    reg(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="direction"):
        reg.transform(torch.rand(1, 1, 8, 8), direction="backward")
    with pytest.raises(ValueError, match="image must have shape"):
        reg.transform(torch.rand(1, 1, 9, 8))


def test_registers_inside_no_grad(small_slice):
    moving = torch.roll(small_slice, shifts=(2, -1), dims=(2, 3))
    with torch.no_grad():
        moved = _fast()(moving, small_slice)[0]
    assert _ncc(moved, small_slice) > _ncc(moving, small_slice)


def test_thread_count_is_restored(small_slice):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _fast()(small_slice, small_slice)  # a small registration runs on one thread ...
        assert torch.get_num_threads() == 2  # ... and gives the caller's count back
    finally:
        torch.set_num_threads(threads)


def test_affine_initialisation(small_slice):
    """A rotated and shifted, then deformed copy: with ``affine=True`` the fields include the
    affine part and the outputs keep the DDF convention."""
    import math

    a = math.radians(12.0)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.08], [math.sin(a), math.cos(a), -0.05]]])
    moving = ops.affine_transform(small_slice, theta, padding_mode="border", align_corners=True)
    moving = ops.warp(moving, ops.exp(_smooth_svf((64, 64), 1.5, seed=9), padding_mode="border"))
    with_affine = _fast(affine=True)
    moved, moved_static, ddf, inverse = with_affine(moving, small_slice)
    assert with_affine.theta is not None and with_affine.theta.shape == (1, 2, 3)
    torch.testing.assert_close(moved, ops.warp(moving, ddf))
    torch.testing.assert_close(moved_static, ops.warp(small_slice, inverse))
    # the affine stage undid (most of) the 12-degree rotation: theta turns the other way
    assert with_affine.theta[0, 0, 1] > 0.1 and with_affine.theta[0, 1, 0] < -0.05
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert _ncc(moved[inner], small_slice[inner]) > 0.98 > _ncc(moving[inner], small_slice[inner]) + 0.1
    # the inverse brings the static image back onto the moving one where both see the brain
    assert _ncc(moved_static[inner], moving[inner]) > 0.9
    with pytest.raises(TypeError, match="affine"):
        SyNRegistration(affine="yes")
