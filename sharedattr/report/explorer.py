"""The data of the report's client-side explorer: every map stored once, quantised, as a compact PNG.

The explorer (``templates/explorer.js``) draws only the maps a reader chooses (one pair, the methods ticked), so a
report of 100 neurons × 3 drivers × 11 methods stays usable. Each map is stored once in the page's inline JSON as the
base64 of a greyscale 8-bit PNG: the map divided by its colour scale (:func:`sharedattr.report.figures.symmetric_scale`,
shared by a method's driver and reference map of a pair), clipped to [-1, 1] and quantised to
``q = 128 + round(127 · t)`` (zero is exactly 128). The browser colours it blue (< 0) / red (> 0), opacity growing
with ``|t|`` (as :func:`sharedattr.report.figures.overlay` does), over the stimulus.

Maps larger than :data:`MAP_SIDE` are shrunk (box filter), and the side is lowered further so that the raw pixels of
all maps stay within :data:`MAP_PIXEL_BUDGET`: the page's size is bounded whatever the number of pairs and methods.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from torch import Tensor

MAP_SIDE = 64
"""The longest side, in pixels, of a stored map (a larger map is shrunk; a smaller one keeps its pixels)."""
MAP_PIXEL_BUDGET = 32_000_000
"""The most raw map pixels (one byte each, before PNG compression) a report stores; above it every map is shrunk."""
MIN_MAP_SIDE = 16
"""The smallest side :func:`map_side` shrinks maps to, however many there are."""
NEUTRAL = 128
"""The quantised value of a zero attribution; ``q = NEUTRAL + round(127 · t)`` for ``t`` in [-1, 1]."""


def map_side(n_maps: int, native: int, side: int = MAP_SIDE, budget: int = MAP_PIXEL_BUDGET) -> int:
    """The longest side at which ``n_maps`` maps of longest side ``native`` are stored: at most ``native`` and
    ``side``, and small enough that ``n_maps · side²`` stays within ``budget`` (but not below :data:`MIN_MAP_SIDE`).

    >>> map_side(24, 64), map_side(6600, 224), map_side(1_000_000, 64)
    (64, 64, 16)
    """
    fitting = math.isqrt(budget // max(n_maps, 1))
    return max(1, min(native, side, max(fitting, MIN_MAP_SIDE)))


def quantise(attribution: Tensor, scale: float) -> np.ndarray:
    """``attribution`` ``[H, W]`` divided by ``scale`` (> 0; 1 otherwise), clipped to [-1, 1], as ``uint8`` ``[H, W]``
    ``128 + round(127 · t)``; NaN reads as 0.

    >>> import torch
    >>> quantise(torch.tensor([[-2.0, 0.0, 0.5]]), 1.0).tolist()
    [[1, 128, 192]]
    """
    m = np.nan_to_num(attribution.detach().float().cpu().numpy(), nan=0.0)
    t = np.clip(m / (scale if scale > 0 else 1.0), -1.0, 1.0)
    return (NEUTRAL + np.round(127 * t)).astype(np.uint8)


def map_png(attribution: Tensor, scale: float, side: int = MAP_SIDE) -> bytes:
    """:func:`quantise` d ``attribution`` ``[H, W]`` as a greyscale PNG whose longest side is at most ``side``
    (shrunk with a box filter)."""
    from PIL import Image

    im = Image.fromarray(quantise(attribution, scale))  # uint8 [H, W]: greyscale
    if max(im.size) > side:
        factor = side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * factor)), max(1, round(im.size[1] * factor))), Image.BOX)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def b64(png: bytes) -> str:
    """PNG bytes as base64 text (the explorer prefixes ``data:image/png;base64,``)."""
    return base64.b64encode(png).decode("ascii")
