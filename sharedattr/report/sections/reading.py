"""7. Who won: each metric's winner and whether its lead is beyond noise; each pairwise method against the best
single-image baseline and, on sharing and pairwise-only metrics, each of its controls (the sentences of
:mod:`sharedattr.report.reading`)."""

from __future__ import annotations

import math

from sharedattr.report.html import mean_sem, num
from sharedattr.report.reading import NO_PAIRWISE, Comparison, arrow, comparison_reading, fmt, p_value
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind
from sharedattr.report.stats import ALPHA, CONFIDENCE, TEST_NAME, min_nonzero


def comparison_row(c: Comparison) -> dict[str, str]:
    """One row of a pairwise method's table: against the best single-image baseline, or one of its controls (named
    by its phrase: ``its own control parallel_backprop#2``)."""
    t = c.test
    effect = (
        "–"
        if t is None or t.n == 0
        else fmt(t.mean_diff) + (f" ({fmt(t.ci_low)} to {fmt(t.ci_high)})" if math.isfinite(t.ci_low) else "")
    )
    return {
        "metric": f"{c.contest.metric} {arrow(c.contest.higher_is_better)}",
        "image": c.contest.image,
        "score": mean_sem(c.method.mean, c.method.sem),
        "baseline": c.against if c.control else c.baseline.method,
        "baseline_score": mean_sem(c.baseline.mean, c.baseline.sem),
        "diff": num(abs(c.diff)),
        "effect": effect,
        "pairs": str(t.n) if t else "–",
        "p": p_value(t.p) if t else "–",
        "reading": comparison_reading(c),
        "class": {"better": "win", "worse": "loss"}.get(c.outcome, "tie"),
    }


def reading(ctx: Context) -> Section:
    """Who won each metric and whether the lead is beyond noise; each pairwise method vs the best baseline and its
    controls."""
    rd = ctx.reading
    if not rd.contests:
        return SECTION.section({"headline": rd.headline}, "reading_empty.html.j2")
    pairwise = [
        {
            "method": p.method + (" (control)" if p.control else ""),
            "summary": " ".join(
                t for t in (p.rank, p.tally, f"Control: {p.control}." if p.control else "", p.scope_sentence) if t
            ),
            "controlled": any(c.control for c in p.comparisons),
            "rows": [comparison_row(c) for c in p.comparisons],
        }
        for p in rd.pairwise
    ]
    return SECTION.section(
        {
            "headline": rd.headline,
            "per_metric": rd.per_metric,
            "pairwise": pairwise,
            "test": TEST_NAME,
            "alpha": f"{ALPHA:g}",
            "confidence": f"{CONFIDENCE:.0%}",
            "min_nonzero": min_nonzero(),
            "no_pairwise": NO_PAIRWISE,
        },
    )


SECTION = SectionKind("reading", "Who won", reading)
