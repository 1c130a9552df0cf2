"""The synthesis comparison figure: activation per evaluator role, and the compute spent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..figures import _plt, _save

ROLES = ("train", "val", "cross")


def role_means(summary: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per synthesizer, per role: the mean relative activation over that role's evaluators, and its sem.

    Several evaluators of one role (e.g. two val seeds) are pooled by averaging their means
    (weighted by their counts), the sem likewise combined.
    """
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for synth in dict.fromkeys(r["synthesizer"] for r in summary):
        out[synth] = {}
        for role in ROLES:
            group = [r for r in summary if r["synthesizer"] == synth and r["role"] == role
                     and math.isfinite(r["mean_relative"]) and r["n"] > 0]
            if not group:
                continue
            n = sum(r["n"] for r in group)
            mean = sum(r["mean_relative"] * r["n"] for r in group) / n
            sems = [r["sem_relative"] for r in group if math.isfinite(r["sem_relative"])]
            sem = math.sqrt(sum(s * s for s in sems)) / len(sems) if sems else math.nan
            out[synth][role] = (mean, sem)
    return out


def comparison_figure(summary: Sequence[dict[str, Any]], path: Path, dpi: int = 120) -> Path:
    """Left: mean relative activation (± sem) on the train, val and cross models, one bar per synthesizer.
    Right: wall seconds per neuron (all seeds), annotated with model and denoiser calls."""
    plt = _plt()
    means = role_means(summary)
    synths = list(means)
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(9.5, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(synths), 1)
    for i, synth in enumerate(synths):
        xs = [j + (i - (len(synths) - 1) / 2) * width for j in range(len(ROLES))]
        values = [means[synth].get(role, (math.nan, math.nan)) for role in ROLES]
        ax.bar(xs, [v[0] for v in values], width,
               yerr=[v[1] if math.isfinite(v[1]) else 0 for v in values], capsize=3, label=synth)
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(range(len(ROLES)), ["train (optimised on)", "val (other seeds)", "cross (other model)"],
                  fontsize=8)
    ax.set_ylabel("response / best natural image")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("activation relative to the best natural image", fontsize=9)
    per_synth = {}
    for r in summary:
        if r["role"] == "train":
            per_synth[r["synthesizer"]] = r
    walls = [per_synth.get(s, {}).get("wall_s_per_neuron", math.nan) for s in synths]
    bars = ax_cost.barh(range(len(synths)), walls, color=[f"C{i}" for i in range(len(synths))])
    for bar, synth in zip(bars, synths):
        r = per_synth.get(synth, {})
        ax_cost.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                     f" fwd {r.get('forward_calls', math.nan):.0f}, bwd {r.get('backward_calls', math.nan):.0f},"
                     f" denoiser {r.get('denoiser_calls', math.nan):.0f}", va="center", fontsize=7)
    ax_cost.set_yticks(range(len(synths)), synths, fontsize=8)
    ax_cost.set_xlabel("wall seconds per neuron")
    ax_cost.set_title("compute", fontsize=9)
    ax_cost.margins(x=0.6)
    fig.tight_layout()
    return _save(fig, path, dpi)
