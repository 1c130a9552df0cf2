"""Figures of a comparison, for your own notebooks and papers (matplotlib).

- :func:`overlay`: one attribution map over its image, in the style of Captum's ``visualize_image_attr``;
- :func:`show_pair`: one driver/reference pair of :func:`sharedattr.compare`'s result, each method's maps overlaid
  on both images, one row per method.

Both return matplotlib objects and never call ``pyplot.show``: in a notebook the returned figure displays itself;
elsewhere save it with ``fig.savefig("pair.png")``. They change no matplotlib backend. The drawing lives in
:mod:`sharedattr.report.figures`, beside the report's own figures; ``import sharedattr`` does not import this
module (``sharedattr.plot`` does, on first use).

Example::

    import sharedattr, sharedattr.plot

    result = sharedattr.compare(model, stimuli, responses=recorded, methods=["parallel_backprop", "saliency"],
                                return_maps=True)
    neuron, driver, _ = result.pairs[0]
    fig = sharedattr.plot.show_pair(result, neuron, driver)
    fig, ax = sharedattr.plot.overlay(result.images.drivers[0], result.maps["saliency"]["driver"][0], sign="positive")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from sharedattr.experiment.compare import Comparison
from sharedattr.report.figures import SIGNS, draw_overlay, pair_figure
from sharedattr.runtime.errors import UserError

__all__ = ["SIGNS", "overlay", "show_pair"]


def overlay(
    image: Tensor | None,
    attribution: Tensor,
    ax: Any = None,
    *,
    sign: str = "all",
    alpha: float = 0.6,
    cmap: str | None = None,
    scale: float | None = None,
    title: str | None = None,
) -> tuple[Any, Any]:
    """Draw ``attribution`` ``[H, W]`` over ``image`` ``[C, H, W]`` in [0, 1] on ``ax`` (a new figure when None);
    return ``(figure, axes)``, as Captum's ``visualize_image_attr(..., method="blended_heat_map")`` does.

    ``sign``: ``"all"`` (signed: blue < 0 < red), ``"positive"``, ``"negative"`` (the magnitude of that part) or
    ``"absolute"``; ``alpha``: the map's opacity over the image (``image=None`` draws the map alone); ``cmap``: a
    matplotlib colour map (default per sign); ``scale``: what ±1 of the colour scale means (default the 99th
    percentile of the drawn magnitudes; give the same scale to compare maps); ``title``: the axes' title.

    Example::

        table, maps = sharedattr.compare(model, stimuli, methods=["saliency"], return_maps=True)
        fig, ax = sharedattr.plot.overlay(stimuli.load_images((64, 64), 3, [0])[0], maps["saliency"]["driver"][0],
                                          sign="absolute", alpha=0.5)
        fig.savefig("saliency.png")
    """
    if sign not in SIGNS:
        raise UserError(f"overlay(sign={sign!r}): use one of {', '.join(map(repr, SIGNS))}")
    if image is not None and tuple(image.shape[-2:]) != tuple(attribution.shape[-2:]):
        raise UserError(
            f"overlay(): the image {tuple(image.shape)} and the attribution {tuple(attribution.shape)} differ in size; "
            "give the image as the method saw it (e.g. Comparison.images.drivers[k])"
        )
    return draw_overlay(image, attribution, ax, sign=sign, alpha=alpha, cmap=cmap, scale=scale, title=title)


def show_pair(
    result: Comparison,
    neuron: str,
    driver: str,
    methods: Sequence[str] | None = None,
    *,
    reference: str | None = None,
    sign: str = "all",
    alpha: float = 0.6,
    cmap: str | None = None,
) -> Any:
    """The pair of ``neuron`` and ``driver`` (and ``reference``, when the driver has several) from
    ``sharedattr.compare(..., return_maps=True)``: the driver and reference images in the first row, then one row
    per method of ``methods`` (default: every method of ``result``, in its order) with the method's maps overlaid
    on both images (:func:`overlay`; the two maps of a row on one colour scale; a single-image method run with
    ``on_reference=False`` leaves the reference empty). Returns the matplotlib figure.

    Example::

        result = sharedattr.compare(model, stimuli, responses=recorded, return_maps=True)
        neuron, driver, reference = result.pairs[0]
        fig = sharedattr.plot.show_pair(result, neuron, driver, methods=["parallel_backprop", "saliency"])
        fig.savefig("pair.png", dpi=150)
    """
    if not isinstance(result, Comparison):
        raise UserError(
            f"show_pair(result=...): expected what sharedattr.compare(..., return_maps=True) returns, got "
            f"{type(result).__name__}"
        )
    if sign not in SIGNS:
        raise UserError(f"show_pair(sign={sign!r}): use one of {', '.join(map(repr, SIGNS))}")
    methods = list(result.maps) if methods is None else list(methods)
    unknown = [m for m in methods if m not in result.maps]
    if unknown or not methods:
        raise UserError(
            f"show_pair(methods=...): {', '.join(map(repr, unknown)) or 'none given'}; the result has maps of "
            f"{', '.join(map(repr, result.maps))}"
        )
    k = result.pair_index(neuron, driver, reference)
    _, driver_id, reference_id = result.pairs[k]
    maps = {m: (result.maps[m]["driver"][k], _row(result.maps[m].get("reference"), k)) for m in methods}
    images = (result.images.drivers[k], result.images.references[k])
    titles = (f"driver {driver_id}", f"reference {reference_id}")
    fig = pair_figure(images, maps, titles, sign=sign, alpha=alpha, cmap=cmap)
    fig.suptitle(f"neuron {neuron}", fontsize=9)
    return fig


def _row(maps: Tensor | None, k: int) -> Tensor | None:
    """Row ``k`` of ``maps`` ``[P, H, W]``, or None where there are none."""
    return None if maps is None else maps[k]
