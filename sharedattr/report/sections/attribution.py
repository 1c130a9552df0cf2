"""5. Attribution maps: per neuron, its pairs as rows, and per method its driver and reference maps over them."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sharedattr.report import figures as plots
from sharedattr.report.html import num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Image, Section, SectionKind
from sharedattr.runtime.run_files import MAP_IMAGES


def attribution_rows(
    ctx: Context, neuron: str, maps: dict[str, dict[str, Tensor]], drivers: Tensor | None, references: Tensor | None
) -> list[dict[str, Any]]:
    """One neuron's grid rows: per pair, the two images with labels, then per method its driver and reference
    maps (None where not computed)."""
    rows = []
    for i in ctx.rows_of(neuron):
        p = ctx.run.pairs[i]
        labelled = (
            ("driver", drivers, f"{p['driver']}\nresponse {num(p['driver_response'])}"),
            ("reference", references, f"{p['reference']}\nsimilarity {num(p['similarity'])}"),
        )
        images = [
            (
                Image.of(plots.thumbnail(pictures[i]), f"{which} {p[which]}", 96, True)
                if pictures is not None
                else None,
                label,
            )
            for which, pictures, label in labelled
        ]
        cells = []
        for method, by_image in maps.items():
            scale = plots.symmetric_scale([m[i] for m in by_image.values()])
            for which, pictures in zip(MAP_IMAGES, (drivers, references)):
                png = (
                    plots.overlay_png(pictures[i] if pictures is not None else None, by_image[which][i], scale)
                    if which in by_image
                    else None
                )
                cells.append(Image.of(png, f"{method} {which} map of pair {i}", 96, True) if png else None)
        rows.append({"images": images, "maps": cells})
    return rows


def attribution(ctx: Context) -> Section:
    """Per neuron: pairs as rows; per method its driver and reference maps over the images."""
    maps, why = ctx.maps
    if maps is None:
        return SECTION.empty(why)
    drivers, references, img_why = ctx.pair_images
    neurons = [{"id": n, "rows": attribution_rows(ctx, n, maps, drivers, references)} for n in ctx.shown_neurons]
    return SECTION.section(
        {
            "why": f"{img_why}; maps are drawn without the images." if img_why else None,
            "methods": list(maps),
            "neurons": neurons,
            "capped": ctx.capped(),
        },
    )


SECTION = SectionKind("attribution", "Attribution maps", attribution)
