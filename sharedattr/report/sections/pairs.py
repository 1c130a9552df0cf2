"""4. Driver/reference pairs: per neuron, each driver and its matched reference (``pairs.csv``), as thumbnails."""

from __future__ import annotations

from torch import Tensor

from sharedattr.report import figures as plots
from sharedattr.report.html import num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Image, Section, SectionKind
from sharedattr.runtime.run_files import PAIRS, shown_rank


def pairs(ctx: Context) -> Section:
    """Per neuron: each driver and its matched reference, as thumbnails, with similarity and driver response."""
    run = ctx.run
    if not run.pairs:
        return SECTION.empty(f"{PAIRS.name} is missing or empty.")
    drivers, references, why = ctx.pair_images

    def thumb(images: Tensor | None, i: int, alt: str) -> Image | None:
        return Image.of(plots.thumbnail(images[i]), alt, 80, True) if images is not None else None

    neurons = [
        {
            "id": neuron,
            "rows": [
                {
                    "rank": shown_rank(p["rank"]),
                    "driver_img": thumb(drivers, i, f"driver {p['driver']}"),
                    "driver": p["driver"],
                    "category": p["driver_category"],
                    "response": num(p["driver_response"]),
                    "reference_img": thumb(references, i, f"reference {p['reference']}"),
                    "reference": p["reference"],
                    "similarity": num(p["similarity"]),
                }
                for i in ctx.rows_of(neuron)
                for p in [run.pairs[i]]
            ],
        }
        for neuron in ctx.shown_neurons
    ]
    return SECTION.section({"why": why, "neurons": neurons, "capped": ctx.capped()})


SECTION = SectionKind("pairs", "Driver/reference pairs", pairs)
