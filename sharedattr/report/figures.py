"""Every matplotlib figure of sharedattr, as PNG files or bytes (Agg backend, nothing shown on screen).

- a run's figures (written by the stages): held-out fit quality, one attribution grid per
  neuron, image grids, the synthesis comparison;
- the report's small figures (inlined into ``report.html``): fit bars, category selectivity,
  image thumbnails and attribution overlays.

Images are ``[C, H, W]`` in [0, 1] (grey for one channel); maps ``[H, W]``, drawn blue (< 0) /
red (> 0) on one symmetric colour scale per driver/reference pair.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from sharedattr.report.selectivity import Selectivity
from sharedattr.runtime.io import atomic_write_bytes
from sharedattr.runtime.run_files import MAP_IMAGES, neuron_figure


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


def fit_figure(
    test_r: Tensor,
    predicted: Tensor,
    measured: Tensor,
    neuron_ids: Sequence[str],
    path: Path,
    dpi: int = 120,
    n_best: int = 3,
) -> Path:
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


def neuron_figure_name(neuron_id: str) -> str:
    """``neuron_<id>.png`` for a short id that is safe in a file name (ASCII letters, digits, ``-_.``); otherwise the
    sanitised id, cut to a bounded length, plus a digest of the original, so that ``a/b`` and ``a_b`` never share a
    file and a 300-character id gets a valid name (:func:`sharedattr.runtime.run_files.neuron_figure`)."""
    return neuron_figure(neuron_id)


def attribution_grids(
    pairs: Sequence[Any],
    drivers: Tensor,
    references: Tensor,
    maps: Mapping[str, Mapping[str, Tensor]],
    neuron_ids: Sequence[str],
    stimulus_ids: Sequence[str],
    folder: Path,
    dpi: int = 120,
) -> list[Path]:
    """One PNG per neuron (:func:`neuron_grid`), named by :func:`neuron_figure_name` in ``folder``.

    ``pairs`` (each with ``neuron``, ``driver``, ``reference`` indices and ``similarity``), ``drivers``/``references``
    ``[P, C, H, W]`` and ``maps[method][image]`` ``[P, H, W]`` are aligned; returns the paths written.
    """
    by_neuron: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        by_neuron.setdefault(p.neuron, []).append(i)
    paths = []
    for n, items in by_neuron.items():
        fig = neuron_grid(GridRows(items, pairs, drivers, references, stimulus_ids), maps, f"neuron {neuron_ids[n]}")
        paths.append(_save(fig, folder / neuron_figure_name(neuron_ids[n]), dpi))
    return paths


class GridRows(NamedTuple):
    """The pairs of one neuron's grid: ``rows`` (indices into ``pairs``), ``pairs`` (each with ``driver``,
    ``reference`` indices into ``stimulus_ids`` and ``similarity``), the pair images ``drivers``/``references``
    ``[P, C, H, W]`` in [0, 1], and ``stimulus_ids``."""

    rows: Sequence[int]
    pairs: Sequence[Any]
    drivers: Tensor
    references: Tensor
    stimulus_ids: Sequence[str]


def neuron_grid(grid: GridRows, maps: Mapping[str, Mapping[str, Tensor]], title: str) -> Any:
    """One neuron's attribution grid as a matplotlib ``Figure`` (constrained layout: no title overlaps another
    axes or title): one row per pair of ``grid.rows``; columns: the driver and reference images, then for each
    method its driver map and, where computed, its reference map, each drawn over its image (the image in grey
    underneath, the map in blue (< 0) / red (> 0) with opacity growing with ``|map|``, as :func:`overlay`).

    Within a row, a method's two maps share one symmetric colour scale (:func:`symmetric_scale`), so the two
    images' evidence is directly comparable. ``maps[method][image]`` is ``[P, H, W]``, aligned with ``grid.pairs``.

    >>> import torch
    >>> from types import SimpleNamespace
    >>> pair = SimpleNamespace(driver=0, reference=1, similarity=0.5)
    >>> images = torch.rand(1, 3, 8, 8)
    >>> grid = GridRows([0], [pair], images, images, ["a", "b"])
    >>> fig = neuron_grid(grid, {"saliency": {"driver": torch.rand(1, 8, 8)}}, "neuron n")
    >>> len(fig.axes), len(fig.axes[2].images)  # driver, reference, one map: over its image
    (3, 2)
    """
    from matplotlib.figure import Figure

    columns = [(label, which) for label, m in maps.items() for which in MAP_IMAGES if which in m]
    cols = 2 + len(columns)
    fig = Figure(figsize=(1.9 * cols, 2.2 * len(grid.rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(grid.rows), cols, squeeze=False)
    for row, i in enumerate(grid.rows):
        p = grid.pairs[i]
        images = {"driver": grid.drivers[i], "reference": grid.references[i]}
        axes[row, 0].imshow(_image(images["driver"]), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"driver\n{grid.stimulus_ids[p.driver]}", fontsize=7)
        axes[row, 1].imshow(_image(images["reference"]), cmap="gray", vmin=0, vmax=1)
        axes[row, 1].set_title(f"reference\n{grid.stimulus_ids[p.reference]}, sim {p.similarity:.2f}", fontsize=7)
        for col, (label, which) in enumerate(columns, start=2):
            scale = symmetric_scale([m[i] for m in maps[label].values()])
            draw_overlay(images[which], maps[label][which][i], axes[row, col], alpha=None, scale=scale)
            axes[row, col].set_title(f"{label}\n{which} map", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(
        f"{title}: driver | reference | each method's maps over the images (blue < 0 < red; one scale per pair "
        "and method)",
        fontsize=8,
    )
    return fig


def grey_base(image: Tensor) -> np.ndarray:
    """The image ``[C, H, W]`` in [0, 1] as the lightened grey ``[H, W]`` a map is drawn over: ``0.3 + 0.6 ·
    grey`` (the mean over channels), so both colours of the map stay visible on dark and light pixels."""
    x = image.detach().float().cpu().clamp(0, 1)
    return 0.3 + 0.6 * (x.mean(0).numpy() if x.shape[0] > 1 else x[0].numpy())


def map_alpha(m: np.ndarray, scale: float) -> np.ndarray:
    """The opacity of a map ``[H, W]`` drawn over its image: ``0.9 · min(|m| / scale, 1) ^ 0.6``."""
    scale = scale if scale > 0 else 1.0
    return np.clip(np.abs(m) / scale, 0, 1) ** 0.6 * 0.9


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
    from matplotlib import colormaps

    m = attribution.detach().float().cpu().numpy()
    base = np.ones(m.shape) if image is None else grey_base(image)
    scale = scale if scale > 0 else 1.0
    colour = colormaps["bwr"](np.clip(m / scale, -1, 1) * 0.5 + 0.5)[..., :3]
    alpha = map_alpha(m, scale)[..., None]
    return base[..., None] * (1 - alpha) + colour * alpha


# -- synthesis ----------------------------------------------------------------------------------
ROLES = ("train", "val", "cross", "floor")


def role_means(summary: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per synthesizer, per role: the mean relative activation over that role's evaluators, and its sem.

    Several evaluators of one role (e.g. two val seeds) are pooled by averaging their means
    (weighted by their counts), the sem likewise combined.
    """
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for synth in dict.fromkeys(r["synthesizer"] for r in summary):
        out[synth] = {}
        for role in ROLES:
            group = [
                r
                for r in summary
                if r["synthesizer"] == synth and r["role"] == role and math.isfinite(r["mean_relative"]) and r["n"] > 0
            ]
            if not group:
                continue
            n = sum(r["n"] for r in group)
            mean = sum(r["mean_relative"] * r["n"] for r in group) / n
            sems = [r["sem_relative"] for r in group if math.isfinite(r["sem_relative"])]
            sem = math.sqrt(sum(s * s for s in sems)) / len(sems) if sems else math.nan
            out[synth][role] = (mean, sem)
    return out


