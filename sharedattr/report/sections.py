"""The report's sections, in order: each turns the run into a :class:`Section`, the view its template renders.

A view holds plain strings, formatted numbers and :class:`Image` data URIs; the markup lives in
the templates (``templates/<anchor>.html.j2``), which escape every value. A section whose input
file is missing shows a note (``templates/empty.html.j2``) instead of failing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor

from sharedattr.report import figures as plots
from sharedattr.report.components import Components, spec_labels
from sharedattr.report.html import data_uri, mean_sem, num
from sharedattr.report.reading import (
    NO_PAIRWISE,
    Comparison,
    Reading,
    Score,
    arrow,
    comparison_reading,
    contests,
    fmt,
    p_value,
)
from sharedattr.report.rundir import RunDir, read_csv
from sharedattr.report.stats import ALPHA, CONFIDENCE, TEST_NAME, min_nonzero, to_float
from sharedattr.runtime.errors import UserError

SECTIONS: list[tuple[str, str]] = [
    ("summary", "Summary"),
    ("fit", "Readout fit quality"),
    ("selectivity", "Selectivity per neuron"),
    ("pairs", "Driver/reference pairs"),
    ("attribution", "Attribution maps"),
    ("scores", "Method × metric scores"),
    ("reading", "Who won"),
    ("synthesis", "Synthesis"),
    ("timings", "Timings"),
]
TITLES = dict(SECTIONS)
MAX_NEURONS = 24  # pairs and attribution grids are shown for at most this many neurons
MAX_TABLE_ROWS = 60
IMAGES = ("driver", "reference")


@dataclass(frozen=True)
class Image:
    """An inline PNG: its ``data:`` URI, alt text, and optionally a width and the ``thumb`` style."""

    uri: str
    alt: str
    width: int | None = None
    thumb: bool = False

    @classmethod
    def of(cls, png: bytes, alt: str, width: int | None = None, thumb: bool = False) -> Image:
        return cls(data_uri(png), alt, width, thumb)


@dataclass(frozen=True)
class Figure:
    """An inline PNG with a caption underneath."""

    image: Image
    caption: str

    @classmethod
    def of(cls, png: bytes, caption: str, alt: str) -> Figure:
        return cls(Image.of(png, alt), caption)


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor and title, and the view its template renders (``v`` there)."""

    anchor: str
    view: dict[str, Any] = field(default_factory=dict)
    template: str = ""

    @property
    def title(self) -> str:
        return TITLES[self.anchor]

    @property
    def template_name(self) -> str:
        return self.template or f"{self.anchor}.html.j2"


def empty(anchor: str, why: str) -> Section:
    """A section that only says why it has nothing to show."""
    return Section(anchor, {"note": why}, "empty.html.j2")


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


