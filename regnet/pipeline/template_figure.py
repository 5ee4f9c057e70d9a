"""The overview figure of one round of ``regnet template`` (``round_NN/overview.png``): the template
the subjects were registered to, the average of the warped subjects, the new template, the
standard deviation across the warped subjects (what is not yet aligned) and the length of the
mean SyN field (what the shape update removes); 3D: one row per middle slice along each axis.
Drawn with Pillow, like :mod:`regnet.pipeline.figures`.

Example::

    >>> save_round_figure(Path("round_01/overview.png"), panels, "round 1 (affine+syn): mean NCC 0.93")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from regnet.pipeline.figures import _enlarged, _gray, _slices

__all__ = ["save_round_figure"]


def _array(x) -> np.ndarray:
    x = x.detach().to("cpu", torch.float32)
    return (x[0, 0] if x.dim() > 3 and x.shape[0] == 1 and x.shape[1] == 1 else x).numpy()


def save_round_figure(path: Path, panels: list[tuple[str, torch.Tensor]], title: str, picture: bool = False) -> None:
    """Draw ``panels`` (``(title, image (1, 1, *spatial) or (*spatial))``, each scaled to its own
    [0, max]) side by side under ``title``; one row per middle slice for 3D."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    columns = []
    for _, image in panels:
        array = _array(image)
        top = float(array.max()) if array.size else 0.0
        columns.append(_slices(array / top if top > 0 else array, picture))
    rows = []
    for index in range(len(columns[0])):
        label = columns[0][index][0]
        rows.append((label, [_enlarged(_gray(column[index][1])) for column in columns]))
    font = ImageFont.load_default(size=14)
    pad, head, label_w = 8, 62, 56 if len(rows) > 1 else 0
    width = max(sum(p.width for p in row) for _, row in rows) + (len(panels) + 1) * pad + label_w
    height = head + sum(max(p.height for p in row) + pad for _, row in rows) + pad
    canvas = PILImage.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), title, fill="black", font=font)
    y = head
    for r, (label, row) in enumerate(rows):
        x = pad + label_w
        for c, panel in enumerate(row):
            if r == 0:
                draw.multiline_text((x, 24), panels[c][0], fill="black", font=font, spacing=2)
            canvas.paste(panel, (x, y))
            x += panel.width + pad
        if label:
            draw.multiline_text((4, y + max(p.height for p in row) // 2 - 10), label.replace(" = ", "\n= "),
                                fill="black", font=font, spacing=2)
        y += max(p.height for p in row) + pad
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp, format="PNG")
    tmp.replace(path)
