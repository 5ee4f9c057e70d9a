"""Label-wise linear interpolation (ANTs' GenericLabel): regnet.geometry.sample_labels_at_voxels
against ANTsPy's genericLabel and hand-made cases; `regnet apply --interp label`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regnet.geometry import sample_labels_at_voxels, voxel_grid


def _labels() -> np.ndarray:
    arr = np.zeros((30, 32, 28), np.float32)
    arr[5:20, 6:25, 4:20] = 1
    arr[10:28, 3:15, 8:26] = 2
    arr[12:18, 12:18, 12:18] = 3
    return arr


def test_identity_and_half_voxel_votes():
    labels = torch.randint(0, 5, (1, 2, 9, 10, 8))
    assert torch.equal(sample_labels_at_voxels(labels, voxel_grid((9, 10, 8))), labels)
    two = torch.tensor([[[[1, 1, 2, 2]]]])  # (1, 1, 1, 4): a 2D map, one row
    points = torch.tensor([[[0.0, 0.0, 0.0]], [[1.4, 1.6, 3.5]]], dtype=torch.float64)
    out = sample_labels_at_voxels(two, points)
    assert out.tolist() == [[[[1, 2, 2]]]]  # 1.4: mostly label 1; 1.6: mostly 2; 3.5: a tie with the outside
    #                                         (label 0) goes to the first (lower) corner
    assert out.dtype == two.dtype


def test_agrees_with_ants_generic_label(tmp_path):
    ants = pytest.importorskip("ants")
    arr = _labels()
    image = ants.from_numpy(arr)  # identity direction, spacing 1, origin 0: physical = index (LPS)
    matrix = np.array([[0.95, 0.05, 0.0], [0.02, 1.03, 0.04], [0.0, 0.03, 0.97]])
    offset = np.array([0.7, -0.4, 0.3])
    transform = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=matrix,
                                           offset=offset)
    path = str(tmp_path / "affine.mat")
    ants.write_transform(transform, path)
    warped = ants.apply_transforms(image, image, [path], interpolator="genericLabel").numpy()
    nearest = ants.apply_transforms(image, image, [path], interpolator="nearestNeighbor").numpy()
    to_voxels = np.eye(4)
    to_voxels[:3, :3], to_voxels[:3, 3] = matrix, offset
    ours = sample_labels_at_voxels(torch.from_numpy(arr)[None, None], voxel_grid(arr.shape), to_voxels)[0, 0].numpy()
    assert (ours == warped).mean() > 0.9995
    assert (nearest == warped).mean() < 0.999  # the comparison can tell the two interpolators apart


def test_apply_interp_label(tmp_path):
    from regnet.cli import main
    from regnet.io import load_image, save_image

    arr = _labels()
    save_image(tmp_path / "seg.nii.gz", torch.from_numpy(arr).to(torch.int16), np.eye(4))
    matrix = np.eye(4)
    matrix[:3, 3] = [0.4, -0.3, 0.2]
    np.savetxt(tmp_path / "affine.txt", matrix)
    out = tmp_path / "out.nii.gz"
    assert main(["apply", "--moving", str(tmp_path / "seg.nii.gz"), "--reference", str(tmp_path / "seg.nii.gz"),
                 "--transform", str(tmp_path / "affine.txt"), "--interp", "label", "--out", str(out)]) == 0
    result = load_image(out, dtype=None)
    assert result.data.dtype == torch.int16 and set(torch.unique(result.data).tolist()) <= {0, 1, 2, 3}