@dataclass
class Context:
    """Everything the sections share, computed once: the run, the reading of its scores, the pair images."""

    run: RunDir
    reading: Reading

    @property
    def components(self) -> Components:
        """What the run's methods and metrics declare (components.json, else the registry)."""
        return self.run.components

    @cached_property
    def neurons(self) -> list[str]:
        """Explained neurons, in the order of ``pairs.csv``."""
        return list(dict.fromkeys(p["neuron"] for p in self.run.pairs or []))

    @cached_property
    def methods(self) -> list[str]:
        """Method labels in run order: the spec's (``name``, ``name#2`` … as the run labels repeats), then any
        others in ``summary.csv`` or ``maps.safetensors``."""
        out = [label for label, _ in spec_labels(self.run.spec.get("methods") or [])]
        out += [s.method for s in self.run.summary or []]
        if self.run.maps is not None:
            out += [k.rsplit("/", 1)[0] for k in self.run.maps[0]]
        return list(dict.fromkeys(out))

    @cached_property
    def maps(self) -> tuple[dict[str, dict[str, Tensor]] | None, str | None]:
        """Maps by method and image, aligned with ``pairs.csv`` rows; or None and why not."""
        if self.run.maps is None:
            return None, "maps.safetensors was not written (output.save_maps = false, or no method ran)."
        tensors, listed = self.run.maps
        pairs = self.run.pairs or []
        expected = [(p["neuron"], p["driver"], p["reference"]) for p in pairs]
        if listed and listed != expected:
            return None, "maps.safetensors does not match pairs.csv (a file left from an earlier run?)."
        out: dict[str, dict[str, Tensor]] = {}
        for key, t in tensors.items():
            method, which = key.rsplit("/", 1)
            if t.shape[0] != len(pairs):
                return None, f"maps.safetensors: {key} has {t.shape[0]} maps but pairs.csv has {len(pairs)} rows."
            out.setdefault(method, {})[which] = t
        order = {m: i for i, m in enumerate(self.methods)}
        return {m: out[m] for m in sorted(out, key=lambda m: order.get(m, len(order)))}, None

    @cached_property
    def pair_images(self) -> tuple[Tensor | None, Tensor | None, str | None]:
        """Driver and reference images ``[P, 3, H, W]`` of ``pairs.csv`` (at the maps' size), or why not."""
        pairs = self.run.pairs or []
        stimuli = self.run.stimuli
        if isinstance(stimuli, UserError):
            return None, None, f"stimulus images unavailable: {stimuli}"
        maps, _ = self.maps
        if maps:
            size = tuple(next(iter(next(iter(maps.values())).values())).shape[1:])
        else:
            s = (self.run.spec.get("backbone") or {}).get("input_size")
            size = (s, s) if isinstance(s, int) else tuple(s) if isinstance(s, list) else (64, 64)
        index = {sid: i for i, sid in enumerate(stimuli.ids)}
        missing = sorted({p[k] for p in pairs for k in ("driver", "reference")} - set(index))
        if missing:
            return None, None, f"stimulus ids of pairs.csv not in the stimulus set: {', '.join(missing[:5])}"
        try:
            drivers = stimuli.load_images(size, 3, [index[p["driver"]] for p in pairs])
            references = stimuli.load_images(size, 3, [index[p["reference"]] for p in pairs])
        except UserError as err:
            return None, None, f"stimulus images unavailable: {err}"
        return drivers, references, None

    def rows_of(self, neuron: str) -> list[int]:
        return [i for i, p in enumerate(self.run.pairs or []) if p["neuron"] == neuron]

    @cached_property
    def shown_neurons(self) -> list[str]:
        return self.neurons[:MAX_NEURONS]

    def capped(self) -> str | None:
        """A note when only the first :data:`MAX_NEURONS` neurons are shown; None otherwise."""
        if len(self.neurons) <= len(self.shown_neurons):
            return None
        return (
            f"Showing the first {MAX_NEURONS} of {len(self.neurons)} neurons; figures/ holds a grid for every neuron."
        )


# 1 ---------------------------------------------------------------------------------------------
def summary(ctx: Context) -> Section:
    """Title, key facts and the headline verdict: one screen."""
    run, spec = ctx.run, ctx.run.spec
    r = [to_float(s["test_r"]) for s in run.scores or []]
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
        ("Methods", f"{len(methods)}: {', '.join(methods)}"),
        ("Metrics", f"{len(metrics)}: {', '.join(metrics)}" if metrics else "none"),
    ]
    toc = [(a, t) for a, t in SECTIONS[1:] if a != "synthesis" or run.file("synthesis") is not None]
    return Section(
        "summary",
        {
            "name": run.name,  # no folder path or time: the page is a function of the folder's files
            "digest": run.digest or "–",
            "facts": facts,
            "headline": ctx.reading.headline,
            "notes": ctx.reading.notes,
            "toc": toc,
        },
    )


# 2 ---------------------------------------------------------------------------------------------
def fit(ctx: Context) -> Section:
    """Held-out r per neuron: bars and a table; the pipeline's predicted-vs-measured figure when present."""
    run = ctx.run
    if run.scores is None:
        return empty("fit", "scores.csv is missing.")
    ids = [s["neuron"] for s in run.scores]
    r = [to_float(s["test_r"]) for s in run.scores]
    explained = set(ctx.neurons)
    bars = Figure.of(
        plots.fit_bars(ids, r, explained),
        "Held-out Pearson r between predicted and measured responses per neuron, best first; "
        "blue bars are the neurons explained below.",
        "held-out r per neuron",
    )
    rows = sorted(run.scores, key=lambda s: -x if math.isfinite(x := to_float(s["test_r"])) else math.inf)
    capped = None
    if len(rows) > MAX_TABLE_ROWS:
        rows = [s for s in rows if s["neuron"] in explained]
        capped = f"The table lists the {len(rows)} explained neurons of {len(run.scores)}; scores.csv has them all."
    table = [
        {
            "neuron": s["neuron"],
            "r": num(to_float(s["test_r"])),
            "ceiling": num(to_float(s.get("noise_ceiling"))),
            "fev": num(to_float(s.get("fev"))),
            "explained": "yes" if s["neuron"] in explained else "",
            "images": f"{s.get('n_train', '')} / {s.get('n_test', '')}",
            "note": s.get("note", ""),
        }
        for s in rows
    ]
    figure = None
    if (png := run.file("figures/fit.png")) is not None:
        figure = Figure.of(
            png.read_bytes(),
            "Distribution of held-out r, and predicted vs measured responses on "
            "held-out images for the best neurons (figures/fit.png).",
            "fit figure",
        )
    return Section("fit", {"bars": bars, "capped": capped, "rows": table, "figure": figure})


