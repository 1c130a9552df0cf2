"""6. Method × metric scores: one table per image (``summary.csv``), and what the components declare."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sharedattr.report.components import Components
from sharedattr.report.html import mean_sem
from sharedattr.report.reading import Score, arrow, contests
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind
from sharedattr.runtime.run_files import MAP_IMAGES, SUMMARY


def score_table(scores: Sequence[Score], image: str, methods: Sequence[str], components: Components) -> dict[str, Any]:
    """Methods × metrics for one image: mean ± sem, the best per column marked, each metric's arrow and family."""
    mine = [s for s in scores if s.image == image]
    metrics = list(dict.fromkeys(s.metric for s in mine))
    cell = {(s.method, s.metric): s for s in mine}
    best = {c.metric: set(c.best) for c in contests(mine, components=components) if c.runner_up is not None}
    n_max = max((s.n for s in mine), default=0)
    higher = {s.metric: s.higher_is_better for s in mine}
    rows = []
    for method in [m for m in methods if any(k[0] == m for k in cell)]:
        cells = []
        for metric in metrics:
            s = cell.get((method, metric))
            cells.append(
                None
                if s is None
                else {
                    "text": mean_sem(s.mean, s.sem),
                    "n": s.n if s.n < n_max else None,
                    "best": method in best.get(metric, ()),
                }
            )
        label = f"{method} (control)" if components.control(method) else method
        rows.append({"method": label, "pairwise": components.is_pairwise(method), "cells": cells})
    return {
        "caption": f"{image} maps",
        "rows": rows,
        "metrics": [
            {"label": m, "arrow": arrow(higher[m]), "family": metric_family_label(components, m)} for m in metrics
        ],
    }


def metric_family_label(components: Components, metric: str) -> str:
    """A metric's family as its column shows it; ``sharing, pairwise only`` for a pairwise-only metric (single-image
    methods score a constant by construction, so they take no best mark on it)."""
    family = components.family(metric)
    return f"{family}, pairwise only" if components.pairwise_only(metric) else family


def component_rows(ctx: Context) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """What each method and metric of the run declares: pairwise or not, family and direction, and plugin."""
    comps = ctx.components
    methods = [
        {
            "label": m,
            "explains": "pairwise" if comps.is_pairwise(m) else "single image",
            "params": info.call(list(info.params)) if info and info.name else "",
            "control": comps.control(m) or "",
            "plugin": info.plugin if info else "not declared",
        }
        for m in ctx.methods
        for info in [comps.methods.get(m)]
    ]
    metric_labels = dict.fromkeys([*comps.metrics, *(s.metric for s in ctx.run.summary or [])])
    metrics = []
    for m in metric_labels:
        info = comps.metrics.get(m)
        direction = (
            ""
            if info is None or info.higher_is_better is None
            else f"{arrow(info.higher_is_better)} {'higher' if info.higher_is_better else 'lower'} is better"
        )
        metrics.append(
            {
                "label": m,
                "family": metric_family_label(comps, m),
                "direction": direction,
                "plugin": info.plugin if info else "not declared",
            }
        )
    return methods, metrics


def scores(ctx: Context) -> Section:
    """One method × metric table per image (driver, reference), and what the components declare."""
    summary_rows = ctx.run.summary
    if not summary_rows:
        return SECTION.empty(f"{SUMMARY.name} is missing or empty.")
    images = [i for i in MAP_IMAGES if any(s.image == i for s in summary_rows)]
    images += [i for i in dict.fromkeys(s.image for s in summary_rows) if i not in images]
    methods, metrics = component_rows(ctx)
    return SECTION.section(
        {
            "tables": [score_table(summary_rows, i, ctx.methods, ctx.components) for i in images],
            "methods": methods,
            "metrics": metrics,
            "notes": ctx.reading.notes,
        },
    )


SECTION = SectionKind("scores", "Method × metric scores", scores)
