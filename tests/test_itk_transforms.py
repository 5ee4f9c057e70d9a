"""regnet.io.itk_transforms: ITK/ANTs affine files (.mat MATLAB v4, ITK .txt) <-> regnet's RAS
world matrix, checked against SimpleITK, SciPy's MATLAB v4 reader/writer and ANTsPy."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from regnet.io.itk_transforms import load_itk_affine, save_itk_affine

FLIP = {2: np.diag([-1.0, -1.0, 1.0]), 3: np.diag([-1.0, -1.0, 1.0, 1.0])}


def _matrix(ndim, seed=0):
    rng = np.random.default_rng(seed)
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] += 0.2 * rng.standard_normal((ndim, ndim))
    m[:ndim, ndim] = 10 * rng.standard_normal(ndim)
    return m


def _parameters(ras, centre):
    """ITK parameters (matrix row by row, translation) of the LPS map of ``ras`` about ``centre``."""
    ndim = ras.shape[0] - 1
    lps = FLIP[ndim] @ ras @ FLIP[ndim]
    linear, offset = lps[:ndim, :ndim], lps[:ndim, ndim]
    translation = offset - centre + linear @ centre  # p -> A (p - c) + c + t
    return np.concatenate([linear.ravel(), translation])


def _mat_v4(variables, order="<", precision=0):
    """MATLAB v4 bytes: each variable a column vector (``precision`` 0 = float64, 1 = float32)."""
    blob = b""
    for name, values in variables.items():
        encoded = name.encode() + b"\0"
        mopt = (1000 if order == ">" else 0) + 10 * precision
        blob += struct.pack(f"{order}5i", mopt, len(values), 1, 0, len(encoded)) + encoded
        blob += np.asarray(values, dtype=f"{order}{'f8' if precision == 0 else 'f4'}").tobytes()
    return blob


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_round_trip(ndim, suffix, tmp_path):
    m = _matrix(ndim)
    path = save_itk_affine(tmp_path / f"a{suffix}", m)
    np.testing.assert_allclose(load_itk_affine(path), m, atol=1e-12)
    np.testing.assert_allclose(load_itk_affine(path, ndim=ndim), m, atol=1e-12)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_simpleitk_reads_the_same_map(ndim, suffix, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    m = _matrix(ndim, seed=ndim)
    path = save_itk_affine(tmp_path / f"a{suffix}", m)
    transform = sitk.ReadTransform(str(path))
    rng = np.random.default_rng(1)
    for ras in 20 * rng.standard_normal((5, ndim)):
        lps = ras * np.diag(FLIP[ndim])[:ndim]
        mapped = np.asarray(transform.TransformPoint(tuple(lps))) * np.diag(FLIP[ndim])[:ndim]
        np.testing.assert_allclose(mapped, (m @ np.append(ras, 1))[:ndim], atol=1e-9)


def test_reads_simpleitk_files_with_a_centre(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((1.1, 0.1, 0.0, -0.05, 0.9, 0.2, 0.0, 0.1, 1.0))
    transform.SetTranslation((3.0, -2.0, 5.0))
    transform.SetCenter((10.0, 20.0, -4.0))
    for suffix in (".mat", ".txt"):
        sitk.WriteTransform(transform, str(tmp_path / f"s{suffix}"))
        m = load_itk_affine(tmp_path / f"s{suffix}")
        lps = np.array([4.0, -7.0, 2.0])
        expected = np.asarray(transform.TransformPoint(tuple(lps))) * [-1, -1, 1]
        np.testing.assert_allclose((m @ np.append(lps * [-1, -1, 1], 1))[:3], expected, atol=1e-9)


def test_scipy_reads_and_writes_the_same_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    m, centre = _matrix(3), np.array([1.0, 2.0, 3.0])
    save_itk_affine(tmp_path / "ours.mat", m)
    stored = scipy_io.loadmat(str(tmp_path / "ours.mat"))
    np.testing.assert_allclose(stored["AffineTransform_double_3_3"].ravel(), _parameters(m, np.zeros(3)), atol=1e-12)
    np.testing.assert_array_equal(stored["fixed"].ravel(), np.zeros(3))
    scipy_io.savemat(str(tmp_path / "scipy.mat"), {"AffineTransform_double_3_3": _parameters(m, centre)[:, None],
                                                   "fixed": centre[:, None]}, format="4")
    np.testing.assert_allclose(load_itk_affine(tmp_path / "scipy.mat"), m, atol=1e-10)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("precision", [0, 1])
def test_float_and_big_endian_mat(order, precision, tmp_path):
    m, centre = _matrix(3, seed=2), np.array([5.0, -3.0, 7.0])
    kind = "double" if precision == 0 else "float"
    path = tmp_path / "a.mat"
    path.write_bytes(_mat_v4({f"AffineTransform_{kind}_3_3": _parameters(m, centre), "fixed": centre}, order,
                             precision))
    np.testing.assert_allclose(load_itk_affine(path), m, atol=1e-9 if precision == 0 else 1e-4)


def test_ants_written_mat(tmp_path):
    ants = pytest.importorskip("ants", reason="antspyx is not installed")
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=np.array([[1.05, 0.1, 0.0], [0.0, 0.95, 0.05], [0.02, 0.0, 1.0]]),
                                    translation=(2.0, -4.0, 6.0), center=(10.0, 0.0, -5.0))
    ants.write_transform(tx, str(tmp_path / "ants.mat"))
    m = load_itk_affine(tmp_path / "ants.mat")
    lps = (3.0, -1.0, 8.0)
    expected = np.asarray(ants.apply_ants_transform_to_point(tx, lps)) * [-1, -1, 1]
    np.testing.assert_allclose((m @ np.append(np.array(lps) * [-1, -1, 1], 1))[:3], expected, atol=1e-6)


# --- refused files -------------------------------------------------------------------------------

def test_unsupported_types_named(tmp_path):
    path = tmp_path / "euler.txt"
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: Euler3DTransform_double_3_3\n"
                    "Parameters: 0.1 0 0 1 2 3\nFixedParameters: 0 0 0\n")
    with pytest.raises(ValueError, match="Euler3DTransform_double_3_3"):
        load_itk_affine(path)
    mat = tmp_path / "bspline.mat"
    mat.write_bytes(_mat_v4({"BSplineTransform_double_3_3": np.zeros(12), "fixed": np.zeros(3)}))
    with pytest.raises(ValueError, match="BSplineTransform_double_3_3"):
        load_itk_affine(mat)
    (tmp_path / "composite.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.h5"):
        load_itk_affine(tmp_path / "composite.h5")


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"\x00\x00\x00", "truncated"),
    (_mat_v4({"AffineTransform_double_3_3": np.zeros(12), "fixed": np.zeros(3)})[:40], "truncated"),
    (_mat_v4({"AffineTransform_double_3_3": np.ones(7), "fixed": np.zeros(3)}), "12 parameters"),
    (_mat_v4({"AffineTransform_double_3_3": np.zeros(12), "fixed": np.zeros(3)}), "not invertible"),
    (_mat_v4({"a": np.zeros(12), "b": np.zeros(3), "c": np.zeros(1)}), "one transform"),
    (struct.pack("<5i", 3, 12, 1, 0, 4) + b"abc\0" + bytes(96), "MATLAB v4"),
], ids=["empty", "short-header", "short-data", "parameter-count", "singular", "three-variables", "sparse"])
def test_malformed_mat(content, match, tmp_path):
    path = tmp_path / "bad.mat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_itk_affine(path)


@pytest.mark.parametrize("text, match", [
    ("hello\n", "one transform"),
    ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 x\n", "not numbers"),
    ("#Insight Transform File V1.0\nTransform: AffineTransform_double_2_2\nParameters: 1 0 0 1 0 0\n"
     "FixedParameters: 0 0\n", "2D"),
])
def test_malformed_text(text, match, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_itk_affine(path, ndim=3)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_itk_affine(tmp_path / "none.mat")
    with pytest.raises(ValueError, match="ends in"):
        save_itk_affine(tmp_path / "a.nii", np.eye(4))
    with pytest.raises(ValueError, match="last row"):
        save_itk_affine(tmp_path / "a.mat", np.ones((4, 4)))
