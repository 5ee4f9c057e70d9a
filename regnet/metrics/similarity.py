"""Similarity of two images over all voxels: global NCC (Pearson correlation) and MSE."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def global_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all voxels of two images (float64); NaN for a constant image."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


@torch.no_grad()
def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared difference of all voxels of two images (float64)."""
    return float(((a.double() - b.double()) ** 2).mean())