def comparison_figure(summary: Sequence[dict[str, Any]], path: Path, dpi: int = 120) -> Path:
    """Left: mean relative activation (± sem) on the train, val, cross and floor models, one bar per synthesizer.
    Right: wall seconds per neuron (all seeds), annotated with model and denoiser calls."""
    plt = _plt()
    means = role_means(summary)
    synths = list(means)
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(9.5, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(synths), 1)
    names = dict(
        zip(ROLES, ["train (optimised on)", "val (other seeds)", "cross (other model)", "floor (random features)"])
    )
    roles = [role for role in ROLES if role != "floor" or any(r["role"] == role for r in summary)]
    for i, synth in enumerate(synths):
        xs = [j + (i - (len(synths) - 1) / 2) * width for j in range(len(roles))]
        values = [means[synth].get(role, (math.nan, math.nan)) for role in roles]
        ax.bar(
            xs,
            [v[0] for v in values],
            width,
            yerr=[v[1] if math.isfinite(v[1]) else 0 for v in values],
            capsize=3,
            label=synth,
        )
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(range(len(roles)), [names[role] for role in roles], fontsize=8)
    ax.set_ylabel("response / best natural image")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("activation relative to the best natural image", fontsize=9)
    per_synth = {}
    for r in summary:
        if r["role"] == "train":
            per_synth[r["synthesizer"]] = r
    walls = [per_synth.get(s, {}).get("wall_s_per_neuron", math.nan) for s in synths]
    bars = ax_cost.barh(range(len(synths)), walls, color=[f"C{i}" for i in range(len(synths))])
    for bar, synth in zip(bars, synths):
        r = per_synth.get(synth, {})
        ax_cost.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" fwd {r.get('forward_calls', math.nan):.0f}, bwd {r.get('backward_calls', math.nan):.0f},"
            f" denoiser {r.get('denoiser_calls', math.nan):.0f}",
            va="center",
            fontsize=7,
        )
    ax_cost.set_yticks(range(len(synths)), synths, fontsize=8)
    ax_cost.set_xlabel("wall seconds per neuron")
    ax_cost.set_title("compute", fontsize=9)
    ax_cost.margins(x=0.6)
    fig.tight_layout()
    return _save(fig, path, dpi)


