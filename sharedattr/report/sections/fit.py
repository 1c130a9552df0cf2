"""2. Readout fit quality: held-out r per neuron (``scores.csv``) and the run's fit figure."""

from __future__ import annotations

import math

from sharedattr.report import figures as plots
from sharedattr.report.html import num
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import MAX_TABLE_ROWS, Figure, Section, SectionKind, count
from sharedattr.runtime.run_files import FIT_FIGURE, FIT_SCORES


def fit(ctx: Context) -> Section:
    """Held-out r per neuron: bars and a table; the pipeline's predicted-vs-measured figure when present."""
    run = ctx.run
    if run.scores is None:
        return SECTION.empty(f"{FIT_SCORES.name} is missing.")
    ids = [s["neuron"] for s in run.scores]
    r = [s["test_r"] for s in run.scores]
    explained = set(ctx.neurons)
    bars = Figure.of(
        plots.fit_bars(ids, r, explained),
        "Held-out Pearson r between predicted and measured responses per neuron, best first; "
        "blue bars are the neurons explained below.",
        "held-out r per neuron",
    )
    rows = sorted(run.scores, key=lambda s: -x if math.isfinite(x := s["test_r"]) else math.inf)
    capped = None
    if len(rows) > MAX_TABLE_ROWS:
        rows = [s for s in rows if s["neuron"] in explained]
        capped = (
            f"The table lists the {len(rows)} explained neurons of {len(run.scores)}; {FIT_SCORES.name} has them all."
        )
    table = [
        {
            "neuron": s["neuron"],
            "r": num(s["test_r"]),
            "ceiling": num(s["noise_ceiling"]),
            "fev": num(s["fev"]),
            "explained": "yes" if s["neuron"] in explained else "",
            "images": f"{count(s['n_train'])} / {count(s['n_test'])}",
            "note": s["note"],
        }
        for s in rows
    ]
    figure = None
    if (png := run.file(FIT_FIGURE)) is not None:
        figure = Figure.of(
            png.read_bytes(),
            "Distribution of held-out r, and predicted vs measured responses on "
            f"held-out images for the best neurons ({FIT_FIGURE}).",
            "fit figure",
        )
    return SECTION.section(
        {"bars": bars, "capped": capped, "rows": table, "figure": figure, "fev_note": fev_note(run.scores)}
    )


def fev_note(scores: list[dict]) -> str | None:
    """One line for the neurons whose FEV is negative while their held-out r is positive (None when there are
    none): FEV subtracts the noise ceiling's share and counts errors of scale and offset, r ignores both."""
    odd = [s["neuron"] for s in scores if s["fev"] < 0 < s["test_r"]]
    if not odd:
        return None
    shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    return (
        f"FEV is negative while r is positive for {shown}: FEV = 1 − (MSE − noise) / (variance − noise) subtracts the "
        "trial-to-trial noise (the noise ceiling's share) and counts errors of scale and offset, while Pearson r "
        "ignores scale and offset, so a prediction can follow the responses (r > 0) yet miss their level or range "
        "by more than the explainable variance."
    )


SECTION = SectionKind("fit", "Readout fit quality", fit)
