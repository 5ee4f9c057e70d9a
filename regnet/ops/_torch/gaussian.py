"""Reference backend for ``gaussian_smooth``: separable Gaussian filtering as SciPy's.

Matches ``scipy.ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)`` applied to
each channel: kernel radius ``int(truncate * sigma + 0.5)``, normalised sampled Gaussian,
the boundary extended per SciPy's ``mode``. Each axis pass gathers a padded copy (any pad
width, also wider than the axis) and convolves it; the backward pass is the adjoint: the
transposed convolution (for the symmetric kernel, a convolution of the zero-padded gradient,
which is much faster than ``conv_transpose`` on the CPU) followed by a scatter-add of the
padded gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def radius(sigma: float, truncate: float) -> int:
    return int(truncate * float(sigma) + 0.5)


def kernel1d(sigma: float, truncate: float, like: torch.Tensor) -> torch.Tensor:
    r = radius(sigma, truncate)
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=like.device)
    k = torch.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return (k / k.sum()).to(like.dtype)


def pad_index(n: int, r: int, mode: str, device) -> torch.Tensor:
    """Indices into an axis of length ``n`` for positions ``-r .. n - 1 + r`` under SciPy's
    boundary ``mode``; ``n`` (one past the end) stands for a zero (mode ``constant``)."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    if mode == "reflect":  # d c b a | a b c d | d c b a
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":  # d c b | a b c d | c b a
        if n == 1:
            return torch.zeros_like(i)
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    return torch.where((i < 0) | (i >= n), torch.full_like(i, n), i)  # constant


def _pad(x, axis, r, mode):
    n = x.shape[axis]
    index = pad_index(n, r, mode, x.device)
    if mode == "constant":
        zero = torch.zeros_like(x.narrow(axis, 0, 1))
        x = torch.cat([x, zero], dim=axis)
    return x.index_select(axis, index)


def _unpad(g, axis, n, r, mode):
    """Adjoint of ``_pad``: scatter-add the padded gradient back onto the ``n`` samples."""
    index = pad_index(n, r, mode, g.device)
    shape = list(g.shape)
    shape[axis] = n + 1  # slot ``n`` collects what fell on the zero padding
    out = torch.zeros(shape, dtype=g.dtype, device=g.device).index_add_(axis, index, g)
    return out.narrow(axis, 0, n)


def _weight(k, ndim, axis):
    shape = [1, 1] + [1] * ndim
    shape[2 + axis] = k.numel()
    return k.view(shape)


def _as_single_channel(x):
    return x.reshape(-1, 1, *x.shape[2:])


def gaussian_smooth_forward(x, sigma, mode, truncate):
    """``x``: ``(B, C, *spatial)``; ``sigma``: one float per spatial axis (voxels)."""
    ndim = x.dim() - 2
    y = _as_single_channel(x)
    for axis, s in enumerate(sigma):
        if s > 0:
            r = radius(s, truncate)
            y = _CONV[ndim](_pad(y, 2 + axis, r, mode), _weight(kernel1d(s, truncate, y), ndim, axis))
    return y.reshape(x.shape)


def gaussian_smooth_backward(grad, sigma, mode, truncate):
    ndim = grad.dim() - 2
    g = _as_single_channel(grad)
    for axis in reversed(range(ndim)):
        s = sigma[axis]
        if s > 0:
            r = radius(s, truncate)
            padding = [0] * ndim
            padding[axis] = 2 * r
            padded = _CONV[ndim](g, _weight(kernel1d(s, truncate, g), ndim, axis), padding=padding)
            g = _unpad(padded, 2 + axis, g.shape[2 + axis], r, mode)
    return g.reshape(grad.shape)
