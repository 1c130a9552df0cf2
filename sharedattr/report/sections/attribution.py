"""5. Attribution maps: the explorer. Choose a neuron, one of its driver/reference pairs and the methods shown side by
side; each method's driver and reference map over the images, with overlay and opacity controls, and the pair's
scores under them.

Every map is stored once in the page's inline JSON (:mod:`sharedattr.report.explorer`: quantised greyscale PNGs) and
drawn by ``templates/explorer.js`` only when chosen, so the page stays usable for 100 neurons × 3 drivers × 11 methods.
The stimulus thumbnails are stored once, in the pairs section's data (:func:`sharedattr.report.sections.pairs.pairs`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sharedattr.report import explorer
from sharedattr.report import figures as plots
from sharedattr.report.html import num
from sharedattr.report.reading import arrow
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind
from sharedattr.report.stats import PairKey
from sharedattr.runtime.run_files import MAP_IMAGES, Row, shown_rank

SHOWN_METHODS = 12
"""The explorer ticks the first this many methods when the page opens; the reader ticks the others."""


def pair_maps(maps: dict[str, dict[str, Tensor]], i: int, side: int) -> list[list[str | None]]:
    """Pair ``i``'s maps: per method, ``[driver, reference]`` as base64 quantised PNGs (None where not computed),
    both on the pair's one colour scale (the 99th percentile of ``|map|`` over the two)."""
    out = []
    for by_image in maps.values():
        scale = plots.symmetric_scale([m[i] for m in by_image.values()])
        out.append(
            [
                explorer.b64(explorer.map_png(by_image[which][i], scale, side)) if which in by_image else None
                for which in MAP_IMAGES
            ]
        )
    return out


def pair_scores(ctx: Context, pair: Row, methods: list[str], metrics: list[str]) -> list[list[list[str]]]:
    """The values of ``pair`` (a row of ``pairs.csv``) in ``results.csv`` as the page shows them: per method, per
    image of :data:`MAP_IMAGES`, per metric (``–`` where none)."""
    values = ctx.run.pair_values or {}
    key: PairKey = (pair["neuron"], pair["driver"], pair["reference"], str(pair["rank"]))
    return [
        [[num(values.get((method, which, metric), {}).get(key)) for metric in metrics] for which in MAP_IMAGES]
        for method in methods
    ]


def _definition(ctx: Context, method: str) -> str:
    """``label = name(changed params) (control: …)`` for the explorer's card, or "" when it would say no more than the
    label (a method at its defaults, not a control)."""
    definition = ctx.components.definition(method)
    return "" if definition == method or definition.endswith("()") else definition


def explorer_data(ctx: Context, maps: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
    """The explorer's inline JSON: methods and metrics, neurons with their pairs (rows of ``pairs.csv``), and per
    pair its maps and scores. Stimuli are referred to by id (their thumbnails are the pairs section's)."""
    pairs = ctx.run.pairs or []
    methods = list(maps)
    summary = ctx.run.summary or []
    metrics = list(dict.fromkeys(s.metric for s in summary))
    higher = {s.metric: s.higher_is_better for s in summary}
    shapes = [t.shape[1:] for by_image in maps.values() for t in by_image.values()]
    n_maps = sum(t.shape[0] for by_image in maps.values() for t in by_image.values())
    side = explorer.map_side(n_maps, max((max(s) for s in shapes), default=explorer.MAP_SIDE))
    return {
        "methods": [
            {
                "label": m,
                "pairwise": ctx.components.is_pairwise(m),
                "definition": _definition(ctx, m),
            }
            for m in methods
        ],
        "images": list(MAP_IMAGES),
        "encoding": {  # how explorer.js reads a map's samples back (sharedattr.report.explorer)
            "neutral": explorer.NEUTRAL,
            "levels": explorer.LEVELS,
            "decoded_step": 255 // (2**explorer.BITS - 1),
        },
        "metrics": [{"label": m, "arrow": arrow(higher[m])} for m in metrics],
        "neurons": [{"id": n, "pairs": ctx.rows_of(n)} for n in ctx.neurons],
        "pairs": [
            {
                "neuron": p["neuron"],
                "driver": p["driver"],
                "reference": p["reference"],
                "rank": shown_rank(p["rank"]),
                "category": p["driver_category"],
                "response": num(p["driver_response"]),
                "similarity": num(p["similarity"]),
                "maps": pair_maps(maps, i, side),
                "scores": pair_scores(ctx, p, methods, metrics),
            }
            for i, p in enumerate(pairs)
        ],
    }


def attribution(ctx: Context) -> Section:
    """The explorer: controls (neuron, pair, methods, overlay, opacity) rendered here, maps drawn in the browser."""
    maps, why = ctx.maps
    if maps is None:
        return SECTION.empty(why)
    _, _, img_why = ctx.pair_images
    data = explorer_data(ctx, maps)
    return SECTION.section(
        {
            "why": f"{img_why}; maps are drawn without the images." if img_why else None,
            "methods": [{"index": i, "shown": i < SHOWN_METHODS, **m} for i, m in enumerate(data["methods"])],
            "neurons": [{"index": i, "id": n["id"], "pairs": len(n["pairs"])} for i, n in enumerate(data["neurons"])],
            "n_pairs": len(data["pairs"]),
            "data": data,
        },
    )


SECTION = SectionKind("attribution", "Attribution maps", attribution)
