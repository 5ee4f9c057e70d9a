"""Shared fixtures: the real images in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

import os
os.environ.setdefault("TRITON_INTERPRET", "1")  # before any `import triton`: kernels run on CPU tensors
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before `import torch`: no spinning on shared cores
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(os.environ.get("REGNET_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def data_file(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with the reason."""
    path = DATA_DIR / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set REGNET_DATA to the shared/data folder)")
    return path


@pytest.fixture
def brain_slice():
    """A real 256x256 T1 brain slice (r16), float64 in [0, 1], shape (1, 1, 256, 256)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(Image.open(data_file("brain2d/r16slice.jpg")).convert("L"), dtype=np.float64) / 255.0
    return torch.from_numpy(array)[None, None]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
