"""The report's sections, in order; each takes a :class:`RunDir` (and what it needs) and returns :class:`Html`.

A section whose input file is missing says so in a note instead of failing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from torch import Tensor

from sharedattr.runtime.errors import UserError
from sharedattr.report import figures as plots
from sharedattr.report.html import Html, esc, figure, img, join, mean_sem, note, num, section, table, tag
from sharedattr.report.reading import Comparison, Reading, Score, arrow, contests, is_pairwise, metric_family
from sharedattr.report.rundir import RunDir, read_csv

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


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def describe_component(spec: Any) -> str:
    """``name (k=v, …)`` with up to three scalar, non-null params (seeds left out)."""
    if not isinstance(spec, dict):
        return str(spec)
    params = [f"{k}={v}" for k, v in spec.items()
              if k not in ("name", "seed") and v is not None and not isinstance(v, (list, dict))][:3]
    return f"{spec.get('name', '?')} ({', '.join(params)})" if params else str(spec.get("name", "?"))


@dataclass
class Context:
    """Everything the sections share, computed once: the run, the reading of its summary, pair images."""

    run: RunDir
    reading: Reading

    @cached_property
    def neurons(self) -> list[str]:
        """Explained neurons, in the order of ``pairs.csv``."""
        return list(dict.fromkeys(p["neuron"] for p in self.run.pairs or []))

    @cached_property
    def methods(self) -> list[str]:
        """Method labels in run order: the spec's (``name``, ``name#2`` … as the run labels repeats), then any
        others in ``summary.csv`` or ``maps.safetensors``."""
        counts: dict[str, int] = {}
        out = []
        for m in self.run.spec.get("methods") or []:
            name = str(m.get("name", "?") if isinstance(m, dict) else m)
            counts[name] = counts.get(name, 0) + 1
            out.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
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
        expected = [f"{p['neuron']}|{p['driver']}|{p['reference']}" for p in pairs]
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

    def capped(self) -> Html:
        extra = len(self.neurons) - len(self.shown_neurons)
        return note(f"Showing the first {MAX_NEURONS} of {len(self.neurons)} neurons; "
                    "figures/ holds a grid for every neuron.") if extra > 0 else Html("")


# 1 ---------------------------------------------------------------------------------------------
def summary(ctx: Context) -> Html:
    """Title, key facts and the headline verdict: one screen."""
    run, spec = ctx.run, ctx.run.spec
    r = [_float(s["test_r"]) for s in run.scores or []]
    finite = [x for x in r if math.isfinite(x)]
    total = sum(run.timings.values()) if run.timings else math.nan
    methods = ctx.methods or [m.get("name", "?") if isinstance(m, dict) else str(m) for m in spec.get("methods", [])]
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
    when = datetime.fromtimestamp((run.path / "spec.json").stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    grid = join(Html(f'<div class="fact"><span class="k">{esc(k)}</span><span class="v">{esc(v)}</span></div>')
                for k, v in facts)
    verdict = Html('<div class="verdict"><h3>Verdict</h3><ul>'
                   + "".join(f"<li>{esc(line)}</li>" for line in ctx.reading.headline) + "</ul></div>")
    toc = Html('<nav class="toc">' + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS[1:]) + "</nav>")
    head = Html(f"<h1>sharedattr report: {esc(run.name)}</h1>"
                f'<p class="sub">{esc(run.path.resolve())} · spec digest {esc(run.digest or "–")} · '
                f"{esc(when)}</p>")
    return Html(f'<section id="summary">{head}<h2>{esc(TITLES["summary"])}</h2>'
                f'<div class="facts">{grid}</div>{verdict}{toc}</section>')


# 2 ---------------------------------------------------------------------------------------------
def fit(ctx: Context) -> Html:
    """Held-out r per neuron: bars and a table; the pipeline's predicted-vs-measured figure when present."""
    run = ctx.run
    if run.scores is None:
        return section("fit", TITLES["fit"], note("scores.csv is missing."))
    ids = [s["neuron"] for s in run.scores]
    r = [_float(s["test_r"]) for s in run.scores]
    explained = set(ctx.neurons)
    parts = [figure(plots.fit_bars(ids, r, explained),
                    "Held-out Pearson r between predicted and measured responses per neuron, best first; "
                    "blue bars are the neurons explained below.", "held-out r per neuron")]
    rows = sorted(run.scores, key=lambda s: -_float(s["test_r"]) if math.isfinite(_float(s["test_r"])) else math.inf)
    if len(rows) > MAX_TABLE_ROWS:
        rows = [s for s in rows if s["neuron"] in explained]
        parts.append(note(f"The table lists the {len(rows)} explained neurons of {len(run.scores)}; "
                          "scores.csv has them all."))
    parts.append(table(
        ["neuron", "held-out r", "noise ceiling", "FEV", "explained", "train / test images", "note"],
        [[s["neuron"], num(_float(s["test_r"])), num(_float(s.get("noise_ceiling"))), num(_float(s.get("fev"))),
          "yes" if s["neuron"] in explained else "", f"{s.get('n_train', '')} / {s.get('n_test', '')}",
          s.get("note", "")] for s in rows], numeric=[1, 2, 3]))
    if (png := run.file("figures/fit.png")) is not None:
        parts.append(figure(png.read_bytes(), "Distribution of held-out r, and predicted vs measured responses on "
                            "held-out images for the best neurons (figures/fit.png).", "fit figure"))
    return section("fit", TITLES["fit"], *parts)


