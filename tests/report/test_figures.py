"""The per-neuron attribution grid (figures/neuron_<id>.png): each map drawn over its image, and no title over
another axes or title (issue 28)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sharedattr.report.figures import GridRows, attribution_grids, grey_base, map_alpha, neuron_grid, symmetric_scale

METHODS = ("parallel_backprop", "parallel_backprop#2", "saliency")


def grid_of(rows: int = 3, size: int = 12) -> tuple[GridRows, dict]:
    g = torch.Generator().manual_seed(0)
    pairs = [
        SimpleNamespace(neuron=0, driver=2 * i, reference=2 * i + 1, similarity=0.5 + 0.1 * i) for i in range(rows)
    ]
    drivers, references = torch.rand(rows, 3, size, size, generator=g), torch.rand(rows, 1, size, size, generator=g)
    maps = {m: {"driver": torch.randn(rows, size, size, generator=g)} for m in METHODS}
    for m in METHODS[:2]:  # pairwise methods: a reference map too
        maps[m]["reference"] = torch.randn(rows, size, size, generator=g)
    ids = [f"stimulus_with_a_long_id_{k:03d}" for k in range(2 * rows)]
    return GridRows(list(range(rows)), pairs, drivers, references, ids), maps


def overlapping_titles(fig) -> list[tuple[str, str]]:
    """Every (title, other) whose drawn extents overlap: a title over another axes' image or another title."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    titles = [(ax, ax.title) for ax in fig.axes if ax.get_title()]
    boxes = [(f"title {t.get_text()!r}", ax, t.get_window_extent(renderer)) for ax, t in titles]
    boxes += [(f"axes {k}", ax, ax.get_window_extent(renderer)) for k, ax in enumerate(fig.axes)]
    if fig._suptitle is not None:
        boxes.append(("suptitle", None, fig._suptitle.get_window_extent(renderer)))
    out = []
    for name, owner, box in boxes[: len(titles)]:
        for other, other_owner, other_box in boxes:
            if other == name or other_owner is owner:  # a title sits on its own axes' edge
                continue
            if box.overlaps(other_box):
                out.append((name, other))
    return out


def test_each_map_is_drawn_over_its_image_in_grey():
    grid, maps = grid_of()
    fig = neuron_grid(grid, maps, "neuron n0")
    columns = 2 + sum(len(m) for m in maps.values())
    assert len(fig.axes) == 3 * columns, "one row per pair: driver, reference, then every map"
    for row in range(3):
        axes = fig.axes[row * columns : (row + 1) * columns]
        assert [len(ax.images) for ax in axes] == [1, 1] + [2] * (columns - 2), "each map over its image"
        assert axes[0].get_title().startswith("driver\n") and axes[1].get_title().startswith("reference\n")
        col = 2
        for method in METHODS:
            for which, images in (("driver", grid.drivers), ("reference", grid.references)):
                if which not in maps[method]:
                    continue
                base, layer = axes[col].images
                assert axes[col].get_title() == f"{method}\n{which} map"
                np.testing.assert_allclose(base.get_array(), grey_base(images[row]))
                assert base.get_cmap().name == "gray" and layer.get_cmap().name == "bwr"
                alpha = layer.get_alpha()
                assert (
                    isinstance(alpha, np.ndarray) and alpha.shape == (12, 12) and 0 <= alpha.min() < alpha.max() <= 0.9
                )
                m = maps[method][which][row].numpy()
                scale = symmetric_scale([maps[method][w][row] for w in maps[method]])  # one per pair and method
                assert layer.norm.vmin == -layer.norm.vmax, "a symmetric scale"
                np.testing.assert_allclose(layer.get_array(), np.clip(m / scale, -1, 1), rtol=1e-6)
                np.testing.assert_allclose(alpha, map_alpha(m, scale), rtol=1e-6)
                col += 1


def test_no_title_overlaps_another_axes_or_title():
    grid, maps = grid_of(rows=4)
    fig = neuron_grid(grid, maps, "neuron n0")
    assert overlapping_titles(fig) == []
    # the check can fail: the same figure frozen in its layout and pressed to half its height overlaps
    fig.set_layout_engine("none")
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height / 2)
    assert overlapping_titles(fig), "titles pressed onto the row above are found"


def test_one_png_per_neuron(tmp_path):
    grid, maps = grid_of(rows=2)
    pairs = [SimpleNamespace(**{**vars(p), "neuron": k}) for k, p in enumerate(grid.pairs)]
    paths = attribution_grids(pairs, grid.drivers, grid.references, maps, ["a", "b"], grid.stimulus_ids, tmp_path, 30)
    assert [p.name for p in paths] == ["neuron_a.png", "neuron_b.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
