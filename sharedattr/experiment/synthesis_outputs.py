"""The synthesis stage's outputs: the rows of ``scores.csv`` (every item on every evaluator), the per synthesizer ×
evaluator summary, the files and figures of a synthesis folder, and the summary as text.

Files (named in :mod:`sharedattr.runtime.run_files`): ``scores.csv``, ``summary.csv``, ``evaluators.csv``,
``equal_activation.csv`` (with an iterative synthesizer beside another), ``images.safetensors``, and with figures on
``images.png``, ``comparison.png`` and ``prior_samples.png``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.config.spec import ExperimentSpec
from sharedattr.experiment.tables import text_table
from sharedattr.report.stats import mean_sem
from sharedattr.runtime.io import atomic_save_tensors
from sharedattr.runtime.run_files import (
    EQUAL_ACTIVATION,
    EVALUATORS,
    PRIOR_CHECKS,
    PRIOR_SAMPLES_GRID,
    SYNTHESIS_COMPARISON,
    SYNTHESIS_COSTS,
    SYNTHESIS_GRID,
    SYNTHESIS_IMAGES,
    SYNTHESIS_SCORES,
    SYNTHESIS_SUMMARY,
)
from sharedattr.synthesis.evaluation import Evaluator

N_NATURAL = 4
"""Most exciting natural images kept (and shown) per neuron."""


@dataclass
class SynthesisRun:
    """What :func:`run_synthesis` wrote, in memory."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    evaluators: list[Evaluator]
    images: dict[str, Tensor]
    histories: dict[str, Tensor]  # "<synthesizer>/<neuron>" → [steps, S] train-model response per step
    prior_samples: dict[str, Tensor] = field(default_factory=dict)  # synthesizer label → unguided samples
    neuron_ids: list[str] = field(default_factory=list)  # the selected neurons, in selection order
    labels: list[str] = field(default_factory=list)  # the synthesizers, in config order
    prior_checks: list[dict[str, Any]] = field(default_factory=list)  # rows of priors.csv (PRIOR_CHECKS)
    equal_rows: list[dict[str, Any]] = field(default_factory=list)  # rows of equal_activation.csv (EQUAL_ACTIVATION)


@dataclass
class EqualActivation:
    """An iterative synthesizer's iterates ``images`` ``[S, C, H, W]`` for one neuron at the step where each seed's
    train-model response first reaches ``targets`` ``[S]``, the train activation of synthesizer ``matched_to``
    (:func:`~sharedattr.synthesis.evaluation.steps_to_reach`: ``steps``, ``reached``); ``steps_run`` and ``wall_s``:
    the iterative synthesizer's own run of the neuron (its steps and seconds)."""

    synthesizer: str
    matched_to: str
    neuron_id: str
    steps: list[int]
    reached: list[bool]
    targets: list[float]
    images: Tensor
    steps_run: float
    wall_s: float

    def passes(self, seed: int) -> float:
        """Forward+backward passes to reach the target: ``step + 1``, or the full run where it never does
        (right-censored at the budget)."""
        return float(self.steps[seed] + 1) if self.reached[seed] else self.steps_run


