"""The overview figure of a registration (``overview.png``): fixed, moving through the headers,
warped, a checkerboard of fixed and warped, and the Jacobian determinant; for 3D one row per
middle slice along each array axis.

Drawn with Pillow from the arrays (grayscale panels, the determinant in a blue-white-red map
centred on 1, a colour bar, titles), not with matplotlib: importing and laying out a
matplotlib figure took 2-5 s of a ``regnet register`` process, this takes a few hundredths.

Example::

    >>> save_overview(Path("overview.png"), fixed, moving, warped, det, report)   # images in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: Smallest panel side in pixels (small images are enlarged, nearest neighbour).
PANEL = 256
#: Blue (det < 1), white (det = 1), red (det > 1): ColorBrewer's RdBu ends.
_BLUE = np.array([33, 102, 172], dtype=np.float64)
_RED = np.array([178, 24, 43], dtype=np.float64)
_WHITE = np.array([247, 247, 247], dtype=np.float64)


def _checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """``a`` and ``b`` (2D slices) in alternating square-ish tiles, ``tiles`` along each axis."""
    rows = np.arange(a.shape[0])[:, None] * tiles // a.shape[0]
    cols = np.arange(a.shape[1])[None, :] * tiles // a.shape[1]
    return np.where((rows + cols) % 2 == 0, a, b)


def _slices(volume: np.ndarray, picture: bool) -> list[tuple[str, np.ndarray]]:
    """2D: the image (pictures as stored; NIfTI transposed and flipped: first axis to the right,
    second upwards). 3D: the middle slice across each array axis, likewise."""
    if volume.ndim == 2:
        return [("", volume if picture else np.flipud(volume.T))]
    out = []
    for axis in range(3):
        index = volume.shape[axis] // 2
        out.append((f"axis {axis} = {index}", np.flipud(np.take(volume, index, axis=axis).T)))
    return out


def _gray(image: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)


def _diverging(det: np.ndarray, low: float, high: float) -> np.ndarray:
    """RGB of a determinant map: white at 1, blue down to ``low``, red up to ``high``."""
    t = np.where(det < 1, (det - 1) / max(1 - low, 1e-6), (det - 1) / max(high - 1, 1e-6))
    t = np.clip(t, -1.0, 1.0)[..., None]
    rgb = np.where(t < 0, _WHITE + (-t) * (_BLUE - _WHITE), _WHITE + t * (_RED - _WHITE))
    return (rgb + 0.5).astype(np.uint8)


def _enlarged(rgb: np.ndarray):
    from PIL import Image as PILImage

    image = PILImage.fromarray(rgb)
    scale = max(1, int(np.ceil(PANEL / max(rgb.shape[:2]))))
    return image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), PILImage.Resampling.NEAREST)


def save_overview(path: Path, fixed, moving, warped, det, report: dict, picture: bool = False) -> None:
    """Figure: fixed, moving (through the headers), warped, checkerboard fixed / warped,
    Jacobian determinant with its range and folding; one row per middle slice for 3D.

    Args:
        fixed, moving, warped: ``(1, C, *spatial)`` (the first channel is drawn), in [0, 1].
        det: the Jacobian determinant ``(*spatial)``.
        report: the registration report (``metrics`` and ``jacobian`` for the titles).
        picture: the images are 2D pictures (drawn as stored, rows downwards).
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    def array(x):  # first channel of an image (1, C, *spatial), or a map (*spatial)
        x = x.detach().to("cpu", torch.float32)
        return (x if x.dim() == det.dim() else x[0, 0]).numpy()

    fixed, moving, warped, det_np = array(fixed), array(moving), array(warped), array(det)
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    jac = report["jacobian"]
    low, high = float(det_np.min()), float(det_np.max())
    columns = [_slices(v, picture) for v in (fixed, moving, warped, det_np)]
    titles = [
        "fixed",
        f"moving (through headers)\nNCC {ncc['before']:.3f}, MSE {err['before']:.4f}",
        f"warped ({report['transform']})\nNCC {ncc['after']:.3f}, MSE {err['after']:.4f}",
        "checkerboard fixed / warped",
        f"Jacobian determinant [{low:.2f}, {high:.2f}]\nfolding: {100 * jac['fraction_nonpositive']:.3f}%",
    ]
    rows = []
    for (label, f), (_, m), (_, w), (_, d) in zip(*columns, strict=True):
        panels = [_gray(f), _gray(m), _gray(w), _gray(_checkerboard(f, w)), _diverging(d, min(low, 0.99),
                                                                                     max(high, 1.01))]
        rows.append((label, [_enlarged(p) for p in panels]))

    font = ImageFont.load_default(size=14)
    pad, title_h, label_w, bar_w = 8, 40, 56 if len(rows) > 1 else 0, 60
    width = max(sum(p.width for p in panels) for _, panels in rows) + 6 * pad + label_w + bar_w
    height = title_h + sum(max(p.height for p in panels) + pad for _, panels in rows) + pad
    canvas = PILImage.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = title_h
    for r, (label, panels) in enumerate(rows):
        x = pad + label_w
        for c, panel in enumerate(panels):
            if r == 0:
                draw.multiline_text((x, 4), titles[c], fill="black", font=font, spacing=2)
            canvas.paste(panel, (x, y))
            x += panel.width + pad
        if label:
            draw.multiline_text((4, y + max(p.height for p in panels) // 2 - 10), label.replace(" = ", "\n= "),
                                fill="black", font=font, spacing=2)
        y += max(p.height for p in panels) + pad
    _colour_bar(draw, font, (width - bar_w + 4, title_h), rows[0][1][-1].height, min(low, 0.99), max(high, 1.01))
    canvas.save(path, format="PNG")


def _colour_bar(draw, font, origin: tuple[int, int], height: int, low: float, high: float) -> None:
    """A vertical bar of the determinant's colours, ``high`` at the top, with three labels."""
    x, y = origin
    values = np.linspace(high, low, height)
    colours = _diverging(values, low, high)
    for i, colour in enumerate(colours):
        draw.line([(x, y + i), (x + 12, y + i)], fill=tuple(int(v) for v in colour))
    one = int(round((high - 1) / (high - low) * (height - 1)))
    for value, offset in ((high, 0), (1.0, one), (low, height - 12)):
        draw.text((x + 16, y + max(0, min(offset, height - 12))), f"{value:.2f}", fill="black", font=font)
