"""The report's own small figures, as PNG bytes: fit quality bars, category selectivity, image thumbnails.

Figures are plain :class:`matplotlib.figure.Figure` objects (Agg rendering, no pyplot state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from ..figures import figure_png
from .selectivity import Selectivity

DPI = 100
MAX_BARS = 40
HIGHLIGHT, MUTED = "#3867d6", "#b8c2d6"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def fit_bars(neuron_ids: Sequence[str], test_r: Sequence[float], explained: Collection[str]) -> bytes:
    """Held-out r per neuron, best first (explained neurons highlighted); a histogram for many neurons."""
    r = np.asarray(test_r, dtype=float)
    if len(r) > MAX_BARS:
        fig, ax = _figure(6.0, 2.6)
        ax.hist(r[np.isfinite(r)], bins=30, color=HIGHLIGHT)
        ax.set(xlabel="held-out Pearson r", ylabel="neurons", title=f"held-out r of {len(r)} neurons")
        return figure_png(fig, DPI)
    order = np.argsort(-np.nan_to_num(r, nan=-np.inf))
    fig, ax = _figure(6.0, 0.6 + 0.28 * len(r))
    y = np.arange(len(r))
    ax.barh(y, np.nan_to_num(r[order]), color=[HIGHLIGHT if neuron_ids[i] in explained else MUTED for i in order])
    ax.set_yticks(y, [neuron_ids[i] for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    for yi, i in zip(y, order):
        if math.isfinite(r[i]):
            ax.text(max(r[i], 0) + 0.01, yi, f"{r[i]:.2f}", va="center", fontsize=7)
    ax.set_xlim(min(0.0, float(np.nanmin(r)) - 0.05) if np.isfinite(r).any() else 0, 1.08)
    ax.set_xlabel("held-out Pearson r (blue: explained neurons)")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig, DPI)


def selectivity_bars(sel: Selectivity, neurons: Sequence[int]) -> bytes:
    """Mean response (± sem over stimuli) per category, grouped by neuron; the preferred category outlined."""
    k = len(sel.categories)
    fig, ax = _figure(min(11.0, 1.6 + 0.55 * k * len(neurons)), 2.8)
    width = 0.8 / k
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for j, cat in enumerate(sel.categories):
        x = np.arange(len(neurons)) + (j - (k - 1) / 2) * width
        ax.bar(x, sel.means[neurons, j], width, yerr=np.nan_to_num(sel.sems[neurons, j]), capsize=2,
               color=palette(j % 10), label=cat,
               edgecolor=["black" if sel.preferred[n] == cat else "none" for n in neurons], linewidth=1.2)
    ax.set_xticks(np.arange(len(neurons)),
                  [f"{sel.neuron_ids[n]}\nd'={sel.dprime[n]:.2f}" for n in neurons], fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel("mean response")
    ax.legend(fontsize=8, frameon=False, ncols=min(k, 6), loc="upper center", bbox_to_anchor=(0.5, 1.18))
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig, DPI)


def png(rgb: np.ndarray, max_size: int = 112) -> bytes:
    """An ``[H, W]`` or ``[H, W, 3]`` array in [0, 1] as a PNG, shrunk (box filter) to at most ``max_size`` px.

    Small images keep their pixels; the page scales them up (``image-rendering: pixelated``).
    """
    from PIL import Image

    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    if max(im.size) > max_size:
        factor = max_size / max(im.size)
        im = im.resize((max(1, round(im.size[0] * factor)), max(1, round(im.size[1] * factor))), Image.BOX)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail(image: Tensor, max_size: int = 112) -> bytes:
    """A ``[C, H, W]`` image in [0, 1] as a PNG (grey for one channel)."""
    x = image.detach().float().cpu().clamp(0, 1)
    return png(x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy(), max_size)


def overlay_png(image: Tensor | None, attribution: Tensor, scale: float) -> bytes:
    """``attribution`` ``[H, W]`` over ``image`` as a PNG (see :func:`sharedattr.figures.overlay`)."""
    from ..figures import overlay

    return png(overlay(image, attribution, scale))


def symmetric_scale(maps: Sequence[Tensor], percentile: float = 99.0) -> float:
    """The ``percentile`` of ``|map|`` over ``maps`` (each ``[H, W]``): one colour scale shared by them."""
    values = torch.cat([m.detach().flatten().abs().float() for m in maps])
    if not values.numel():
        return 1.0
    scale = float(torch.quantile(values, percentile / 100)) if values.numel() <= 16_000_000 else float(values.max())
    return scale or float(values.max()) or 1.0
