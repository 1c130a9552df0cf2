"""Fit synthesised images to a model's input: size, channels and a fixed contrast norm.

A synthesizer makes images at its own resolution (a diffusion prior's ``sample_size``,
say); every model that scores them, the one optimised on or another evaluator, sees them
through :func:`fit_to_model`. All functions are differentiable.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

GREY = 0.5  # mid-grey: the centre of the [0, 1] pixel range


def model_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of a model's input, from its ``in_channels`` and ``input_size``."""
    h, w = model.input_size
    return int(model.in_channels), int(h), int(w)


def to_channels(images: Tensor, channels: int) -> Tensor:
    """``[B, C, H, W]`` → ``[B, channels, H, W]``: grey → RGB by repetition, RGB → grey by luminance."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels (only 1 ↔ 3)")


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of ``[B, C, H, W]`` to ``size`` ``(H, W)``."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def fix_norm(images: Tensor, norm: float) -> Tensor:
    """Rescale each image's contrast so that ``‖x − 0.5‖₂ = norm`` (pixel units of [0, 1])."""
    centred = images - GREY
    scale = norm / centred.flatten(1).norm(dim=1).clamp(min=1e-12)
    return GREY + centred * scale.view(-1, *([1] * (images.dim() - 1)))


def fit_to_model(images: Tensor, model: nn.Module, *, grayscale: bool = False, norm: float | None = None) -> Tensor:
    """Images ``[B, C, H, W]`` in [0, 1] → the model's input ``[B, C_m, H_m, W_m]``.

    ``grayscale`` first reduces colour images to luminance (then repeats it to the model's
    channels); ``norm`` then fixes the contrast norm (see :func:`fix_norm`), after resizing.
    """
    channels, h, w = model_input_shape(model)
    x = images
    if grayscale and x.shape[1] != 1:
        x = to_channels(x, 1)
    x = resize(to_channels(x, channels), (h, w))
    return fix_norm(x, norm) if norm is not None else x
