"""Matplotlib figures (PNG, Agg backend): fit quality, attribution grids, image grids."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .io import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int) -> Path:
    return atomic_write_bytes(path, figure_png(fig, dpi))


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (tight bounding box); a pyplot figure is closed afterwards."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:
        _plt().close(fig)
    return buf.getvalue()


def _image(x: Tensor):
    """``[C, H, W]`` in [0, 1] → something ``imshow`` draws (grey for one channel)."""
    x = x.detach().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def fit_figure(test_r: Tensor, predicted: Tensor, measured: Tensor, neuron_ids: Sequence[str], path: Path,
               dpi: int = 120, n_best: int = 3) -> Path:
    """Distribution of held-out r, and predicted vs measured for the ``n_best`` best neurons."""
    plt = _plt()
    best = test_r.argsort(descending=True)[:n_best].tolist()
    fig, axes = plt.subplots(1, 1 + len(best), figsize=(3.2 * (1 + len(best)), 3))
    axes[0].hist(test_r.numpy(), bins=20, color="0.4")
    axes[0].set(xlabel="held-out Pearson r", ylabel="neurons", title="readout fit")
    axes[0].yaxis.get_major_locator().set_params(integer=True)
    for ax, n in zip(axes[1:], best):
        ok = ~torch.isnan(measured[:, n])
        ax.scatter(measured[ok, n].numpy(), predicted[ok, n].numpy(), s=8, alpha=0.7)
        ax.set(xlabel="measured", ylabel="predicted", title=f"{neuron_ids[n]}  r={float(test_r[n]):.2f}")
    fig.tight_layout()
    return _save(fig, path, dpi)


def attribution_grids(pairs: Sequence[Any], drivers: Tensor, references: Tensor,
                      maps: Mapping[str, Mapping[str, Tensor]], neuron_ids: Sequence[str],
                      stimulus_ids: Sequence[str], folder: Path, dpi: int = 120) -> list[Path]:
    """One PNG per neuron: rows = driver/reference pairs; columns = the two images, then per method its
    driver map and, where computed, its reference map, side by side.

    ``drivers``/``references`` ``[P, C, H, W]`` and ``maps[method][image]`` ``[P, H, W]`` are
    aligned with ``pairs``. Within a row, each method's driver and reference maps share one
    symmetric colour scale (blue < 0 < red), so the two images' evidence is directly comparable.
    """
    plt = _plt()
    paths = []
    by_neuron: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        by_neuron.setdefault(p.neuron, []).append(i)
    columns = [(label, which) for label, m in maps.items() for which in ("driver", "reference") if which in m]
    for n, items in by_neuron.items():
        cols = 2 + len(columns)
        fig, axes = plt.subplots(len(items), cols, figsize=(1.9 * cols, 2.1 * len(items)), squeeze=False)
        for row, i in enumerate(items):
            p = pairs[i]
            axes[row, 0].imshow(_image(drivers[i]), cmap="gray", vmin=0, vmax=1)
            axes[row, 0].set_title(f"driver {stimulus_ids[p.driver]}", fontsize=7)
            axes[row, 1].imshow(_image(references[i]), cmap="gray", vmin=0, vmax=1)
            axes[row, 1].set_title(f"ref {stimulus_ids[p.reference]}\nsim={p.similarity:.2f}", fontsize=7)
            for col, (label, which) in enumerate(columns, start=2):
                scale = max(float(m[i].abs().max()) for m in maps[label].values()) or 1.0
                axes[row, col].imshow(maps[label][which][i].numpy(), cmap="bwr", vmin=-scale, vmax=scale)
                axes[row, col].set_title(f"{label}\n{which}", fontsize=7)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"neuron {neuron_ids[n]}: driver | reference | maps (colour scale shared by each pair)",
                     fontsize=8)
        fig.tight_layout()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in neuron_ids[n])
        paths.append(_save(fig, folder / f"neuron_{safe}.png", dpi))
    return paths


def image_grid(tensors: Mapping[str, Tensor], path: Path, dpi: int = 120) -> Path:
    """Rows = entries of ``tensors`` (each ``[S, C, H, W]`` in [0, 1]); columns = their images."""
    plt = _plt()
    cols = max((t.shape[0] for t in tensors.values()), default=1)
    fig, axes = plt.subplots(len(tensors), cols, figsize=(2 * cols, 2 * len(tensors)), squeeze=False)
    for row, (label, imgs) in enumerate(tensors.items()):
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < imgs.shape[0]:
                ax.imshow(_image(imgs[col]), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(label, fontsize=7, loc="left")
    fig.tight_layout()
    return _save(fig, path, dpi)


def overlay(image: Tensor | None, attribution: Tensor, scale: float) -> Any:
    """An RGB array ``[H, W, 3]`` in [0, 1]: ``attribution`` ``[H, W]`` in blue (< 0) / red (> 0) over a
    lightened grey version of ``image`` ``[C, H, W]`` (white without one); opacity grows with
    ``|attribution| / scale`` (a symmetric scale, e.g. shared by a driver map and its reference map)."""
    import numpy as np
    from matplotlib import colormaps

    m = attribution.detach().float().cpu().numpy()
    if image is None:
        base = np.ones(m.shape)
    else:
        x = image.detach().float().cpu().clamp(0, 1)
        base = 0.3 + 0.6 * (x.mean(0).numpy() if x.shape[0] > 1 else x[0].numpy())
    scale = scale if scale > 0 else 1.0
    colour = colormaps["bwr"](np.clip(m / scale, -1, 1) * 0.5 + 0.5)[..., :3]
    alpha = (np.clip(np.abs(m) / scale, 0, 1) ** 0.6 * 0.9)[..., None]
    return base[..., None] * (1 - alpha) + colour * alpha

