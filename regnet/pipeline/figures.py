"""The overview figure of a registration (``overview.png``): fixed, moving through the headers,
warped, a checkerboard of fixed and warped, and the Jacobian determinant; for 3D one row per
middle slice along each array axis. Matplotlib is imported only when a figure is drawn.

Example::

    >>> save_overview(Path("overview.png"), fixed, moving, warped, det, report)   # images in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    index = np.indices(a.shape)
    cells = sum((index[i] * tiles // a.shape[i]) for i in range(a.ndim))
    return np.where(cells % 2 == 0, a, b)


def _slices(volume: np.ndarray, picture: bool) -> list[tuple[str, np.ndarray]]:
    """2D: the image (pictures as stored; NIfTI transposed, to be drawn with origin lower).
    3D: the middle slice across each array axis."""
    if volume.ndim == 2:
        return [("", volume if picture else volume.T)]
    out = []
    for axis in range(3):
        index = volume.shape[axis] // 2
        out.append((f"axis {axis} = {index}", np.take(volume, index, axis=axis).T))
    return out


def save_overview(path: Path, fixed, moving, warped, det, report: dict, picture: bool = False) -> None:
    """Figure: fixed, moving (through the headers), warped, checkerboard fixed / warped,
    Jacobian determinant; one row per middle slice for 3D. Images in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    def array(x):  # first channel of an image (1, C, *spatial), or a map (*spatial)
        x = x.detach().to("cpu", torch.float32)
        return (x if x.dim() == det.dim() else x[0, 0]).numpy()

    fixed, moving, warped, det_np = array(fixed), array(moving), array(warped), array(det)
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    jac = report["jacobian"]
    columns = (fixed, moving, warped, _checkerboard(fixed, warped), det_np)
    rows = list(zip(*(_slices(v, picture) for v in columns), strict=True))
    fig = Figure(figsize=(17.5, 3.6 * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), 5))
    low, high = float(det_np.min()), float(det_np.max())
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(low, 0.99), vmax=max(high, 1.01))
    titles = [
        "fixed",
        f"moving (through headers)\nNCC {ncc['before']:.3f}, MSE {err['before']:.4f}",
        f"warped ({report['transform']})\nNCC {ncc['after']:.3f}, MSE {err['after']:.4f}",
        "checkerboard fixed / warped",
        f"Jacobian determinant [{low:.2f}, {high:.2f}]\nfolding: {100 * jac['fraction_nonpositive']:.3f}%",
    ]
    origin = "upper" if picture and fixed.ndim == 2 else "lower"
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            ax = axes[r, c]
            if c < 4:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest", origin=origin)
            else:
                shown = ax.imshow(image, cmap="RdBu_r", norm=norm, interpolation="nearest", origin=origin)
                fig.colorbar(shown, ax=ax, shrink=0.8)
            ax.set_title(titles[c] if r == 0 else "", fontsize=10)
            if c == 0 and label:
                ax.set_ylabel(label)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(path, format="png", dpi=80)
