"""regnet.io.world against independent oracles: scipy.ndimage.affine_transform (pull,
``output[o] = input[matrix @ o + offset]`` in array index order) and MONAI's
SpatialResample on MetaTensors with nibabel affines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import data_file
from regnet import ops
from regnet.io import (
    Image,
    ddf_to_world,
    load_image,
    resample_to,
    theta_to_world,
    voxel_to_normalised,
    world_ddf_to_voxel,
    world_theta,
    world_to_theta,
)

ndimage = pytest.importorskip("scipy.ndimage")


def _rotation(ndim, angles):
    if ndim == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    for axes, a in zip(((0, 1), (1, 2), (0, 2)), angles):
        m = np.eye(3)
        c, s = np.cos(a), np.sin(a)
        m[np.ix_(axes, axes)] = [[c, -s], [s, c]]
        r = r @ m
    return r


def _grid(shape, spacing, centre, rotation=None, flips=(), perm=None):
    """Affine of a grid of ``shape`` whose centre lies at world ``centre``: array axis ``a``
    runs along world axis ``perm[a]`` (flipped for axes in ``flips``), scaled by
    ``spacing[a]``, then rotated."""
    ndim = len(shape)
    perm = list(range(ndim)) if perm is None else list(perm)
    linear = np.zeros((ndim, ndim))
    for axis in range(ndim):
        linear[perm[axis], axis] = spacing[axis] * (-1.0 if axis in flips else 1.0)
    if rotation is not None:
        linear = rotation @ linear
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = linear
    affine[:ndim, ndim] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def _scipy_pull(moving, voxel_map, out_shape, order=1):
    """``out[o] = moving[V @ o]`` with zero padding interpolated as ``grid_sample`` does."""
    n = moving.ndim
    return ndimage.affine_transform(
        moving, voxel_map[:n, :n], voxel_map[:n, n], output_shape=tuple(out_shape), order=order,
        mode="grid-constant", cval=0.0,
    )


CASES_3D = {
    # different shapes and anisotropic spacings, non-zero origins, RAS on both sides
    "anisotropic": (
        ((9, 11, 7), (1.5, 2.0, 0.7), (10.0, -20.0, 5.0), None, (), None),
        ((12, 8, 10), (1.0, 2.5, 1.2), (11.0, -19.0, 4.0), None, (), None),
    ),
    # LAS moving vs RAS fixed (x flipped), different sizes
    "las_vs_ras": (
        ((10, 9, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, (), None),
        ((11, 9, 7), (0.9, 1.1, 1.3), (0.5, -0.5, 0.2), None, (0,), None),
    ),
    # permuted axes (moving stored as (Z, X, Y)), flips, obliquely rotated fixed grid
    "permuted_oblique": (
        ((8, 10, 9), (1.2, 0.8, 1.0), (-30.0, 12.0, 40.0), _rotation(3, (0.3, -0.2, 0.1)), (), None),
        ((9, 11, 12), (1.0, 0.9, 1.1), (-29.0, 13.0, 39.5), _rotation(3, (-0.1, 0.05, 0.2)), (1, 2), (2, 0, 1)),
    ),
}

CASES_2D = {
    "anisotropic": (((13, 9), (1.0, 2.0), (3.0, -4.0), None, (), None),
                    ((10, 15), (1.6, 1.1), (2.0, -3.5), None, (), None)),
    "flipped_permuted_oblique": (((12, 10), (0.8, 1.3), (5.0, 5.0), _rotation(2, (0.4,)), (0,), None),
                                 ((14, 11), (1.1, 0.9), (5.5, 4.0), None, (1,), (1, 0))),
}


def _case(spec, seed):
    (fshape, fsp, fc, frot, fflip, fperm), (mshape, msp, mc, mrot, mflip, mperm) = spec
    fixed_affine = _grid(fshape, fsp, fc, frot, fflip, fperm)
    moving_affine = _grid(mshape, msp, mc, mrot, mflip, mperm)
    moving = np.random.default_rng(seed).random(mshape)
    return fshape, fixed_affine, mshape, moving_affine, moving


# --- voxel <-> normalised ---------------------------------------------------------------------

@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3)])
def test_voxel_to_normalised_matches_affine_grid(shape, align_corners):
    ndim = len(shape)
    theta = torch.eye(ndim, ndim + 1, dtype=torch.float64)[None]
    grid = F.affine_grid(theta, (1, 1, *shape), align_corners=align_corners)[0]  # (*shape, ndim) in (x, y[, z])
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    homogeneous = np.concatenate([index, np.ones((*shape, 1))], -1)
    mapped = homogeneous @ voxel_to_normalised(shape, align_corners).T
    np.testing.assert_allclose(mapped[..., :ndim], grid.numpy(), atol=1e-12)


def test_voxel_to_normalised_size_one_axis_is_invertible():
    for align_corners in (True, False):
        n = voxel_to_normalised((1, 5), align_corners)
        assert np.isfinite(np.linalg.inv(n)).all()
        first = -1.0 if align_corners else 0.2 - 1.0  # index 0 of the size-5 axis (normalised x)
        np.testing.assert_allclose(n @ [0, 0, 1], [first, 0, 1])  # index 0 of the size-1 axis -> y = 0
    with pytest.raises(ValueError, match="positive ints"):
        voxel_to_normalised((0, 3))


# --- resampling through world coordinates against scipy and MONAI -----------------------------

@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("name", [*[f"3d-{k}" for k in CASES_3D], *[f"2d-{k}" for k in CASES_2D]])
def test_resample_to_matches_scipy(name, align_corners):
    dim, key = name.split("-", 1)
    spec = (CASES_3D if dim == "3d" else CASES_2D)[key]
    fshape, fixed_affine, mshape, moving_affine, moving = _case(spec, seed=len(name))
    image = Image(torch.from_numpy(moving)[None, None], moving_affine)
    out = resample_to(image, fshape, fixed_affine, align_corners=align_corners)
    assert out.shape == (1, 1, *fshape) and out.dtype == torch.float64

    expected = _scipy_pull(moving, np.linalg.inv(moving_affine) @ fixed_affine, fshape)
    assert (expected != 0).mean() > 0.3  # the grids overlap substantially
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-10)


def test_resample_to_float32_channels_and_batch():
    fshape, fixed_affine, mshape, moving_affine, moving = _case(CASES_3D["permuted_oblique"], seed=1)
    data = torch.from_numpy(np.stack([moving, 2 * moving + 1])).float()[None]  # (1, 2, *mshape)
    out = resample_to(Image(data, moving_affine), fshape, fixed_affine)
    assert out.shape == (1, 2, *fshape) and out.dtype == torch.float32
    voxel_map = np.linalg.inv(moving_affine) @ fixed_affine
    for c in range(2):
        expected = _scipy_pull(data[0, c].double().numpy(), voxel_map, fshape)
        np.testing.assert_allclose(out[0, c].numpy(), expected, atol=1e-4)
    fixed = Image(torch.zeros(1, 1, *fshape), fixed_affine)
    torch.testing.assert_close(resample_to(Image(data, moving_affine), fixed), out)  # a fixed Image works too


def test_resample_flipped_copy_is_exact():
    """The same voxels stored LAS instead of RAS: world resampling undoes the flip exactly."""
    rng = np.random.default_rng(2)
    data = rng.random((6, 7, 5))
    ras = _grid((6, 7, 5), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    las = ras @ np.array([[-1, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])  # i -> 5 - i
    flipped = Image(torch.from_numpy(data[::-1].copy())[None, None], las)
    for mode in ("bilinear", "nearest"):
        out = resample_to(flipped, (6, 7, 5), ras, mode=mode)
        np.testing.assert_allclose(out[0, 0].numpy(), data, atol=1e-12)


def test_nearest_matches_scipy_order_0():
    fshape, fixed_affine, mshape, moving_affine, _ = _case(CASES_3D["permuted_oblique"], seed=3)
    labels = np.random.default_rng(3).integers(0, 5, size=mshape).astype(np.float64)
    out = resample_to(Image(torch.from_numpy(labels)[None, None], moving_affine), fshape, fixed_affine, mode="nearest")
    voxel_map = np.linalg.inv(moving_affine) @ fixed_affine
    expected = ndimage.affine_transform(labels, voxel_map[:3, :3], voxel_map[:3, 3], output_shape=fshape,
                                        order=0, mode="constant", cval=0.0)
    inside = expected > 0
    assert inside.mean() > 0.3
    # rounding of exact ties may differ; the oblique grids make them (almost) impossible
    assert (out[0, 0].numpy()[inside] == expected[inside]).mean() > 0.999
    assert set(np.unique(out.numpy())) <= set(range(5))


def test_resample_to_matches_monai_spatial_resample():
    monai_data = pytest.importorskip("monai.data")
    from monai.transforms import SpatialResample

    fshape, fixed_affine, mshape, moving_affine, moving = _case(CASES_3D["permuted_oblique"], seed=4)
    out = resample_to(Image(torch.from_numpy(moving)[None, None], moving_affine), fshape, fixed_affine)
    meta = monai_data.MetaTensor(torch.from_numpy(moving)[None], affine=torch.from_numpy(moving_affine))
    expected = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)(
        meta, dst_affine=torch.from_numpy(fixed_affine), spatial_size=fshape
    )
    np.testing.assert_allclose(out[0].numpy(), expected.numpy(), atol=1e-9)


# --- the real cross-grid case: brain3d subject (identity affine) vs MNI152 ---------------------

@pytest.fixture(scope="module")
def real_pair():
    subject = load_image(data_file("brain3d/subject_a_t1.nii.gz"), dtype=torch.float64)
    mni = load_image(data_file("mni152/t1.nii.gz"), dtype=torch.float64)
    assert subject.spatial_shape == (160, 192, 224) and mni.spatial_shape == (197, 233, 189)
    np.testing.assert_allclose(subject.affine, np.eye(4))
    assert not np.allclose(mni.affine, np.eye(4))
    return subject, mni


def _coarse(image, factor):
    """A grid over the same field of view with ``factor`` times larger voxels."""
    shape = tuple(-(-s // factor) for s in image.spatial_shape)
    return shape, image.affine @ np.diag([factor, factor, factor, 1.0])


@pytest.mark.parametrize("direction", ["mni_onto_subject", "subject_onto_mni"])
def test_real_cross_grid_resampling_matches_scipy_and_monai(real_pair, direction):
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    subject, mni = real_pair
    moving, fixed = (mni, subject) if direction == "mni_onto_subject" else (subject, mni)
    shape, affine = _coarse(fixed, 3)
    out = resample_to(moving, shape, affine)
    voxel_map = np.linalg.inv(moving.affine) @ affine
    expected = _scipy_pull(moving.data[0, 0].numpy(), voxel_map, shape)
    assert (expected > 0).sum() > 2000  # the headers put the two brains partly over each other
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-9)

    meta = MetaTensor(moving.data[0], affine=torch.from_numpy(moving.affine))
    monai_out = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)(
        meta, dst_affine=torch.from_numpy(affine), spatial_size=shape
    )
    np.testing.assert_allclose(out[0].numpy(), monai_out.numpy(), atol=1e-9)


def test_real_centred_subject_onto_mni_grid(real_pair):
    """The subject given a centred header: the brains overlap almost entirely."""
    subject, mni = real_pair
    centred = subject.affine.copy()
    centred[:3, 3] = -(np.array(subject.spatial_shape) - 1) / 2.0
    moving = Image(subject.data, centred)
    shape, affine = _coarse(mni, 4)
    out = resample_to(moving, shape, affine)
    expected = _scipy_pull(subject.data[0, 0].numpy(), np.linalg.inv(centred) @ affine, shape)
    assert (expected > 0).mean() > 0.2  # the skull-stripped brain fills about a quarter of the box
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-9)


def test_real_labels_nearest_onto_mni_grid(real_pair):
    subject, mni = real_pair
    aseg = load_image(data_file("brain3d/subject_a_aseg.nii.gz"), dtype=torch.float32)
    centred = aseg.affine.copy()
    centred[:3, 3] = -(np.array(aseg.spatial_shape) - 1) / 2.0
    shape, affine = _coarse(mni, 4)
    out = resample_to(Image(aseg.data, centred), shape, affine, mode="nearest")
    assert set(np.unique(out.numpy())) <= set(np.unique(aseg.data.numpy()))
    assert len(np.unique(out.numpy())) > 20


# --- theta <-> world matrix -------------------------------------------------------------------

def _random_world_matrix(rng, ndim):
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = _rotation(ndim, rng.normal(scale=0.2, size=3)) @ np.diag(rng.uniform(0.9, 1.1, ndim))
    m[:ndim, ndim] = rng.normal(scale=1.5, size=ndim)
    return m


@pytest.mark.parametrize("name", ["3d-permuted_oblique", "3d-las_vs_ras", "2d-flipped_permuted_oblique"])
def test_theta_world_round_trip_and_meaning(name):
    dim, key = name.split("-", 1)
    spec = (CASES_3D if dim == "3d" else CASES_2D)[key]
    fshape, fixed_affine, mshape, moving_affine, moving = _case(spec, seed=5)
    ndim = len(fshape)
    rng = np.random.default_rng(6)
    matrix = _random_world_matrix(rng, ndim)

    for align_corners in (True, False):
        theta = world_to_theta(matrix, fshape, fixed_affine, mshape, moving_affine, align_corners)
        assert theta.shape == (1, ndim, ndim + 1) and theta.dtype == torch.float64
        back = theta_to_world(theta, fshape, fixed_affine, mshape, moving_affine, align_corners)
        assert back.shape == (ndim + 1, ndim + 1)
        np.testing.assert_allclose(back, matrix, atol=1e-10)
        np.testing.assert_allclose(theta_to_world(theta[0].numpy(), fshape, fixed_affine, mshape, moving_affine,
                                                  align_corners), matrix, atol=1e-10)
        # meaning: warped(fixed voxel o) = moving(A_m^-1 M A_f o), checked with scipy
        out = ops.affine_transform(torch.from_numpy(moving)[None, None], theta, shape=fshape,
                                   align_corners=align_corners)
        expected = _scipy_pull(moving, np.linalg.inv(moving_affine) @ matrix @ fixed_affine, fshape)
        np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-10)

    # world_theta is the identity world map
    identity = world_theta(fshape, fixed_affine, mshape, moving_affine)
    torch.testing.assert_close(identity, world_to_theta(np.eye(ndim + 1), fshape, fixed_affine, mshape, moving_affine))
    np.testing.assert_allclose(theta_to_world(identity, fshape, fixed_affine, mshape, moving_affine),
                               np.eye(ndim + 1), atol=1e-12)


def test_theta_to_world_of_random_theta_and_batches():
    fshape, fixed_affine, mshape, moving_affine, _ = _case(CASES_3D["anisotropic"], seed=7)
    rng = np.random.default_rng(7)
    thetas = torch.from_numpy(np.eye(3, 4)[None] + rng.normal(scale=0.05, size=(3, 3, 4)))
    worlds = theta_to_world(thetas, fshape, fixed_affine, mshape, moving_affine)
    assert worlds.shape == (3, 4, 4)
    np.testing.assert_allclose(worlds[:, 3], np.broadcast_to([0, 0, 0, 1.0], (3, 4)))
    again = world_to_theta(worlds, fshape, fixed_affine, mshape, moving_affine)
    torch.testing.assert_close(again, thetas, atol=1e-12, rtol=0)
    single = theta_to_world(thetas[1:2], fshape, fixed_affine, mshape, moving_affine)
    np.testing.assert_allclose(single, worlds[1], atol=1e-12)


def test_world_theta_same_grid_is_identity():
    affine = _grid((5, 6, 7), (1.0, 2.0, 0.5), (1.0, 2.0, 3.0), _rotation(3, (0.2, 0.1, 0.3)))
    for align_corners in (True, False):
        theta = world_theta((5, 6, 7), affine, (5, 6, 7), affine, align_corners)
        torch.testing.assert_close(theta, torch.eye(3, 4, dtype=torch.float64)[None], atol=1e-12, rtol=0)


# --- displacement fields in world units -------------------------------------------------------

def test_ddf_to_world_constant_shift():
    affine = _grid((4, 5, 6), (2.0, 3.0, 0.5), (0, 0, 0), flips=(0,), perm=(1, 0, 2))
    ddf = torch.zeros(1, 3, 4, 5, 6, dtype=torch.float64)
    ddf[:, 0] = 1.0  # one voxel along array axis 0: 2 mm towards -A (axis 0 runs along world y, flipped)
    ddf[:, 2] = -2.0  # two voxels along array axis 2: -1 mm along S
    world = ddf_to_world(ddf, affine)
    assert isinstance(world, torch.Tensor) and world.shape == ddf.shape
    np.testing.assert_allclose(world[0, :, 0, 0, 0].numpy(), [0.0, -2.0, -1.0], atol=1e-12)
    torch.testing.assert_close(world_ddf_to_voxel(world, affine), ddf)
    as_numpy = ddf_to_world(ddf.numpy(), affine)
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, world.numpy())


def test_ddf_of_an_affine_map_is_its_world_displacement():
    """u(x) = V x - x with V = A^-1 M A: ddf_to_world gives M p - p at p = A x, and warping with
    u equals affine_transform with world_to_theta(M) (one convention for both)."""
    shape = (7, 6, 5)
    affine = _grid(shape, (1.2, 0.8, 1.5), (3.0, -2.0, 1.0), _rotation(3, (0.1, 0.2, -0.1)), flips=(2,))
    matrix = _random_world_matrix(np.random.default_rng(8), 3)
    voxel_map = np.linalg.inv(affine) @ matrix @ affine
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))  # (3, *shape)
    mapped = np.einsum("ij,j...->i...", voxel_map[:3, :3], index) + voxel_map[:3, 3].reshape(3, 1, 1, 1)
    ddf = torch.from_numpy(mapped - index)[None]

    world = ddf_to_world(ddf, affine)[0].numpy()
    points = np.einsum("ij,j...->i...", affine[:3, :3], index) + affine[:3, 3].reshape(3, 1, 1, 1)
    expected = np.einsum("ij,j...->i...", matrix[:3, :3], points) + matrix[:3, 3].reshape(3, 1, 1, 1) - points
    np.testing.assert_allclose(world, expected, atol=1e-10)

    image = torch.rand(1, 1, *shape, dtype=torch.float64)
    warped = ops.warp(image, ddf, padding_mode="zeros")
    theta = world_to_theta(matrix, shape, affine, shape, affine, align_corners=True)
    by_theta = ops.affine_transform(image, theta, shape=shape, align_corners=True)
    torch.testing.assert_close(warped, by_theta, atol=1e-10, rtol=0)


def test_ddf_to_world_is_differentiable_and_2d():
    affine = np.array([[0.0, 2.0, 1.0], [-1.0, 0.0, 3.0], [0, 0, 1]])
    ddf = torch.randn(2, 2, 4, 5, requires_grad=True)
    world = ddf_to_world(ddf, affine)
    np.testing.assert_allclose(world[:, 0].detach().numpy(), 2 * ddf[:, 1].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(world[:, 1].detach().numpy(), -ddf[:, 0].detach().numpy(), rtol=1e-6)
    world.sum().backward()
    np.testing.assert_allclose(ddf.grad[:, 0].numpy(), -1.0)
    np.testing.assert_allclose(ddf.grad[:, 1].numpy(), 2.0)


# --- bad input --------------------------------------------------------------------------------

def test_world_errors():
    eye = np.eye(4)
    with pytest.raises(ValueError, match="fixed_shape must have 3 spatial sizes"):
        world_theta((4, 4), eye, (4, 4, 4), eye)
    with pytest.raises(ValueError, match="fixed grid is 3D.*moving grid is 2D"):
        world_theta((4, 4, 4), eye, (4, 4), np.eye(3))
    with pytest.raises(ValueError, match="moving_affine is singular"):
        world_theta((4, 4, 4), eye, (4, 4, 4), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="fixed_affine must be 3x3"):
        world_theta((4, 4, 4), np.eye(5), (4, 4, 4), eye)
    with pytest.raises(ValueError, match="NaN"):
        world_theta((4, 4, 4), np.full((4, 4), np.nan), (4, 4, 4), eye)
    with pytest.raises(ValueError, match=r"theta must be \(3, 4\)"):
        theta_to_world(torch.zeros(1, 2, 3), (4, 4, 4), eye, (4, 4, 4), eye)
    with pytest.raises(ValueError, match="matrix must be 4x4"):
        world_to_theta(np.eye(3), (4, 4, 4), eye, (4, 4, 4), eye)
    with pytest.raises(TypeError, match="floating"):
        resample_to(Image(torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8), eye), (4, 4, 4), eye)
    with pytest.raises(TypeError, match="regnet.io.Image"):
        resample_to(torch.zeros(1, 1, 4, 4, 4), (4, 4, 4), eye)
    with pytest.raises(ValueError, match="mode"):
        resample_to(Image(torch.zeros(1, 1, 4, 4, 4), eye), (4, 4, 4), eye, mode="bicubic")
    with pytest.raises(ValueError, match=r"ddf must have shape \(B, 3, \*spatial\)"):
        ddf_to_world(torch.zeros(1, 2, 4, 4, 4), eye)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int16, torch.uint8])
@pytest.mark.parametrize("size", [1, 2, 7, 200, 1001, 40_000])
def test_intensity_range_equals_numpy_percentile(dtype, size):
    from regnet.registration.world import PERCENTILES, intensity_range

    generator = torch.Generator().manual_seed(size)
    data = (torch.randn(1, 1, size, generator=generator, dtype=torch.float64) * 50 + 100).clamp(0, 255)
    data = data.round().to(dtype) if not dtype.is_floating_point else data.to(dtype)
    expected = np.percentile(data.numpy().astype(np.float64).ravel(), PERCENTILES)
    low, high = intensity_range(data)
    if not expected[1] > expected[0]:  # a constant-ish image: min and max
        expected = [float(data.min()), float(data.max())]
    assert (low, high) == (float(expected[0]), float(expected[1]))  # the same numbers, bit for bit


def test_intensity_range_rejects_non_finite():
    from regnet.registration.world import intensity_range

    with pytest.raises(ValueError, match="NaN or infinite"):
        intensity_range(torch.tensor([[[1.0, float("nan"), 2.0]]]))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_sample_moving_in_slabs_is_identical(monkeypatch, mode):
    """sample_moving runs in slabs along the first axis: the same samples as all at once."""
    from regnet.registration import world

    generator = torch.Generator().manual_seed(3)
    moving = Image(torch.rand(1, 2, 9, 10, 11, generator=generator, dtype=torch.float64),
                   np.diag([1.1, 0.9, 1.3, 1.0]))
    ddf = torch.randn(1, 3, 7, 8, 6, generator=generator, dtype=torch.float64) * 2
    fixed_affine = np.array([[1.0, 0.1, 0, -1], [0, 1.2, 0, 0.5], [0, 0, 0.9, 2], [0, 0, 0, 1]])
    whole = world.sample_moving(moving, ddf, fixed_affine, mode)
    for rows in (1, 3):
        monkeypatch.setattr(world, "SAMPLE_SLAB_VOXELS", rows * 8 * 6)
        assert torch.equal(world.sample_moving(moving, ddf, fixed_affine, mode), whole)