# 3 ---------------------------------------------------------------------------------------------
def selectivity(ctx: Context) -> Html:
    """Mean measured response per category and d' of the preferred category, per neuron."""
    from sharedattr.report.selectivity import measured_responses, selectivity as compute

    run = ctx.run
    stimuli = run.stimuli
    responses = run.data_path("responses")
    if isinstance(stimuli, UserError) or responses is None or not responses.exists():
        why = stimuli if isinstance(stimuli, UserError) else f"responses file not found: {responses}"
        return section("selectivity", TITLES["selectivity"], note(f"Selectivity unavailable: {why}"))
    data = run.spec.get("data") or {}
    try:
        values, neuron_ids = measured_responses(str(responses), stimuli, ids_path=run.data_path("response_ids"),
                                                neuron_ids_path=run.data_path("neuron_ids"))
    except UserError as err:
        return section("selectivity", TITLES["selectivity"], note(f"Selectivity unavailable: {err}"))
    sel = compute(values, list(stimuli.categories), neuron_ids, data.get("preferred_category"))
    explained = [n for n in ctx.neurons if n in neuron_ids]
    index = {n: i for i, n in enumerate(neuron_ids)}
    shown = [index[n] for n in explained] if len(neuron_ids) > 8 else list(range(len(neuron_ids)))
    parts = [Html("<p>Trial-averaged measured responses per stimulus category (mean ± sem over stimuli). "
                  "d′ = (mean<sub>pref</sub> − mean<sub>other</sub>) / "
                  "√((var<sub>pref</sub> + var<sub>other</sub>)"
                  " / 2) compares the preferred category with all others.</p>")]
    if shown:
        parts.append(figure(plots.selectivity_bars(sel, shown), "Mean response per category (± sem over stimuli); "
                            "the preferred category's bar is outlined." + (" Explained neurons only."
                                                                           if len(shown) < len(neuron_ids) else ""),
                            "selectivity per neuron"))
    order = [index[n] for n in explained] + [i for i in range(len(neuron_ids)) if neuron_ids[i] not in explained]
    rows = []
    for n in order[:MAX_TABLE_ROWS]:
        cells: list[Any] = [neuron_ids[n]]
        for k, cat in enumerate(sel.categories):
            text = mean_sem(float(sel.means[n, k]), float(sel.sems[n, k]))
            cells.append(tag("b", text) if cat == sel.preferred[n] else text)
        cells += [sel.preferred[n], num(float(sel.dprime[n])), "yes" if neuron_ids[n] in ctx.neurons else ""]
        rows.append(cells)
    k = len(sel.categories)
    parts.append(table(["neuron", *sel.categories, "preferred", "d′", "explained"], rows,
                       numeric=[*range(1, k + 1), k + 2]))
    source = "the spec (data.preferred_category)" if data.get("preferred_category") else \
        "the highest mean measured response"
    parts.append(note(f"Preferred category from {source}. Stimuli per category: "
                      + ", ".join(f"{c} {int(sel.counts[0, j])}" for j, c in enumerate(sel.categories)) + "."))
    return section("selectivity", TITLES["selectivity"], *parts)