# 3 ---------------------------------------------------------------------------------------------
def selectivity(ctx: Context) -> Section:
    """Mean measured response per category and d' of the preferred category, per neuron."""
    from sharedattr.report.selectivity import measured_responses
    from sharedattr.report.selectivity import selectivity as compute

    run = ctx.run
    stimuli = run.stimuli
    responses = run.data_path("responses")
    if isinstance(stimuli, UserError) or responses is None or not responses.exists():
        why = stimuli if isinstance(stimuli, UserError) else f"responses file not found: {responses}"
        return empty("selectivity", f"Selectivity unavailable: {why}")
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
        return empty("selectivity", f"Selectivity unavailable: {err}")
    sel = compute(values, list(stimuli.categories), neuron_ids, data.get("preferred_category"))
    explained = [n for n in ctx.neurons if n in neuron_ids]
    index = {n: i for i, n in enumerate(neuron_ids)}
    shown = [index[n] for n in explained] if len(neuron_ids) > 8 else list(range(len(neuron_ids)))
    figure = None
    if shown:
        figure = Figure.of(
            plots.selectivity_bars(sel, shown),
            "Mean response per category (± sem over stimuli); "
            "the preferred category's bar is outlined."
            + (" Explained neurons only." if len(shown) < len(neuron_ids) else ""),
            "selectivity per neuron",
        )
    order = [index[n] for n in explained] + [i for i in range(len(neuron_ids)) if neuron_ids[i] not in explained]
    rows = [
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
    source = (
        "the spec (data.preferred_category)" if data.get("preferred_category") else "the highest mean measured response"
    )
    counts = ", ".join(f"{c} {int(sel.counts[0, j])}" for j, c in enumerate(sel.categories))
    return Section(
        "selectivity",
        {
            "figure": figure,
            "categories": sel.categories,
            "rows": rows,
            "source": f"Preferred category from {source}. Stimuli per category: {counts}.",
        },
    )


# 4 ---------------------------------------------------------------------------------------------
def pairs(ctx: Context) -> Section:
    """Per neuron: each driver and its matched reference, as thumbnails, with similarity and driver response."""
    run = ctx.run
    if not run.pairs:
        return empty("pairs", "pairs.csv is missing or empty.")
    drivers, references, why = ctx.pair_images

    def thumb(images: Tensor | None, i: int, alt: str) -> Image | None:
        return Image.of(plots.thumbnail(images[i]), alt, 80, True) if images is not None else None

    neurons = [
        {
            "id": neuron,
            "rows": [
                {
                    "rank": p["rank"],
                    "driver_img": thumb(drivers, i, f"driver {p['driver']}"),
                    "driver": p["driver"],
                    "category": p["driver_category"],
                    "response": num(to_float(p["driver_response"])),
                    "reference_img": thumb(references, i, f"reference {p['reference']}"),
                    "reference": p["reference"],
                    "similarity": num(to_float(p["similarity"])),
                }
                for i in ctx.rows_of(neuron)
                for p in [run.pairs[i]]
            ],
        }
        for neuron in ctx.shown_neurons
    ]
    return Section("pairs", {"why": why, "neurons": neurons, "capped": ctx.capped()})


# 5 ---------------------------------------------------------------------------------------------
def attribution_rows(
    ctx: Context, neuron: str, maps: dict[str, dict[str, Tensor]], drivers: Tensor | None, references: Tensor | None
) -> list[dict[str, Any]]:
    """One neuron's grid rows: per pair, the two images with labels, then per method its driver and reference
    maps (None where not computed)."""
    rows = []
    for i in ctx.rows_of(neuron):
        p = ctx.run.pairs[i]
        labelled = (
            ("driver", drivers, f"{p['driver']}\nresponse {num(to_float(p['driver_response']))}"),
            ("reference", references, f"{p['reference']}\nsimilarity {num(to_float(p['similarity']))}"),
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
            for which, pictures in zip(IMAGES, (drivers, references)):
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
        return empty("attribution", why)
    drivers, references, img_why = ctx.pair_images
    neurons = [{"id": n, "rows": attribution_rows(ctx, n, maps, drivers, references)} for n in ctx.shown_neurons]
    return Section(
        "attribution",
        {
            "why": f"{img_why}; maps are drawn without the images." if img_why else None,
            "methods": list(maps),
            "neurons": neurons,
            "capped": ctx.capped(),
        },
    )


# 6 ---------------------------------------------------------------------------------------------
def score_table(scores: Sequence[Score], image: str, methods: Sequence[str], components: Components) -> dict[str, Any]:
    """Methods × metrics for one image: mean ± sem, the best per column marked, each metric's arrow and family."""
    mine = [s for s in scores if s.image == image]
    metrics = list(dict.fromkeys(s.metric for s in mine))
    cell = {(s.method, s.metric): s for s in mine}
    best = {c.metric: set(c.best) for c in contests(mine) if c.runner_up is not None}
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
        rows.append({"method": method, "pairwise": components.is_pairwise(method), "cells": cells})
    return {
        "caption": f"{image} maps",
        "rows": rows,
        "metrics": [{"label": m, "arrow": arrow(higher[m]), "family": components.family(m)} for m in metrics],
    }


def component_rows(ctx: Context) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """What each method and metric of the run declares: pairwise or not, family and direction, and plugin."""
    comps = ctx.components
    methods = [
        {
            "label": m,
            "explains": "pairwise" if comps.is_pairwise(m) else "single image",
            "plugin": info.plugin if (info := comps.methods.get(m)) else "not declared",
        }
        for m in ctx.methods
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
                "family": comps.family(m),
                "direction": direction,
                "plugin": info.plugin if info else "not declared",
            }
        )
    return methods, metrics


def scores(ctx: Context) -> Section:
    """One method × metric table per image (driver, reference), and what the components declare."""
    summary_rows = ctx.run.summary
    if not summary_rows:
        return empty("scores", "summary.csv is missing or empty.")
    images = [i for i in IMAGES if any(s.image == i for s in summary_rows)]
    images += [i for i in dict.fromkeys(s.image for s in summary_rows) if i not in images]
    methods, metrics = component_rows(ctx)
    return Section(
        "scores",
        {
            "tables": [score_table(summary_rows, i, ctx.methods, ctx.components) for i in images],
            "methods": methods,
            "metrics": metrics,
            "notes": ctx.reading.notes,
        },
    )


# 7 ---------------------------------------------------------------------------------------------
def comparison_row(c: Comparison) -> dict[str, str]:
    """One row of a pairwise method's table against the best single-image baseline."""
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
        "baseline": c.baseline.method,
        "baseline_score": mean_sem(c.baseline.mean, c.baseline.sem),
        "diff": num(abs(c.diff)),
        "effect": effect,
        "pairs": str(t.n) if t else "–",
        "p": p_value(t.p) if t else "–",
        "reading": comparison_reading(c),
        "class": {"better": "win", "worse": "loss"}.get(c.outcome, "tie"),
    }


