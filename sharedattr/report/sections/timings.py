"""9. Timings: seconds and peak memory per stage (``timings.json``), per method (``methods.csv``) and per metric
and method (``metric_times.csv``)."""

from __future__ import annotations

from typing import Any

from sharedattr.report.html import num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Section, SectionKind
from sharedattr.runtime.run_files import TIMINGS_FILE


def stage_rows(timings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage of ``timings.json``: seconds, share of the total, bar width and peak MB."""
    seconds = {stage: record["seconds"] for stage, record in timings.items()}
    total, longest = sum(seconds.values()) or 1.0, max(seconds.values()) or 1.0
    return [
        {
            "stage": stage,
            "seconds": f"{sec:.2f}",
            "share": f"{100 * sec / total:.0f}%",
            "width": max(1, round(240 * sec / longest)),
            "peak": "–" if timings[stage]["peak_rss_mb"] is None else f"{timings[stage]['peak_rss_mb']:.0f}",
            "process": timings[stage]["peak_of"] == "process",
        }
        for stage, sec in seconds.items()
    ]


def timings(ctx: Context) -> Section:
    """Seconds and peak resident memory per pipeline stage, with bars; attribution time per method when
    ``methods.csv`` exists, scoring time per metric and method when ``metric_times.csv`` does. Runs older than
    the peak record show seconds only."""
    t = ctx.run.timings
    if not t:
        return SECTION.empty(f"{TIMINGS_FILE} is missing.")
    stages = stage_rows(t)
    peaks = [r["peak_rss_mb"] for r in t.values() if r["peak_rss_mb"] is not None]
    methods = [
        {"method": m["method"], "seconds": num(m["seconds"]), "pairs": m["pairs"], "ms": num(m["ms_per_pair"])}
        for m in ctx.run.method_times or []
    ]
    metrics = [
        {
            "metric": m["metric"],
            "method": m["method"],
            "seconds": num(m["seconds"]),
            "maps": m["maps"],
            "ms": num(m["ms_per_map"]),
            "share": num(m["share_of_method"]),
        }
        for m in ctx.run.metric_times or []
    ]
    return SECTION.section(
        {
            "stages": stages,
            "total": f"{sum(r['seconds'] for r in t.values()):.2f}",
            "peak": f"{max(peaks):.0f}" if peaks else "–",
            "has_peaks": bool(peaks),
            "any_process": any(s["process"] for s in stages),
            "methods": methods,
            "metrics": metrics,
        },
    )


SECTION = SectionKind("timings", "Timings", timings)
