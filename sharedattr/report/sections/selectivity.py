"""3. Selectivity per neuron: the mean measured response per category and the preferred category's d'."""

from __future__ import annotations

from typing import Any

from sharedattr.report import figures as plots
from sharedattr.report.html import mean_sem, num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import MAX_TABLE_ROWS, Figure, Section, SectionKind
from sharedattr.report.selectivity import Selectivity, measured_responses
from sharedattr.report.selectivity import selectivity as compute
from sharedattr.runtime.errors import UserError


def selectivity_rows(ctx: Context, sel: Selectivity, neuron_ids: list[str]) -> list[dict[str, Any]]:
    """The table's rows: the explained neurons first, then the others, at most :data:`MAX_TABLE_ROWS`; per neuron its
    mean ± sem per category (the preferred one marked), preferred category and d'."""
    explained = [n for n in ctx.neurons if n in neuron_ids]
    index = {n: i for i, n in enumerate(neuron_ids)}
    order = [index[n] for n in explained] + [i for i in range(len(neuron_ids)) if neuron_ids[i] not in explained]
    return [
        {
            "neuron": neuron_ids[n],
            "cells": [
                (mean_sem(float(sel.means[n, k]), float(sel.sems[n, k])), cat == sel.preferred[n])
                for k, cat in enumerate(sel.categories)
            ],
            "preferred": sel.preferred[n],
            "dprime": num(float(sel.dprime[n])),
            "explained": "yes" if neuron_ids[n] in ctx.neurons else "",
        }
        for n in order[:MAX_TABLE_ROWS]
    ]


def selectivity(ctx: Context) -> Section:
    """Mean measured response per category and d' of the preferred category, per neuron."""
    run = ctx.run
    stimuli = run.stimuli
    responses = run.data_path("responses")
    if isinstance(stimuli, UserError) or responses is None or not responses.exists():
        why = stimuli if isinstance(stimuli, UserError) else f"responses file not found: {responses}"
        return SECTION.empty(f"Selectivity unavailable: {why}")
    data = run.spec.get("data") or {}
    try:
        window = data.get("time_window")
        values, neuron_ids = measured_responses(
            str(responses),
            stimuli,
            ids_path=run.data_path("response_ids"),
            neuron_ids_path=run.data_path("neuron_ids"),
            time_window=tuple(window) if window else None,
            time_bins_path=run.data_path("time_bins"),
            nwb_table=data.get("nwb_table"),
        )
    except UserError as err:
        return SECTION.empty(f"Selectivity unavailable: {err}")
    sel = compute(values, list(stimuli.categories), neuron_ids, data.get("preferred_category"))
    index = {n: i for i, n in enumerate(neuron_ids)}
    shown = [index[n] for n in ctx.neurons if n in index] if len(neuron_ids) > 8 else list(range(len(neuron_ids)))
    figure = None
    if shown:
        figure = Figure.of(
            plots.selectivity_bars(sel, shown),
            "Mean response per category (± sem over stimuli); "
            "the preferred category's bar is outlined."
            + (" Explained neurons only." if len(shown) < len(neuron_ids) else ""),
            "selectivity per neuron",
        )
    source = (
        "the spec (data.preferred_category)" if data.get("preferred_category") else "the highest mean measured response"
    )
    counts = ", ".join(f"{c} {int(sel.counts[0, j])}" for j, c in enumerate(sel.categories))
    return SECTION.section(
        {
            "figure": figure,
            "categories": sel.categories,
            "rows": selectivity_rows(ctx, sel, list(neuron_ids)),
            "source": f"Preferred category from {source}. Stimuli per category: {counts}.",
        },
    )


SECTION = SectionKind("selectivity", "Selectivity per neuron", selectivity)