def reading(ctx: Context) -> Section:
    """Who won each metric and whether the lead is beyond noise; each pairwise method vs the best baseline."""
    rd = ctx.reading
    if not rd.contests:
        return Section("reading", {"headline": rd.headline}, "reading_empty.html.j2")
    pairwise = [
        {"method": p.method, "summary": f"{p.rank} {p.tally}", "rows": [comparison_row(c) for c in p.comparisons]}
        for p in rd.pairwise
    ]
    return Section(
        "reading",
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


# 8 ---------------------------------------------------------------------------------------------
def _mean(values: list[float] | None) -> float:
    vals = [v for v in values or [] if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def synthesis_neurons(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Per neuron and synthesizer: the mean relative activation on the train, val and cross models."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        roles = groups.setdefault((r.get("neuron", ""), r.get("synthesizer", "")), {})
        roles.setdefault(r.get("role", "train"), []).append(to_float(r.get("relative")))
    return [
        {
            "neuron": n,
            "synthesizer": s,
            "train": num(_mean(g.get("train"))),
            "val": num(_mean(g.get("val"))),
            "cross": num(_mean(g.get("cross"))),
        }
        for (n, s), g in groups.items()
    ]


def synthesis(ctx: Context) -> Section | None:
    """Synthesised images scored on the train, val and cross models; None without a ``synthesis/`` folder."""
    run = ctx.run
    if run.file("synthesis") is None:
        return None

    def figure(name: str, caption: str, alt: str) -> Figure | None:
        png = run.file(f"synthesis/{name}")
        return Figure.of(png.read_bytes(), caption, alt) if png is not None else None

    summary_rows = [
        {
            "synthesizer": r["synthesizer"],
            "evaluator": r["evaluator"],
            "role": r["role"],
            "relative": mean_sem(to_float(r["mean_relative"]), to_float(r["sem_relative"])),
            "n": r["n"],
            "seconds": num(to_float(r["wall_s_per_neuron"])),
            "forward": num(to_float(r["forward_calls"])),
            "backward": num(to_float(r["backward_calls"])),
            "denoiser": num(to_float(r["denoiser_calls"])),
        }
        for r in read_csv(run.path / "synthesis" / "summary.csv") or []
    ]
    evaluators = [
        {"evaluator": e["evaluator"], "role": e["role"], "model": e["model"], "r": num(to_float(e["median_test_r"]))}
        for e in read_csv(run.path / "synthesis" / "evaluators.csv") or []
    ]
    scores_rows = run.synthesis_scores
    return Section(
        "synthesis",
        {
            "stale": not run.spec.get("synthesis"),
            "comparison": figure(
                "comparison.png",
                "Left: each synthesizer's response relative to the neuron's best "
                "natural image, on the model it optimised (train), on the same architecture fitted "
                "with other seeds (val) and on another backbone or readout (cross); 1 = as strong as "
                "the strongest natural stimulus. Right: compute per neuron (synthesis/comparison.png).",
                "synthesis comparison",
            ),
            "summary": summary_rows,
            "evaluators": evaluators,
            "images": figure(
                "images.png",
                "Per neuron: its most exciting natural images (top row), then one row per "
                "synthesizer, one column per seed, as the model saw them (synthesis/images.png).",
                "synthesized images",
            ),
            "prior": figure(
                "prior_samples.png",
                "Unguided samples of each diffusion prior: what it generates without "
                "an energy, i.e. the image distribution the guided samples are drawn towards.",
                "diffusion prior samples",
            ),
            "neurons": synthesis_neurons(scores_rows) if scores_rows else None,
        },
    )


# 9 ---------------------------------------------------------------------------------------------
def timings(ctx: Context) -> Section:
    """Seconds and peak resident memory per pipeline stage, with bars; attribution time per method when
    ``methods.csv`` exists, scoring time per metric and method when ``metric_times.csv`` does. Runs older than
    the peak record show seconds only."""
    t = ctx.run.timings
    if not t:
        return empty("timings", "timings.json is missing.")
    seconds = {stage: record["seconds"] for stage, record in t.items()}
    total, longest = sum(seconds.values()) or 1.0, max(seconds.values()) or 1.0
    peaks = [r["peak_rss_mb"] for r in t.values() if r["peak_rss_mb"] is not None]
    stages = [
        {
            "stage": stage,
            "seconds": f"{sec:.2f}",
            "share": f"{100 * sec / total:.0f}%",
            "width": max(1, round(240 * sec / longest)),
            "peak": "–" if t[stage]["peak_rss_mb"] is None else f"{t[stage]['peak_rss_mb']:.0f}",
            "process": t[stage]["peak_of"] == "process",
        }
        for stage, sec in seconds.items()
    ]
    methods = [
        {
            "method": m.get("method", ""),
            "seconds": num(to_float(m.get("seconds"))),
            "pairs": m.get("pairs", ""),
            "ms": num(to_float(m.get("ms_per_pair"))),
        }
        for m in read_csv(ctx.run.path / "methods.csv") or []
    ]
    metrics = [
        {
            "metric": m.get("metric", ""),
            "method": m.get("method", ""),
            "seconds": num(to_float(m.get("seconds"))),
            "maps": m.get("maps", ""),
            "ms": num(to_float(m.get("ms_per_map"))),
            "share": num(to_float(m.get("share_of_method"))),
        }
        for m in read_csv(ctx.run.path / "metric_times.csv") or []
    ]
    return Section(
        "timings",
        {
            "stages": stages,
            "total": f"{sum(seconds.values()):.2f}",
            "peak": f"{max(peaks):.0f}" if peaks else "–",
            "has_peaks": bool(peaks),
            "any_process": any(s["process"] for s in stages),
            "methods": methods,
            "metrics": metrics,
        },
    )


def all_sections(ctx: Context) -> list[Section]:
    """Every section in report order (synthesis only when present)."""
    out = [
        summary(ctx),
        fit(ctx),
        selectivity(ctx),
        pairs(ctx),
        attribution(ctx),
        scores(ctx),
        reading(ctx),
        synthesis(ctx),
        timings(ctx),
    ]
    return [s for s in out if s is not None]
