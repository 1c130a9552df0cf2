"""1. Summary: the run's title, key facts and the headline verdict, on one screen."""

from __future__ import annotations

import math
import statistics
from typing import Any

from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind


def describe_component(spec: Any) -> str:
    """``name (k=v, …)`` with up to three scalar, non-null params (seeds left out)."""
    if not isinstance(spec, dict):
        return str(spec)
    params = [
        f"{k}={v}"
        for k, v in spec.items()
        if k not in ("name", "seed") and v is not None and not isinstance(v, (list, dict))
    ][:3]
    return f"{spec.get('name', '?')} ({', '.join(params)})" if params else str(spec.get("name", "?"))


def method_rows(ctx: Context) -> list[dict[str, str]]:
    """Each method label as the report names it, ``label = name(params that differ from their defaults)``, whether
    it explains pairs, and what it is a control of (empty for a real method)."""
    comps = ctx.components
    return [
        {
            "label": m,
            "call": info.call() if (info := comps.methods.get(m)) and info.name else "not declared",
            "explains": "pairwise" if comps.is_pairwise(m) else "single image",
            "control": comps.control(m) or "",
        }
        for m in ctx.methods
    ]


def summary(ctx: Context) -> Section:
    """Title, key facts and the headline verdict: one screen."""
    run, spec = ctx.run, ctx.run.spec
    r = [s["test_r"] for s in run.scores or []]
    finite = [x for x in r if math.isfinite(x)]
    total = sum(t["seconds"] for t in run.timings.values()) if run.timings else math.nan
    methods = ctx.methods
    metrics = list(dict.fromkeys(s.metric for s in run.summary or []))
    pref = (spec.get("data") or {}).get("preferred_category")
    facts = [
        ("Backbone", describe_component(spec.get("backbone"))),
        ("Readout", describe_component(spec.get("readout"))),
        ("Matcher", describe_component(spec.get("matcher"))),
        ("Preferred category", pref or "per neuron (highest mean response)"),
        ("Total run time", f"{total:.1f} s" if math.isfinite(total) else "–"),
        ("Neurons explained", f"{len(ctx.neurons)} of {len(r)}" if r else str(len(ctx.neurons))),
        ("Driver/reference pairs", str(len(run.pairs or []))),
        ("Median held-out r", f"{statistics.median(finite):.3f} (over {len(finite)} neurons)" if finite else "–"),
        ("Methods", f"{len(methods)} (below, with their params)"),
        ("Metrics", f"{len(metrics)}: {', '.join(metrics)}" if metrics else "none"),
    ]
    return SECTION.section(
        {
            "name": run.name,  # no folder path or time: the page is a function of the folder's files
            "digest": run.digest or "–",
            "facts": facts,
            "methods": method_rows(ctx),
            "headline": ctx.reading.headline,
            "notes": ctx.reading.notes,
            "toc": [(anchor, title) for anchor, title in ctx.contents if anchor != SECTION.anchor],
        },
    )


SECTION = SectionKind("summary", "Summary", summary)