# -- the report's small figures -------------------------------------------------------------------
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
        ax.bar(
            x,
            sel.means[neurons, j],
            width,
            yerr=np.nan_to_num(sel.sems[neurons, j]),
            capsize=2,
            color=palette(j % 10),
            label=cat,
            edgecolor=["black" if sel.preferred[n] == cat else "none" for n in neurons],
            linewidth=1.2,
        )
    ax.set_xticks(
        np.arange(len(neurons)), [f"{sel.neuron_ids[n]}\nd'={sel.dprime[n]:.2f}" for n in neurons], fontsize=8
    )
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
    """``attribution`` ``[H, W]`` over ``image`` as a PNG (see :func:`overlay`)."""
    return png(overlay(image, attribution, scale))


def symmetric_scale(maps: Sequence[Tensor], percentile: float = 99.0) -> float:
    """The ``percentile`` of ``|map|`` over ``maps`` (each ``[H, W]``): one colour scale shared by them."""
    values = torch.cat([m.detach().flatten().abs().float() for m in maps])
    if not values.numel():
        return 1.0
    scale = float(torch.quantile(values, percentile / 100)) if values.numel() <= 16_000_000 else float(values.max())
    return scale or float(values.max()) or 1.0


# -- figures of a comparison, for users (sharedattr.plot) -----------------------------------------
SIGNS = ("all", "positive", "negative", "absolute")
"""Which part of a map :func:`draw_overlay` shows: signed, the positive or the negative part, or its magnitude."""
SIGN_COLOURS = {"all": "bwr", "positive": "Reds", "negative": "Blues", "absolute": "magma_r"}
"""The colour map of each sign (signed maps: blue < 0 < red, as in the report)."""


def signed_part(attribution: Tensor, sign: str) -> np.ndarray:
    """``attribution`` ``[H, W]`` as ``sign`` shows it (:data:`SIGNS`): ``all`` as is, ``positive``/``negative`` the
    magnitude of that part (0 elsewhere), ``absolute`` ``|attribution|``; a float64 array."""
    if sign not in SIGNS:
        raise ValueError(f"sign={sign!r}: use one of {', '.join(map(repr, SIGNS))}")
    m = attribution.detach().double().cpu().numpy()
    if sign == "positive":
        return np.clip(m, 0, None)
    if sign == "negative":
        return np.clip(-m, 0, None)
    return np.abs(m) if sign == "absolute" else m


