"""The data of the report's client-side explorer: every map stored once, quantised, as a compact PNG.

The explorer (``templates/explorer.js``) draws only the maps a reader chooses (one pair, the methods ticked), so a
report of 100 neurons × 3 drivers × 11 methods stays usable. Each map is stored once in the page's inline JSON as the
base64 of a 4-bit greyscale PNG: the map divided by its colour scale (:func:`sharedattr.report.figures.symmetric_scale`,
shared by a method's driver and reference map of a pair), clipped to [-1, 1] and quantised to :data:`LEVELS` steps a
sign, ``k = round(LEVELS · t)``, stored as ``NEUTRAL + k`` (zero is exactly :data:`NEUTRAL`). A PNG decoder (the
browser's, or PIL's) scales the 4-bit samples to 8 bits (× 17); the browser colours ``t = (v / 17 − NEUTRAL) / LEVELS``
blue (< 0) / red (> 0), opacity growing with ``|t|`` (as :func:`sharedattr.report.figures.overlay` does), over the
stimulus. Fifteen levels keep a map's shape and sign at the explorer's size and make its PNG a third of an 8-bit one's.

Maps larger than :data:`MAP_SIDE` are shrunk (area averaging) before they are quantised, and the side is lowered
further so that all maps together stay within :data:`MAP_PIXEL_BUDGET` pixels: the page's size is bounded whatever the
number of pairs and methods.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from torch import Tensor

MAP_SIDE = 64
"""The longest side, in pixels, of a stored map (a larger map is shrunk; a smaller one keeps its pixels)."""
MAP_PIXEL_BUDGET = 32_000_000
"""The most map pixels (half a byte each, before PNG compression) a report stores; above it every map is shrunk."""
MIN_MAP_SIDE = 16
"""The smallest side :func:`map_side` shrinks maps to, however many there are."""
BITS = 4
"""Bits per stored sample (PNG greyscale bit depth)."""
LEVELS = 7
"""Quantisation steps on each side of zero: a stored sample is ``NEUTRAL + round(LEVELS · t)``, ``t`` in [-1, 1]."""
NEUTRAL = 8
"""The stored sample of a zero attribution (samples run from ``NEUTRAL - LEVELS`` = 1 to ``NEUTRAL + LEVELS`` = 15)."""


def map_side(n_maps: int, native: int, side: int = MAP_SIDE, budget: int = MAP_PIXEL_BUDGET) -> int:
    """The longest side at which ``n_maps`` maps of longest side ``native`` are stored: at most ``native`` and
    ``side``, and small enough that ``n_maps · side²`` stays within ``budget`` (but not below :data:`MIN_MAP_SIDE`).

    >>> map_side(24, 64), map_side(6600, 224), map_side(1_000_000, 64)
    (64, 64, 16)
    """
    fitting = math.isqrt(budget // max(n_maps, 1))
    return max(1, min(native, side, max(fitting, MIN_MAP_SIDE)))


def shrunk(attribution: Tensor, side: int) -> Tensor:
    """``attribution`` ``[H, W]`` with its longest side at most ``side`` (area averaging, the aspect kept).

    >>> shrunk(torch.ones(224, 112), 64).shape
    torch.Size([64, 32])
    """
    h, w = attribution.shape
    if max(h, w) <= side:
        return attribution
    factor = side / max(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return torch.nn.functional.interpolate(attribution[None, None].float(), size=size, mode="area")[0, 0]


def quantise(attribution: Tensor, scale: float) -> np.ndarray:
    """``attribution`` ``[H, W]`` divided by ``scale`` (> 0; 1 otherwise), clipped to [-1, 1], as the stored samples
    ``NEUTRAL + round(LEVELS · t)`` (``uint8`` ``[H, W]``, 1 … 15); NaN reads as 0.

    >>> import torch
    >>> quantise(torch.tensor([[-2.0, 0.0, 0.5, 1.0]]), 1.0).tolist()
    [[1, 8, 12, 15]]
    """
    m = np.nan_to_num(attribution.detach().float().cpu().numpy(), nan=0.0)
    t = np.clip(m / (scale if scale > 0 else 1.0), -1.0, 1.0)
    return (NEUTRAL + np.round(LEVELS * t)).astype(np.uint8)


def map_png(attribution: Tensor, scale: float, side: int = MAP_SIDE) -> bytes:
    """``attribution`` ``[H, W]``, :func:`shrunk` to ``side`` and :func:`quantise` d, as a 4-bit greyscale PNG.

    >>> png = map_png(torch.randn(32, 32), 1.0)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png[24]  # PNG signature, bit depth 4
    (True, 4)
    """
    from PIL import Image

    im = Image.fromarray(quantise(shrunk(attribution.detach().float().cpu(), side), scale))  # uint8 [H, W]: grey
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True, bits=BITS)
    return buf.getvalue()


def b64(png: bytes) -> str:
    """PNG bytes as base64 text (the explorer prefixes ``data:image/png;base64,``).

    >>> b64(b"\\x89PNG")
    'iVBORw=='
    """
    return base64.b64encode(png).decode("ascii")