# 4 ---------------------------------------------------------------------------------------------
def pairs(ctx: Context) -> Html:
    """Per neuron: each driver and its matched reference, as thumbnails, with similarity and driver response."""
    run = ctx.run
    if not run.pairs:
        return section("pairs", TITLES["pairs"], note("pairs.csv is missing or empty."))
    drivers, references, why = ctx.pair_images
    parts: list[Any] = [Html("<p>Drivers are the out-of-category images that drive each neuron most; each "
                             "reference is a preferred-category image the matcher ranks most similar to the driver "
                             "in the neuron's readout contributions.</p>")]
    if why:
        parts.append(note(why))

    def thumb(images: Tensor | None, i: int, alt: str) -> Html:
        return img(plots.thumbnail(images[i]), alt, width=80, class_="thumb") if images is not None else Html("–")

    for neuron in ctx.shown_neurons:
        rows = [[p["rank"], thumb(drivers, i, f"driver {p['driver']}"), p["driver"], p["driver_category"],
                 num(_float(p["driver_response"])), thumb(references, i, f"reference {p['reference']}"),
                 p["reference"], num(_float(p["similarity"]))]
                for i in ctx.rows_of(neuron) for p in [run.pairs[i]]]
        parts += [tag("h3", f"neuron {neuron}"),
                  table(["ref. rank", "driver", "driver id", "category", "driver response", "reference",
                         "reference id", "similarity"], rows, numeric=[0, 4, 7])]
    parts.append(ctx.capped())
    return section("pairs", TITLES["pairs"], *parts)


