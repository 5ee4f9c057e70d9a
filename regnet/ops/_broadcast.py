"""Batch broadcasting of the sampling ops (``grid_sample``, ``warp``, ``affine_transform``).

An image and its sampling source (grid, DDF or ``theta``) have the same batch size ``B``, or
one of them has batch 1 and is shared by the ``B`` items of the other:

- **One image, B sources** (an atlas warped by B fields): the backends read the one image for
  every item (a stride-0 view for ATen's sampler, a zero batch stride in the Triton kernels),
  and its gradient is the sum over the items (atomics into one buffer; in deterministic mode
  per-item gradients summed in a fixed order).
- **B images, one source** (one field applied to B images): the batch is folded into the
  channels, ``(B, C, ...) -> (1, B * C, ...)`` (a view when contiguous), so the sample points
  are computed once for all images, and the output is unfolded; the source's gradient sums
  over the images as over channels.
"""

from __future__ import annotations

import torch


def output_batch(fn: str, image_name: str, image: torch.Tensor, source_name: str, source: torch.Tensor) -> int:
    """The batch of the result: equal batches, or one of them 1. Raises ``ValueError`` otherwise."""
    a, b = image.shape[0], source.shape[0]
    if a == b or a == 1 or b == 1:
        return max(a, b)
    raise ValueError(
        f"{fn}: {image_name} has batch size {a} and {source_name} {b}; they must be equal, or one of them 1 "
        f"(shared by every item of the other)"
    )


def fold(image: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """``(image, None)``, or for ``B > 1`` images and one source ``(image as (1, B * C, ...),
    (B, C))`` to give :func:`unfold`."""
    if source.shape[0] == 1 and image.shape[0] > 1:
        batch, channels = image.shape[:2]
        return image.reshape(1, batch * channels, *image.shape[2:]), (batch, channels)
    return image, None


def unfold(out: torch.Tensor, folded: tuple[int, int] | None) -> torch.Tensor:
    """Undo :func:`fold` on the result ``(1, B * C, ...)`` -> ``(B, C, ...)``."""
    return out if folded is None else out.reshape(*folded, *out.shape[2:])