def evaluated(
    evaluators: list[Evaluator], images: Tensor, neuron: int, batch_size: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Images ``[S, C, H, W]`` of output ``neuron`` scored on every evaluator: per evaluator × seed, ``(seed,
    {evaluator, role, response, best_natural, relative})``, the response relative to the evaluator's prediction for
    the neuron's best natural image (NaN where that is not positive), as ``scores.csv`` and ``equal_activation.csv``
    hold it."""
    for evaluator in evaluators:
        responses = evaluator.responses(images, neuron, batch_size)
        best = float(evaluator.best_natural[neuron])
        for seed, value in enumerate(responses.tolist()):
            yield (
                seed,
                {
                    "evaluator": evaluator.label,
                    "role": evaluator.role,
                    "response": value,
                    "best_natural": best,
                    "relative": value / best if best > 0 else math.nan,
                },
            )


def evaluator_rows(
    evaluators: list[Evaluator],
    images: Tensor,
    neuron: int,
    neuron_id: str,
    label: str,
    cost: dict[str, float],
    batch_size: int,
) -> list[dict[str, Any]]:
    """The rows of ``scores.csv`` for one synthesizer's images ``[S, C, H, W]`` of one neuron: one per evaluator ×
    seed, the response relative to the evaluator's prediction for the neuron's best natural image."""
    rows = []
    for seed, scored in evaluated(evaluators, images, neuron, batch_size):
        rows.append({"neuron": neuron_id, "synthesizer": label, "seed": seed, **scored, **cost})
    return rows


def equal_activation_rows(
    evaluators: list[Evaluator], item: EqualActivation, neuron: int, batch_size: int
) -> list[dict[str, Any]]:
    """The rows of ``equal_activation.csv`` for ``item`` (output ``neuron``): its iterates on every evaluator ×
    seed, relative to the evaluator's best natural image as in ``scores.csv``, with the step, whether it was
    reached, the target and the compute to reach it (:meth:`EqualActivation.passes`, and its seconds: the run's
    seconds × passes ÷ steps run)."""
    rows = []
    for seed, scored in evaluated(evaluators, item.images, neuron, batch_size):
        passes = item.passes(seed)
        rows.append(
            {
                "neuron": item.neuron_id,
                "synthesizer": item.synthesizer,
                "matched_to": item.matched_to,
                "seed": seed,
                "step": item.steps[seed],
                "reached": item.reached[seed],
                "target": item.targets[seed],
                "passes": passes,
                "seconds": item.wall_s * passes / item.steps_run if item.steps_run > 0 else math.nan,
                **scored,
            }
        )
    return rows


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def add_equal_activation(
    summary: list[dict[str, Any]], equal_rows: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> None:
    """Add to each summary row of a synthesizer another one was matched to (``matched_to`` in ``equal_rows``) the
    comparison at equal train activation (the columns :data:`~sharedattr.runtime.run_files.SYNTHESIS_SUMMARY`
    describes): the matched synthesizer's mean relative activation at equal train activation on that evaluator,
    and, over its train rows (one per neuron × seed), the median passes to reach, the censoring rate and the median
    of its seconds to reach ÷ this synthesizer's seconds for the neuron (``wall_s`` in ``rows``)."""
    wall = {(r["synthesizer"], r["neuron"]): float(r.get("wall_s", math.nan)) for r in rows}
    for row in summary:
        matched = [r for r in equal_rows if r["matched_to"] == row["synthesizer"]]
        if not matched:
            continue
        train = [r for r in matched if r["role"] == "train"]
        mean, _, _ = mean_sem(r["relative"] for r in matched if r["evaluator"] == row["evaluator"])
        row |= {
            "equal_activation_by": matched[0]["synthesizer"],
            "relative_at_equal_train": mean,
            "steps_to_equal": _median([r["passes"] for r in train]),
            "censored_rate": sum(not r["reached"] for r in train) / len(train) if train else math.nan,
            "compute_to_equal": _median(
                [r["seconds"] / (wall.get((row["synthesizer"], r["neuron"])) or math.nan) for r in train]
            ),
        }


def warn_undefined(rows: list[dict[str, Any]]) -> None:
    """Warn where the relative activation is undefined: the evaluator predicts no positive response to any natural
    image of the neuron."""
    bad = sorted({(r["neuron"], r["evaluator"]) for r in rows if not r["best_natural"] > 0})
    if bad:
        warnings.warn(
            f"relative activation is undefined (left empty) where the evaluator predicts no positive "
            f"response to any natural image: {bad}",
            stacklevel=3,
        )


def _mean_of(rows: list[dict[str, Any]], key: str) -> float:
    """The mean of ``key`` over ``rows`` (NaN where a row lacks it, or without rows)."""
    values = [float(r.get(key, math.nan)) for r in rows]
    return sum(values) / len(values) if values else math.nan


def summarise_synthesis(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per synthesizer × evaluator: mean ± sem of ``relative`` over neurons × seeds (the finite values,
    :func:`~sharedattr.report.stats.mean_sem`), and the mean cost."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["synthesizer"], r["evaluator"], r["role"]), []).append(r)
    out = []
    for (synth, evaluator, role), group in groups.items():
        mean, sem, n = mean_sem(r["relative"] for r in group)
        per_neuron = list({r["neuron"]: r for r in group}.values())  # cost is per (synthesizer, neuron)
        avg = partial(_mean_of, per_neuron)
        out.append(
            {
                "synthesizer": synth,
                "evaluator": evaluator,
                "role": role,
                "mean_relative": mean,
                "sem_relative": sem,
                "n": n,
                "mean_response": sum(r["response"] for r in group) / len(group),
                "wall_s_per_neuron": avg("wall_s"),
                "forward_calls": avg("forward_calls"),
                "backward_calls": avg("backward_calls"),
                "denoiser_calls": avg("denoiser_calls"),
            }
        )
    return out


def write_synthesis(folder: Path, spec: ExperimentSpec, result: SynthesisRun) -> None:
    """``scores.csv``, ``summary.csv``, ``evaluators.csv``, ``images.safetensors`` and, with figures on, the
    figures (:func:`write_figures`)."""
    rows = result.rows
    cost_columns = [c for c in SYNTHESIS_COSTS if any(c in r for r in rows)]
    cost_columns += sorted({k for r in rows for k in r} - set(SYNTHESIS_SCORES.header) - set(cost_columns))
    SYNTHESIS_SCORES.write(folder, rows, cost_columns)
    SYNTHESIS_SUMMARY.write(folder, result.summary)
    EVALUATORS.write(folder, evaluator_table(result.evaluators))
    if result.prior_checks:
        PRIOR_CHECKS.write(folder, result.prior_checks)
    if result.equal_rows:
        EQUAL_ACTIVATION.write(folder, result.equal_rows)
    atomic_save_tensors(
        folder / SYNTHESIS_IMAGES,
        {**result.images, **{f"prior_samples/{k}": v for k, v in result.prior_samples.items()}},
    )
    if spec.output.figures:
        write_figures(folder, spec, result)


def evaluator_table(evaluators: list[Evaluator]) -> list[dict[str, Any]]:
    """The rows of ``evaluators.csv``: each evaluator, its role, its model and its median held-out r."""
    return [
        {
            "evaluator": e.label,
            "role": e.role,
            "model": e.description,
            "median_test_r": float(e.test_r[torch.isfinite(e.test_r)].median())
            if torch.isfinite(e.test_r).any()
            else math.nan,
        }
        for e in evaluators
    ]


def write_figures(folder: Path, spec: ExperimentSpec, result: SynthesisRun) -> None:
    """``images.png`` (each neuron's natural and synthesised images), ``comparison.png`` (activation per evaluator
    role and compute) and, with a prior, ``prior_samples.png``."""
    from sharedattr.report.figures import comparison_figure, image_grid  # matplotlib only when figures are on

    images = result.images
    grid = {}
    for neuron in result.neuron_ids:
        grid[f"{neuron} · natural (top {N_NATURAL})"] = images[f"natural/{neuron}"]
        for label in result.labels:
            grid[f"{neuron} · {label}"] = images[f"{label}/{neuron}"]
    image_grid(grid, folder / SYNTHESIS_GRID, spec.output.dpi)
    comparison_figure(result.summary, folder / SYNTHESIS_COMPARISON, spec.output.dpi)
    if result.prior_samples:
        sample_rows = {
            f"{label}: unguided prior samples {i + 1}–{i + len(chunk)}": chunk
            for label, v in result.prior_samples.items()
            for i, chunk in zip(range(0, len(v), 8), v.split(8))
        }
        image_grid(sample_rows, folder / PRIOR_SAMPLES_GRID, spec.output.dpi)


def format_synthesis_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (:func:`~sharedattr.experiment.tables.text_table`); with a comparison
    at equal train activation (:func:`add_equal_activation`), also its columns: the matched synthesizer's relative
    activation there, its median passes to reach (right-censored) with the censoring rate, and its compute to reach
    ÷ this synthesizer's."""
    header = ["synthesizer", "evaluator", "role", "relative ± sem", "n", "s/neuron", "fwd", "bwd", "denoiser"]
    matched = any(r.get("equal_activation_by") for r in summary)
    if matched:
        header += ["equal-train: by", "relative", "passes (censored)", "compute ÷ own"]
    return text_table(header, [_summary_cells(r) + (_equal_cells(r) if matched else []) for r in summary])


def _equal_cells(r: dict[str, Any]) -> list[str]:
    if not r.get("equal_activation_by"):
        return ["", "", "", ""]
    return [
        r["equal_activation_by"],
        f"{r['relative_at_equal_train']:.3f}",
        f"{r['steps_to_equal']:.0f} ({r['censored_rate']:.0%})",
        f"{r['compute_to_equal']:.2f}",
    ]


def _summary_cells(r: dict[str, Any]) -> list[str]:
    relative = f"{r['mean_relative']:.3f}"
    if math.isfinite(r["sem_relative"]):
        relative += f" ± {r['sem_relative']:.3f}"
    return [
        r["synthesizer"],
        r["evaluator"],
        r["role"],
        relative,
        str(r["n"]),
        f"{r['wall_s_per_neuron']:.2f}",
        f"{r['forward_calls']:.0f}",
        f"{r['backward_calls']:.0f}",
        f"{r['denoiser_calls']:.0f}",
    ]