# 5 ---------------------------------------------------------------------------------------------
def attribution_grid(ctx: Context, neuron: str, maps: dict[str, dict[str, Tensor]], drivers: Tensor | None,
                     references: Tensor | None) -> Html:
    """One neuron's grid: a row per pair; the two images, then per method its driver and reference maps."""
    def tile(png: bytes, alt: str) -> Html:
        return img(png, alt, width=96, class_="thumb")

    head1 = '<th colspan="2">images</th>' + "".join(f'<th colspan="2" class="method">{esc(m)}</th>' for m in maps)
    head2 = "<th>driver</th><th>reference</th>" + "<th>driver</th><th>reference</th>" * len(maps)
    body = []
    for i in ctx.rows_of(neuron):
        p = ctx.run.pairs[i]
        cells = []
        labelled = (("driver", drivers, f"{p['driver']}\nresponse {num(_float(p['driver_response']))}"),
                    ("reference", references, f"{p['reference']}\nsimilarity {num(_float(p['similarity']))}"))
        for which, images, label in labelled:
            picture = tile(plots.thumbnail(images[i]), f"{which} {p[which]}") if images is not None else Html("")
            cells.append(f"<td>{picture}<div class=\"lbl\">{esc(label)}</div></td>")
        for method, by_image in maps.items():
            scale = plots.symmetric_scale([m[i] for m in by_image.values()])
            for which in IMAGES:
                if which not in by_image:
                    cells.append('<td class="na">not computed</td>')
                    continue
                image = (drivers if which == "driver" else references)
                png = plots.overlay_png(image[i] if image is not None else None, by_image[which][i], scale)
                cells.append(f"<td>{tile(png, f'{method} {which} map of pair {i}')}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Html(f'<div class="scroll"><table class="grid"><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>')


def attribution(ctx: Context) -> Html:
    """Per neuron: pairs as rows; per method its driver and reference maps over the images."""
    maps, why = ctx.maps
    if maps is None:
        return section("attribution", TITLES["attribution"], note(why))
    drivers, references, img_why = ctx.pair_images
    parts: list[Any] = [Html(
        "<p>Per neuron, one row per driver/reference pair; per method, its driver map and reference map over the "
        "images. <span style=\"color:#c0392b\">Red</span> = positive attribution (evidence for the response), "
        "<span style=\"color:#2c5fd1\">blue</span> = negative; opacity grows with |attribution|. A method's two "
        "maps in a row share one colour scale (the 99th percentile of |map| over both), so they are directly "
        "comparable.</p>")]
    if img_why:
        parts.append(note(f"{img_why}; maps are drawn without the images."))
    for neuron in ctx.shown_neurons:
        parts += [tag("h3", f"neuron {neuron}"), attribution_grid(ctx, neuron, maps, drivers, references)]
    parts.append(ctx.capped())
    return section("attribution", TITLES["attribution"], *parts)


# 6 ---------------------------------------------------------------------------------------------
def score_table(scores: Sequence[Score], image: str, methods: Sequence[str]) -> Html:
    """Methods × metrics for one image: mean ± sem, the best per column bold, arrows for the better direction."""
    mine = [s for s in scores if s.image == image]
    metrics = list(dict.fromkeys(s.metric for s in mine))
    cell = {(s.method, s.metric): s for s in mine}
    best = {c.metric: set(c.best) for c in contests(mine) if c.runner_up is not None}
    n_max = max((s.n for s in mine), default=0)
    higher = {s.metric: s.higher_is_better for s in mine}
    header = ["method", *(Html(f"{esc(m)} {arrow(higher[m])}<br><span class=\"n\">{esc(metric_family(m))}</span>")
                          for m in metrics)]
    rows, classes = [], []
    for method in [m for m in methods if any(k[0] == m for k in cell)]:
        row: list[Any] = [method]
        for metric in metrics:
            s = cell.get((method, metric))
            if s is None:
                row.append("–")
                continue
            text = esc(mean_sem(s.mean, s.sem))
            if s.n < n_max:
                text = Html(f'{text} <span class="n">n={s.n}</span>')
            row.append(Html(f"<b>{text}</b>") if method in best.get(metric, ()) else text)
        rows.append(row)
        classes.append("pb" if is_pairwise(method) else None)
    return table(header, rows, numeric=range(1, len(metrics) + 1), row_classes=classes,
                 caption=f"{image} maps")


def scores(ctx: Context) -> Html:
    """One method × metric table per image (driver, reference)."""
    summary_rows = ctx.run.summary
    if not summary_rows:
        return section("scores", TITLES["scores"], note("summary.csv is missing or empty."))
    images = [i for i in IMAGES if any(s.image == i for s in summary_rows)]
    images += [i for i in dict.fromkeys(s.image for s in summary_rows) if i not in images]
    parts: list[Any] = [Html("<p>Mean ± standard error over the driver/reference pairs (summary.csv). ↑: higher is "
                             "better, ↓: lower is better; the best value per column is <b>bold</b>; parallel "
                             "backprop rows are shaded. <span class=\"n\">n=…</span> marks means over fewer maps "
                             "(a metric undefined for some).</p>")]
    parts += [score_table(summary_rows, image, ctx.methods) for image in images]
    return section("scores", TITLES["scores"], *parts)


# 7 ---------------------------------------------------------------------------------------------
def reading(ctx: Context) -> Html:
    """Who won each metric and whether the lead is beyond noise; parallel_backprop vs the best baseline."""
    rd = ctx.reading
    if not rd.contests:
        return section("reading", TITLES["reading"], note(rd.headline[0]))
    parts: list[Any] = [
        Html('<ul class="reading">' + "".join(f"<li>{esc(s)}</li>" for s in rd.headline) + "</ul>"),
        Html("<p>A lead counts as <em>beyond noise</em> when it is larger than the combined standard error of the "
             "two means, √(sem₁² + sem₂²). The methods are scored on the same pairs, so this is a rough guide, "
             "not a significance test.</p>"),
        tag("h3", "Per metric"),
        Html('<ul class="reading">' + "".join(f"<li>{esc(s)}</li>" for s in rd.per_metric) + "</ul>"),
    ]
    for p in rd.pairwise:
        parts += [tag("h3", f"{p.method} vs the best single-image baseline"), tag("p", f"{p.rank} {p.tally}")]
        if p.comparisons:
            parts.append(comparison_table(p.comparisons))
    if not rd.pairwise:
        parts.append(note("No parallel_backprop method in this run."))
    return section("reading", TITLES["reading"], *parts)


def comparison_table(comparisons: Sequence[Comparison]) -> Html:
    """A parallel_backprop variant against the best single-image baseline, one row per metric × image."""
    rows, classes = [], []
    for c in comparisons:
        clear = c.beyond_noise()
        reading = c.outcome if c.outcome == "level" else \
            f"{c.outcome}, {'beyond noise' if clear else 'within noise' if clear is not None else 'noise unknown'}"
        rows.append([f"{c.contest.metric} {arrow(c.contest.higher_is_better)}", c.contest.image,
                     mean_sem(c.method.mean, c.method.sem), c.baseline.method,
                     mean_sem(c.baseline.mean, c.baseline.sem),
                     num(abs(c.diff)), num(c.noise),
                     tag("span", reading, class_={"better": "win", "worse": "loss"}.get(c.outcome, "tie"))])
    return table(["metric", "maps", comparisons[0].method.method, "best baseline", "its score", "difference",
                  "combined sem", "reading"], rows, numeric=[2, 4, 5, 6])


# 8 ---------------------------------------------------------------------------------------------
def synthesis(ctx: Context) -> Html | None:
    """Synthesised images scored on the train, val and cross models; None without a ``synthesis/`` folder."""
    run = ctx.run
    if run.file("synthesis") is None:
        return None
    parts: list[Any] = []
    if not run.spec.get("synthesis"):
        parts.append(note("This spec configures no synthesizer: synthesis/ is left from an earlier run."))
    summary = read_csv(run.path / "synthesis" / "summary.csv")
    if (png := run.file("synthesis/comparison.png")) is not None:
        parts.append(figure(png.read_bytes(), "Left: each synthesizer's response relative to the neuron's best "
                            "natural image, on the model it optimised (train), on the same architecture fitted "
                            "with other seeds (val) and on another backbone or readout (cross); 1 = as strong as "
                            "the strongest natural stimulus. Right: compute per neuron (synthesis/comparison.png).",
                            "synthesis comparison"))
    if summary:
        parts.append(table(
            ["synthesizer", "evaluator", "role", "relative ± sem", "n", "seconds per neuron", "model forward",
             "model backward", "denoiser calls"],
            [[r["synthesizer"], r["evaluator"], r["role"],
              mean_sem(_float(r["mean_relative"]), _float(r["sem_relative"])), r["n"],
              num(_float(r["wall_s_per_neuron"])), num(_float(r["forward_calls"])),
              num(_float(r["backward_calls"])), num(_float(r["denoiser_calls"]))] for r in summary],
            numeric=range(3, 9), caption="Activation relative to the best natural image, per evaluator model "
            "(synthesis/summary.csv; n = neurons × seeds)."))
    evaluators = read_csv(run.path / "synthesis" / "evaluators.csv")
    if evaluators:
        parts.append(table(["evaluator", "role", "model", "median held-out r"],
                           [[e["evaluator"], e["role"], e["model"], num(_float(e["median_test_r"]))]
                            for e in evaluators], numeric=[3], caption="The models that scored the images."))
    if (png := run.file("synthesis/images.png")) is not None:
        parts.append(figure(png.read_bytes(), "Per neuron: its most exciting natural images (top row), then one "
                            "row per synthesizer, one column per seed, as the model saw them (synthesis/images.png).",
                            "synthesized images"))
    if (png := run.file("synthesis/prior_samples.png")) is not None:
        parts.append(figure(png.read_bytes(), "Unguided samples of each diffusion prior: what it generates without "
                            "an energy, i.e. the image distribution the guided samples are drawn towards.",
                            "diffusion prior samples"))
    rows = run.synthesis_scores
    if rows:
        groups: dict[tuple[str, str], dict[str, list[float]]] = {}
        for r in rows:
            roles = groups.setdefault((r.get("neuron", ""), r.get("synthesizer", "")), {})
            roles.setdefault(r.get("role", "train"), []).append(_float(r.get("relative")))

        def mean(values: list[float] | None) -> float:
            vals = [v for v in values or [] if math.isfinite(v)]
            return sum(vals) / len(vals) if vals else math.nan

        parts.append(table(["neuron", "synthesizer", "relative on train", "on val", "on cross"],
                           [[n, s, num(mean(g.get("train"))), num(mean(g.get("val"))), num(mean(g.get("cross")))]
                            for (n, s), g in groups.items()], numeric=range(2, 5),
                           caption="Per neuron (means over seeds and evaluators of a role; synthesis/scores.csv)."))
    else:
        parts.append(note("synthesis/scores.csv is missing."))
    return section("synthesis", TITLES["synthesis"], *parts)


def timings(ctx: Context) -> Html:
    """Seconds per pipeline stage, with bars."""
    t = ctx.run.timings
    if not t:
        return section("timings", TITLES["timings"], note("timings.json is missing."))
    total, longest = sum(t.values()) or 1.0, max(t.values()) or 1.0
    rows = [[stage, f"{sec:.2f}", f"{100 * sec / total:.0f}%",
             Html(f'<span class="bar" style="width:{max(1, round(240 * sec / longest))}px"></span>')]
            for stage, sec in t.items()]
    rows.append([Html("<b>total</b>"), Html(f"<b>{sum(t.values()):.2f}</b>"), "", ""])
    parts: list[Any] = [table(["stage", "seconds", "share", ""], rows, numeric=[1, 2]),
                        note("Stages as in timings.json (the report itself is not timed). A run that reuses work/ "
                             "items is faster than the first.")]
    methods = read_csv(ctx.run.path / "methods.csv")
    if methods:
        parts.append(table(["method", "seconds for all maps", "pairs", "ms per pair"],
                           [[m.get("method", ""), num(_float(m.get("seconds"))), m.get("pairs", ""),
                             num(_float(m.get("ms_per_pair")))] for m in methods],
                           numeric=[1, 2, 3], caption="Attribution time per method (methods.csv)"))
    return section("timings", TITLES["timings"], *parts)


def all_sections(ctx: Context) -> list[Html]:
    """Every section in report order (synthesis only when present)."""
    out = [summary(ctx), fit(ctx), selectivity(ctx), pairs(ctx), attribution(ctx), scores(ctx), reading(ctx),
           synthesis(ctx), timings(ctx)]
    return [s for s in out if s is not None]

