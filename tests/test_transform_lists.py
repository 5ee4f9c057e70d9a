"""Transform lists in ANTs' order (regnet.pipeline.transform_list), points CSV files, and the
command line over them (``regnet apply`` with lists / ``--inverse`` / ``--reference``,
``regnet apply-points``, ``regnet register --initial-transform``): analytic checks and bad input.
ANTsPy itself is the oracle in ``test_ants_compat.py``; nothing here needs it."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from regnet.cli import main
from regnet.io import load_affine, save_affine, save_ddf
from regnet.io.itk_transforms import save_itk_affine
from regnet.io.points import read_points, write_points
from regnet.pipeline import ArgumentError, apply_points, apply_transform, map_points, read_transforms, register_files
from regnet.pipeline.transform_list import parse_item

TINY = {"affine": {"scales": [2, 1], "iterations": [10, 4]}, "syn": {"scales": [2, 1], "iterations": [6, 3]}}
GRID = np.array([[0.0, -2.0, 10.0], [1.5, 0.0, -20.0], [0.0, 0.0, 1.0]])  # 2D, oblique-ish axes swapped


def _save(path, array, affine):
    affine4 = np.eye(4)
    affine4[:2, :2], affine4[:2, 3] = affine[:2, :2], affine[:2, 2]
    nib.save(nib.Nifti1Image(array, affine4), str(path))
    return path


def _blobs(shape, affine, shift=(0.0, 0.0)):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    world = index @ affine[:2, :2].T + affine[:2, 2] - np.asarray(shift)
    centre = affine[:2, :2] @ ((np.asarray(shape) - 1) / 2) + affine[:2, 2]
    r = np.sum((world - centre - [4.0, 0.0]) ** 2, -1)
    s = np.sum((world - centre + [6.0, 5.0]) ** 2, -1)
    return (100 * np.exp(-r / 60) + 60 * np.exp(-s / 30)).astype(np.float32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lists")
    moving_affine = np.array([[1.2, 0.0, -22.0], [0.0, 1.1, -20.0], [0.0, 0.0, 1.0]])
    files = {
        "fixed": _save(folder / "fixed.nii.gz", _blobs((32, 40), GRID), GRID),
        "moving": _save(folder / "moving.nii.gz", _blobs((30, 36), moving_affine, (2.0, -1.0)), moving_affine),
        "out": folder / "reg",
    }
    labels = (_blobs((30, 36), moving_affine, (2.0, -1.0)) > 40).astype(np.int16)
    files["moving_labels"] = _save(folder / "moving_labels.nii.gz", labels, moving_affine)
    register_files(files["fixed"], files["moving"], "affine+syn", files["out"], config=TINY, verbose=False)
    return files


# --- ANTs' order and ITK's field rule, analytically ---------------------------------------------

def _field_2d(path, affine, shape, world_displacement):
    """A constant-in-x, linear-in-index field: displacement (RAS mm) = world_displacement * (1 + i)."""
    ddf_world = np.zeros((2, *shape))
    i = np.arange(shape[0])[:, None]
    for k in range(2):
        ddf_world[k] = world_displacement[k] * (1.0 + i)
    voxels = np.einsum("ij,j...->i...", np.linalg.inv(affine[:2, :2]), ddf_world)
    return save_ddf(path, torch.as_tensor(voxels)[None], affine)


def test_first_listed_acts_first_on_points(tmp_path):
    affine = np.diag([2.0, 2.0, 1.0])
    warp = _field_2d(tmp_path / "warp.nii.gz", affine, (10, 12), (0.0, 0.5))
    shift = np.eye(3)
    shift[0, 2] = 4.0  # +4 mm along x: two voxels along the field's axis 0
    save_itk_affine(tmp_path / "shift.mat", shift)
    p = np.array([[6.0, 3.0]])  # voxel (3, 1.5)

    def warp_at(q):
        return q + [0.0, 0.5 * (1 + q[0, 0] / 2.0)]

    np.testing.assert_allclose(map_points(p, [warp, tmp_path / "shift.mat"]), warp_at(p) + [4.0, 0.0])
    np.testing.assert_allclose(map_points(p, [tmp_path / "shift.mat", warp]), warp_at(p + [4.0, 0.0]))
    np.testing.assert_allclose(map_points(p, [f"{tmp_path / 'shift.mat'},1"]), p - [4.0, 0.0])
    np.testing.assert_allclose(map_points(p, [(tmp_path / "shift.mat", True)]), p - [4.0, 0.0])
    np.testing.assert_allclose(map_points(p, tmp_path / "shift.mat", inverse=True), p - [4.0, 0.0])


def test_field_is_zero_beyond_half_a_voxel_outside(tmp_path):
    """ITK's DisplacementFieldTransform (checked against ANTs in test_ants_compat.py): linear
    inside, the border value within half a voxel outside, 0 farther out."""
    affine = np.diag([2.0, 2.0, 1.0])
    warp = _field_2d(tmp_path / "warp.nii.gz", affine, (10, 12), (0.0, 0.5))
    index = np.array([[-0.7, 3], [-0.4, 3], [0.0, 3], [4.5, 3], [9.0, 3], [9.4, 3], [9.6, 3], [4, -0.4], [4, 11.6]])
    moved = map_points(index * 2.0, [warp]) - index * 2.0
    expected = 0.5 * (1 + np.clip(index[:, 0], 0, 9))
    expected[[0, 6, 8]] = 0.0
    np.testing.assert_allclose(moved[:, 1], expected, atol=1e-6)
    np.testing.assert_allclose(moved[:, 0], 0.0, atol=1e-6)


@pytest.mark.parametrize("item, expected", [
    ("a.mat", ("a.mat", False)), ("a.mat,1", ("a.mat", True)), ("[a.mat,1]", ("a.mat", True)),
    ("[a.mat, 0]", ("a.mat", False)), (" a.mat , 1 ", ("a.mat", True)), (("a.mat", True), ("a.mat", True)),
    (("a.mat", 0), ("a.mat", False)),
])
def test_parse_item(item, expected):
    path, invert = parse_item(item)
    assert (str(path), invert) == expected


def test_folder_lists(pair):
    out = pair["out"]
    names = [(s.path.name, getattr(s, "inverted", False)) for s in read_transforms(out).steps]
    assert names == [("warp.nii.gz", False), ("affine.mat", False)]
    inverse = [(s.path.name, getattr(s, "inverted", False)) for s in read_transforms(out, inverse=True).steps]
    assert inverse == [("affine.mat", True), ("inverse_warp.nii.gz", False)]
    on_fixed = read_transforms(out, grid=((32, 40), GRID))
    assert [s.path.name for s in on_fixed.steps] == ["ddf.nii.gz"]
    assert str(read_transforms(out, inverse=True)) == "[[affine.mat,1], inverse_warp.nii.gz]"


def test_folder_list_equals_ddf_on_the_fixed_grid(pair, tmp_path):
    """[warp.nii.gz, affine.mat] and ddf.nii.gz are the same map on the fixed grid; off it, the
    list goes on with the affine where ddf.nii.gz would stop (identity)."""
    out = pair["out"]
    listed = read_transforms([out / "warp.nii.gz", out / "affine.mat"]).ddf((32, 40), GRID)
    total = read_transforms(out / "ddf.nii.gz").ddf((32, 40), GRID)
    np.testing.assert_allclose(listed.numpy(), total.double().numpy(), atol=1e-4)
    far = np.array([[500.0, 500.0]])
    np.testing.assert_allclose(map_points(far, out), (load_affine(out / "affine.txt") @ [500, 500, 1])[None, :2])


def test_inverse_round_trip(pair):
    out = pair["out"]
    index = np.stack(np.meshgrid(np.arange(8, 24, 3), np.arange(8, 32, 3), indexing="ij"), -1).reshape(-1, 2)
    p = index @ GRID[:2, :2].T + GRID[:2, 2]
    back = map_points(map_points(p, out), out, inverse=True)
    assert np.abs(back - p).max() < 0.3


def test_apply_reference_and_inverse(pair, tmp_path):
    """--reference: any output grid; --inverse brings the fixed image onto the moving grid, and a
    list of affines can be inverted as a whole."""
    out = pair["out"]
    a = apply_transform(pair["fixed"], pair["moving"], out, tmp_path / "a.nii.gz")
    b = apply_transform(None, pair["moving"], [out / "warp.nii.gz", out / "affine.mat"], tmp_path / "b.nii.gz",
                        reference=pair["fixed"])
    np.testing.assert_allclose(nib.load(str(b)).get_fdata(), nib.load(str(a)).get_fdata(), atol=1e-2)
    back = apply_transform(None, pair["fixed"], out, tmp_path / "back.nii.gz", reference=pair["moving"], inverse=True)
    back_img = nib.load(str(back))
    assert back_img.shape == (30, 36)
    np.testing.assert_allclose(back_img.affine, nib.load(str(pair["moving"])).affine, atol=1e-6)
    moving = nib.load(str(pair["moving"])).get_fdata()
    inside = moving > 20
    assert np.corrcoef(back_img.get_fdata()[inside], moving[inside])[0, 1] > 0.9
    c = apply_transform(None, pair["fixed"], out / "affine.mat", tmp_path / "c.nii.gz", reference=pair["moving"],
                        inverse=True)
    d = apply_transform(None, pair["fixed"], f"{out / 'affine.mat'},1", tmp_path / "d.nii.gz",
                        reference=pair["moving"])
    np.testing.assert_array_equal(nib.load(str(c)).get_fdata(), nib.load(str(d)).get_fdata())
    with pytest.raises(ValueError, match="reference"):
        apply_transform(pair["fixed"], pair["moving"], out, tmp_path / "x.nii.gz", inverse=True)
    with pytest.raises(ValueError, match="either"):
        apply_transform(pair["fixed"], pair["moving"], out, tmp_path / "x.nii.gz", reference=pair["moving"])
    assert not (tmp_path / "x.nii.gz").exists()


# --- points files ---------------------------------------------------------------------------------

def test_points_csv_round_trip(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("label,x,y,z,t,comment\n1,1.5,-2,3,0,\"a, b\"\n2,0,0,0,7,c\n")
    table = read_points(path, 3)
    np.testing.assert_array_equal(table.points, [[-1.5, 2.0, 3.0], [0.0, 0.0, 0.0]])  # LPS on disk -> RAS
    write_points(tmp_path / "q.csv", table, table.points + [1.0, 1.0, 1.0])
    lines = (tmp_path / "q.csv").read_text().splitlines()
    assert lines[0] == "label,x,y,z,t,comment" and lines[1] == '1,0.5,-3.0,4.0,0,"a, b"'
    assert lines[2] == "2,-1.0,-1.0,1.0,7,c"
    ras = read_points(path, 2, ras=True)
    np.testing.assert_array_equal(ras.points, [[1.5, -2.0], [0.0, 0.0]])


def test_apply_points_2d_inverse_and_ras(pair, tmp_path):
    out = pair["out"]
    (tmp_path / "p.csv").write_text("x,y,name\n-3.0,4.0,a\n10.0,-2.0,b\n")
    apply_points(tmp_path / "p.csv", out, tmp_path / "q.csv", inverse=True)
    got = read_points(tmp_path / "q.csv", 2)
    np.testing.assert_allclose(got.points, map_points([[3.0, -4.0], [-10.0, 2.0]], out, inverse=True), atol=1e-9)
    assert [row[2] for row in got.rows] == ["a", "b"]


# --- command line ------------------------------------------------------------------------------------

def test_cli_apply_list_inverse_and_points(pair, tmp_path, capsys):
    out = pair["out"]
    assert main(["apply", "--input", str(pair["moving_labels"]), "--reference", str(pair["fixed"]), "--transform",
                 str(out / "warp.nii.gz"), "--transform", str(out / "affine.mat"), "--interp", "nearest",
                 "--out", str(tmp_path / "labels.nii.gz")]) == 0
    assert main(["apply", "--moving", str(pair["moving_labels"]), "--fixed", str(pair["fixed"]), "--transform",
                 str(out), "--interp", "nearest", "--out", str(tmp_path / "folder.nii.gz")]) == 0
    a, b = (np.asarray(nib.load(str(tmp_path / n)).dataobj) for n in ("labels.nii.gz", "folder.nii.gz"))
    assert np.mean(a == b) > 0.999 and a.dtype == np.int16
    assert main(["apply", "--input", str(pair["fixed"]), "--reference", str(pair["moving"]), "--transform",
                 f"{out / 'affine.mat'},1", str(out / "inverse_warp.nii.gz"), "--out", str(tmp_path / "i.nii.gz")]) == 0
    assert main(["apply", "--input", str(pair["fixed"]), "--reference", str(pair["moving"]), "--inverse",
                 "--transform", str(out), "--out", str(tmp_path / "j.nii.gz")]) == 0
    np.testing.assert_array_equal(nib.load(str(tmp_path / "i.nii.gz")).get_fdata(),
                                  nib.load(str(tmp_path / "j.nii.gz")).get_fdata())
    (tmp_path / "p.csv").write_text("x,y\n1.0,2.0\n")
    assert main(["apply-points", "--points", str(tmp_path / "p.csv"), "--transform", str(out), "--out",
                 str(tmp_path / "q.csv"), "--inverse", "--ras"]) == 0
    np.testing.assert_allclose(read_points(tmp_path / "q.csv", 2, ras=True).points,
                               map_points([[1.0, 2.0]], out, inverse=True), atol=1e-9)
    captured = capsys.readouterr()
    assert captured.err == "" and "wrote" in captured.out


def test_cli_register_initial_transform(pair, tmp_path, capsys):
    """--initial-transform: the affine stage starts from the given matrix (an ANTs .mat and
    regnet's affine.txt alike); SyN alone keeps it as its affine part."""
    out = pair["out"]
    config = tmp_path / "c.yaml"
    config.write_text("syn:\n  scales: [1]\n  iterations: [2]\n")
    for initial in (out / "affine.mat", out / "affine.txt"):
        target = tmp_path / f"syn_{initial.suffix[1:]}"
        assert main(["register", "--fixed", str(pair["fixed"]), "--moving", str(pair["moving"]), "--transform", "syn",
                     "--initial-transform", str(initial), "--config", str(config), "--out", str(target),
                     "--quiet"]) == 0
        np.testing.assert_allclose(load_affine(target / "affine.txt"), load_affine(out / "affine.txt"), atol=1e-9)
    shift = np.eye(3)
    shift[:2, 2] = [3.0, -2.0]
    save_affine(tmp_path / "shift.txt", shift)
    target = tmp_path / "inverted"
    assert main(["register", "--fixed", str(pair["fixed"]), "--moving", str(pair["moving"]), "--transform", "syn",
                 "--initial-transform", f"{tmp_path / 'shift.txt'},1", "--config", str(config), "--out",
                 str(target), "--quiet"]) == 0
    np.testing.assert_allclose(load_affine(target / "affine.txt"), np.linalg.inv(shift), atol=1e-12)
    capsys.readouterr()


def _bad_inputs(pair, tmp_path):
    out = pair["out"]
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a matlab file at all, just text" * 3)
    euler = tmp_path / "euler.txt"
    euler.write_text("#Insight Transform File V1.0\nTransform: Euler2DTransform_double_2_2\nParameters: 0.1 1 2\n"
                     "FixedParameters: 0 0\n")
    far = np.eye(3)
    far[:2, 2] = 900.0
    save_itk_affine(tmp_path / "far.mat", far)
    save_ddf(tmp_path / "warp3d.nii.gz", torch.zeros(1, 3, 4, 4, 4), np.eye(4))
    (tmp_path / "no_y.csv").write_text("x,z\n1,2\n")
    (tmp_path / "text.csv").write_text("x,y\n1,abc\n")
    (tmp_path / "ragged.csv").write_text("x,y\n1,2,3\n")
    (tmp_path / "ok.csv").write_text("x,y\n1,2\n")
    image = ["apply", "--moving", str(pair["moving"]), "--fixed", str(pair["fixed"]), "--out"]
    points = ["apply-points", "--transform", str(out), "--out"]
    return [  # (argv without the output path, the option named, a word of the message)
        (image, ["--transform", str(garbage)], "--transform", "MATLAB"),
        (image, ["--transform", str(euler)], "--transform", "Euler2DTransform_double_2_2"),
        (image, ["--transform", str(tmp_path / "none.mat")], "--transform", "no such file"),
        (image, ["--transform", str(tmp_path / "far.mat"), str(out / "warp.nii.gz")], "--transform", "wrong order"),
        (image, ["--transform", f"{out / 'warp.nii.gz'},1"], "--transform", "cannot invert"),
        (image, ["--transform", str(tmp_path / "warp3d.nii.gz")], "--transform", "3D"),
        (image, ["--transform", str(out / "report.json")], "--transform", "unsupported"),
        (image, ["--transform", str(tmp_path)], "--transform", "not a regnet register output"),
        (["apply", "--moving", str(pair["fixed"]), "--reference", str(pair["moving"]), "--inverse", "--out"],
         ["--transform", str(out / "warp.nii.gz"), str(out / "affine.mat")], "--transform", "inverse"),
        (["apply", "--moving", str(pair["fixed"]), "--fixed", str(pair["fixed"]), "--inverse", "--out"],
         ["--transform", str(out)], "--reference", "moving"),
        (points, ["--points", str(tmp_path / "no_y.csv")], "--points", "missing y"),
        (points, ["--points", str(tmp_path / "text.csv")], "--points", "'abc'"),
        (points, ["--points", str(tmp_path / "ragged.csv")], "--points", "row 2"),
        (points, ["--points", str(tmp_path / "none.csv")], "--points", "no such file"),
        (["apply-points", "--points", str(tmp_path / "ok.csv"), "--out"], ["--transform", str(garbage)],
         "--transform", "MATLAB"),
        (["register", "--fixed", str(pair["fixed"]), "--moving", str(pair["moving"]), "--quiet", "--out"],
         ["--initial-transform", str(garbage)], "--initial-transform", "MATLAB"),
        (["register", "--fixed", str(pair["fixed"]), "--moving", str(pair["moving"]), "--quiet", "--out"],
         ["--initial-transform", str(tmp_path / "none.txt")], "--initial-transform", "no such file"),
        (["register", "--fixed", str(pair["fixed"]), "--moving", str(pair["moving"]), "--quiet", "--out"],
         ["--initial-transform", str(out / "warp.nii.gz")], "--initial-transform", "affine"),
    ]


def test_cli_bad_transform_inputs_exit_2(pair, tmp_path, capsys):
    for number, (head, tail, option, word) in enumerate(_bad_inputs(pair, tmp_path)):
        target = tmp_path / f"out{number}{'.csv' if 'points' in head[0] else '' if 'register' in head else '.nii.gz'}"
        status = main([*head, str(target), *tail])
        err = capsys.readouterr().err
        assert status == 2, (tail, err)
        assert err.count("\n") == 1 and err.startswith(f"regnet {head[0]}: error: {option}"), (tail, err)
        assert word in err, (word, err)
        assert not target.exists()
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_python_errors_are_value_errors(pair, tmp_path):
    with pytest.raises(ArgumentError, match="^transform: no such file") as error:
        read_transforms(tmp_path / "none.mat")
    assert isinstance(error.value, ValueError) and error.value.argument == "transform"
    with pytest.raises(ValueError, match=r"points must be a finite \(N, 2\) or \(N, 3\)"):
        map_points(np.zeros((2, 4)), pair["out"])
    with pytest.raises(ArgumentError, match="folder alone"):
        read_transforms([pair["out"], pair["out"] / "affine.mat"])
