"""Gradient preconditioners for pixel-space synthesis: Gaussian blur and Fourier (1/f^decay) damping.

Both map a gradient ``[B, C, H, W]`` to one of the same shape (any ``H``, ``W``, odd included)
and act on each image and channel separately. They are applied to ``x.grad`` before the
optimiser step, so the optimisation favours smooth, low-frequency changes of the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Preconditioner = Callable[[Tensor], Tensor]


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Depthwise Gaussian blur of ``[B, C, H, W]``, std ``sigma`` pixels (reflect padding; ``sigma <= 0``: identity).

    The kernel reaches ``⌈3σ⌉`` pixels (at least 1), cropped to fit images smaller than it;
    torchvision's ``gaussian_blur`` does the filtering.
    """
    if sigma <= 0:
        return x
    from torchvision.transforms.v2.functional import gaussian_blur as blur  # torchvision takes seconds to import

    radius = min(max(1, int(math.ceil(3 * sigma))), x.shape[-1] - 1, x.shape[-2] - 1)
    return blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def fourier_scale(
    height: int,
    width: int,
    decay: float,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-frequency gains ``[H, W // 2 + 1]`` (the ``rfft2`` layout): ``(f_min / max(f, f_min))^decay``.

    ``f = √(f_y² + f_x²)`` in cycles per pixel (from ``fftfreq``/``rfftfreq``) and
    ``f_min = 1 / max(H, W)``, the lowest non-zero frequency; the constant component gets
    the same gain as ``f_min``. The gains are normalised to a maximum of 1, so no frequency
    is amplified: a sinusoid of ``k`` cycles across a square image is damped by ``k^-decay``.
    """
    fy = torch.fft.fftfreq(height, device=device, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(width, device=device, dtype=dtype)[None, :]
    freq = torch.sqrt(fy**2 + fx**2)
    f_min = 1.0 / max(height, width)
    return (f_min / freq.clamp(min=f_min)) ** decay


def fourier_precondition(x: Tensor, decay: float) -> Tensor:
    """Damp each spatial frequency of ``[..., H, W]`` by :func:`fourier_scale` (``rfft2`` → scale → ``irfft2``).

    This is the decorrelated ("Fourier") preconditioning of Lucid and sinzlab/mei, applied
    to the gradient; ``decay = 0`` is the identity (up to float rounding).
    """
    h, w = x.shape[-2:]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32  # FFTs need float32/64
    spectrum = torch.fft.rfft2(x.to(dtype), norm="ortho")
    spectrum = spectrum * fourier_scale(h, w, decay, device=x.device, dtype=dtype)
    return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho").to(x.dtype)


def make_preconditioner(kind: str, *, blur_sigma: float = 1.0, fourier_decay: float = 1.0) -> Preconditioner:
    """``"blur"`` (:func:`gaussian_blur`), ``"fourier"`` (:func:`fourier_precondition`) or ``"none"`` (identity)."""
    if kind == "blur":
        return lambda g: gaussian_blur(g, blur_sigma)
    if kind == "fourier":
        return lambda g: fourier_precondition(g, fourier_decay)
    if kind == "none":
        return lambda g: g
    raise ValueError(f"unknown preconditioner {kind!r}; use 'blur', 'fourier' or 'none'")
