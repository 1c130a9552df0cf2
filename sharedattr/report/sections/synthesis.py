"""8. Synthesis (when the run has a ``synthesis/`` folder): the synthesised images scored on the train, val and
cross models. The report of a ``sharedattr synthesize`` folder is this section under an overview of its own
(:data:`OVERVIEW`: name, digest, backbone, readout, synthesizers, neurons and evaluators)."""

from __future__ import annotations

import math
from typing import Any

from sharedattr.report.html import mean_sem, num
from sharedattr.report.rundir import RunDir
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.summary import describe_component
from sharedattr.report.sections.view import Figure, Section, SectionKind
from sharedattr.runtime.run_files import (
    PRIOR_SAMPLES_GRID,
    SYNTHESIS_COMPARISON,
    SYNTHESIS_GRID,
    Row,
)


def _mean(values: list[float] | None) -> float:
    vals = [v for v in values or [] if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def synthesis_neurons(rows: list[Row]) -> list[dict[str, str]]:
    """Per neuron and synthesizer (rows of ``synthesis/scores.csv``): the mean relative activation on the train,
    val and cross models."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        roles = groups.setdefault((r["neuron"], r["synthesizer"]), {})
        roles.setdefault(r["role"], []).append(r["relative"])
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


def summary_rows(run: RunDir) -> list[dict[str, Any]]:
    """The rows of ``synthesis/summary.csv`` as the page shows them."""
    return [
        {
            "synthesizer": r["synthesizer"],
            "evaluator": r["evaluator"],
            "role": r["role"],
            "relative": mean_sem(r["mean_relative"], r["sem_relative"]),
            "n": r["n"],
            "seconds": num(r["wall_s_per_neuron"]),
            "forward": num(r["forward_calls"]),
            "backward": num(r["backward_calls"]),
            "denoiser": num(r["denoiser_calls"]),
            **_equal_cells(r),
        }
        for r in run.synthesis_summary or []
    ]


def _equal_cells(r: Row) -> dict[str, str]:
    """The comparison at equal train activation on a summary row (empty where none was matched to its
    synthesizer): the matched synthesizer, its relative activation there, its median passes to reach (right-
    censored) with the censoring rate, and its compute to reach ÷ this synthesizer's."""
    if not r.get("equal_activation_by"):
        return {"equal_by": "", "equal_relative": "", "equal_steps": "", "equal_compute": ""}
    rate = r["censored_rate"]
    return {
        "equal_by": r["equal_activation_by"],
        "equal_relative": num(r["relative_at_equal_train"]),
        "equal_steps": f"{num(r['steps_to_equal'])} ({rate:.0%} censored)" if math.isfinite(rate) else "–",
        "equal_compute": num(r["compute_to_equal"]),
    }


def synthesis(ctx: Context) -> Section:
    """Synthesised images scored on the train, val and cross models (shown only with a ``synthesis/`` folder)."""
    run = ctx.run

    where = f"{run.synthesis_dir}/" if run.synthesis_dir else ""

    def figure(name: str, caption: str, alt: str) -> Figure | None:
        png = run.file(f"{where}{name}")
        return Figure.of(png.read_bytes(), caption, alt) if png is not None else None

    evaluators = [
        {"evaluator": e["evaluator"], "role": e["role"], "model": e["model"], "r": num(e["median_test_r"])}
        for e in run.evaluators or []
    ]
    scores_rows = run.synthesis_scores
    return SECTION.section(
        {
            "stale": not run.spec.get("synthesis"),
            "comparison": figure(
                SYNTHESIS_COMPARISON,
                "Left: each synthesizer's response relative to the neuron's best "
                "natural image, on the model it optimised (train), on the same architecture fitted "
                "with other seeds (val), on another backbone or readout (cross) and, where given, on a "
                "random-feature model (floor); 1 = as strong as "
                f"the strongest natural stimulus. Right: compute per neuron ({where}{SYNTHESIS_COMPARISON}).",
                "synthesis comparison",
            ),
            "summary": summary_rows(run),
            "equal": any(r.get("equal_activation_by") for r in run.synthesis_summary or []),
            "evaluators": evaluators,
            "images": figure(
                SYNTHESIS_GRID,
                "Per neuron: its most exciting natural images (top row), then one row per "
                f"synthesizer, one column per seed, as the model saw them ({where}{SYNTHESIS_GRID}).",
                "synthesized images",
            ),
            "prior": figure(
                PRIOR_SAMPLES_GRID,
                "Unguided samples of each diffusion prior: what it generates without "
                "an energy, i.e. the image distribution the guided samples are drawn towards.",
                "diffusion prior samples",
            ),
            "neurons": synthesis_neurons(scores_rows) if scores_rows else None,
            "where": where,
        },
    )


def overview(ctx: Context) -> Section:
    """The head of a ``sharedattr synthesize`` folder's report: its name, digest and key facts, and the contents."""
    run, spec = ctx.run, ctx.run.spec
    rows = run.synthesis_scores or []
    synthesizers = [describe_component(s) for s in spec.get("synthesis") or []]
    facts = [
        ("Backbone", describe_component(spec.get("backbone"))),
        ("Readout", describe_component(spec.get("readout"))),
        ("Synthesizers", f"{len(synthesizers)}: {'; '.join(synthesizers)}" if synthesizers else "none"),
        ("Neurons synthesised", str(len({r["neuron"] for r in rows}))),
        ("Seeds per neuron", str(len({r["seed"] for r in rows}))),
        ("Evaluator models", str(len(run.evaluators or []))),
    ]
    return OVERVIEW.section(
        {
            "name": run.name,
            "digest": run.digest or "–",
            "facts": facts,
            "toc": [(anchor, title) for anchor, title in ctx.contents if anchor != OVERVIEW.anchor],
        },
        "synthesis_overview.html.j2",
    )


SECTION = SectionKind("synthesis", "Synthesis", synthesis, shown=lambda run: run.has_synthesis)
OVERVIEW = SectionKind("overview", "Synthesis run", overview)
"""The first section of a ``sharedattr synthesize`` folder's report."""