def draw_overlay(
    image: Tensor | None,
    attribution: Tensor,
    ax: Any = None,
    *,
    sign: str = "all",
    alpha: float | None = 0.6,
    cmap: str | None = None,
    scale: float | None = None,
    title: str | None = None,
) -> tuple[Any, Any]:
    """Draw ``attribution`` ``[H, W]`` over ``image`` ``[C, H, W]`` in [0, 1] (grey for one channel; a heat map alone
    without one) on ``ax`` (a new figure's axes when None), in the style of Captum's ``visualize_image_attr``
    (``blended_heat_map``); return ``(figure, axes)``.

    ``sign`` (:data:`SIGNS`) picks what is drawn, in ``cmap`` (default per sign, :data:`SIGN_COLOURS`) at opacity
    ``alpha`` (None: an opacity that grows with the magnitude, :func:`map_alpha`, as the report's figures draw);
    values are divided by ``scale`` (default the 99th percentile of the drawn magnitudes, so that one outlier does
    not wash the map out; give one scale to compare maps) and clipped to [-1, 1] (``all``) or [0, 1]. The image is
    drawn as the lightened grey of :func:`grey_base`, stretched under the map when their sizes differ."""
    from matplotlib.figure import Figure

    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r}: give an opacity in [0, 1] (or None: by magnitude)")
    values = signed_part(attribution, sign)
    if scale is None:
        scale = symmetric_scale([torch.from_numpy(values)])
    fig = ax.figure if ax is not None else Figure(figsize=(3, 3))
    ax = ax if ax is not None else fig.add_subplot()
    extent = (-0.5, values.shape[1] - 0.5, values.shape[0] - 0.5, -0.5)  # the image under the map, at its size
    if image is not None:
        ax.imshow(grey_base(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=extent)
    low = -1.0 if sign == "all" else 0.0
    heat = np.clip(values / (scale if scale > 0 else 1.0), low, 1.0)
    opacity = 1.0 if image is None else map_alpha(heat, 1.0) if alpha is None else alpha
    ax.imshow(
        heat,
        cmap=cmap or SIGN_COLOURS[sign],
        vmin=low,
        vmax=1.0,
        alpha=opacity,
        interpolation="nearest",
        extent=extent,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return fig, ax


def pair_figure(
    images: tuple[Tensor, Tensor],
    maps: Mapping[str, tuple[Tensor, Tensor | None]],
    titles: tuple[str, str],
    *,
    sign: str = "all",
    alpha: float = 0.6,
    cmap: str | None = None,
) -> Any:
    """One driver/reference pair: the two ``images`` ``[C, H, W]`` (titled ``titles``) in the first row, then one row
    per method of ``maps`` (``{method: (driver map, reference map or None)}``, each ``[H, W]``) overlaid on them
    (:func:`draw_overlay`), the two maps of a row on one colour scale. Returns the matplotlib figure."""
    from matplotlib.figure import Figure

    rows = 1 + len(maps)
    fig = Figure(figsize=(4.6, 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for col, (image, title) in enumerate(zip(images, titles)):
        axes[0, col].imshow(_image(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, col].set_title(title, fontsize=8)
        axes[0, col].set_axis_off()
    for row, (method, pair) in enumerate(maps.items(), start=1):
        drawn = [torch.from_numpy(signed_part(m, sign)) for m in pair if m is not None]
        scale = symmetric_scale(drawn)
        for col, (image, attribution) in enumerate(zip(images, pair)):
            ax = axes[row, col]
            if attribution is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "not run on\nthe reference", ha="center", va="center", fontsize=7)
                continue
            draw_overlay(image, attribution, ax, sign=sign, alpha=alpha, cmap=cmap, scale=scale)
        axes[row, 0].set_ylabel(method, fontsize=8)
    return fig
