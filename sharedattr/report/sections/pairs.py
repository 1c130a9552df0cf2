"""4. Driver/reference pairs: one sortable table of every pair (``pairs.csv``), with thumbnails of each driver and its
matched reference.

Each stimulus's thumbnail is stored once in the page's inline JSON (``stimuli``: id → base64 PNG), which the
explorer of the attribution section draws its maps over too; ``templates/explorer.js`` puts the thumbnails into the
table when it is shown. A table of more than :data:`~sharedattr.report.html.OPEN_ROWS` pairs starts collapsed.
"""

from __future__ import annotations

from sharedattr.report import explorer
from sharedattr.report import figures as plots
from sharedattr.report.html import num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind
from sharedattr.runtime.run_files import MAP_IMAGES, PAIRS, shown_rank


def stimulus_thumbnails(ctx: Context) -> dict[str, str]:
    """Every driver's and reference's thumbnail, once per stimulus id, as base64 PNG; {} without the images."""
    drivers, references, _ = ctx.pair_images
    out: dict[str, str] = {}
    for which, images in zip(MAP_IMAGES, (drivers, references)):
        if images is None:
            continue
        for i, p in enumerate(ctx.run.pairs or []):
            if p[which] not in out:
                out[p[which]] = explorer.b64(plots.thumbnail(images[i]))
    return out


def pairs(ctx: Context) -> Section:
    """Every pair, one row each: neuron, the reference's rank, driver and reference (thumbnail and id), the driver's
    category and response, and the matcher's similarity."""
    run = ctx.run
    if not run.pairs:
        return SECTION.empty(f"{PAIRS.name} is missing or empty.")
    drivers, _, why = ctx.pair_images
    rows = [
        {
            "index": i,
            "neuron": p["neuron"],
            "rank": shown_rank(p["rank"]),
            "driver": p["driver"],
            "category": p["driver_category"],
            "response": num(p["driver_response"]),
            "reference": p["reference"],
            "similarity": num(p["similarity"]),
        }
        for i, p in enumerate(run.pairs)
    ]
    return SECTION.section(
        {
            "why": why,
            "rows": rows,
            "n_neurons": len(ctx.neurons),
            "thumbs": drivers is not None,
            "stimuli": stimulus_thumbnails(ctx),
        }
    )


SECTION = SectionKind("pairs", "Driver/reference pairs", pairs)
