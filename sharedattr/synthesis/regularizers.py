"""Image regularisers for pixel-space synthesis, one value per image ``[B]`` (differentiable)."""

from __future__ import annotations

import torch
from torch import Tensor

from sharedattr.synthesis.preprocess import GREY


def total_variation(x: Tensor, squared: bool = False) -> Tensor:
    """Total variation of ``[B, C, H, W]`` → ``[B]``: ``mean |Δ_y x| + mean |Δ_x x|`` over neighbour pairs.

    ``Δ_y``/``Δ_x`` are differences of vertically/horizontally adjacent pixels (per channel);
    ``squared`` uses squared differences. A direction with a single row/column adds 0.
    Means, not sums, so a weight carries over between image sizes.
    """
    tv = x.new_zeros(x.shape[0])
    for dim in (-2, -1):
        if x.shape[dim] > 1:
            diff = x.diff(dim=dim).flatten(1)
            tv = tv + (diff.square() if squared else diff.abs()).mean(1)
    return tv


def lp_norm(x: Tensor, p: float = 2.0, centre: float = GREY) -> Tensor:
    """``‖x − centre‖_p`` of each image of ``[B, ...]`` → ``[B]`` (pixel units; ``centre``: mid-grey)."""
    return torch.linalg.vector_norm((x - centre).flatten(1), ord=p, dim=1)
