"""How many deletion steps does a verdict need? The deletion AUC at ``--steps`` against a fine reference.

    uv run python benchmarks/deletion_steps.py [--n-per-category 100 --steps 5 10 20 --reference 100]

A deletion curve costs ``steps - 1`` forward passes per map (the clean and the all-baseline ends are
shared), so its step count sets the metrics' cost. This benchmark scores the same maps with
``deletion`` at each of ``--steps`` and at ``--reference`` steps, in one run: a seeded in-silico
stimulus set (``--n-per-category`` per category, 64 px grey, part masks), the shipped
``insilico_cnn`` at block3 + ridge, ``parallel_backprop``, ``saliency`` and ``integrated_gradients``
(16 steps) on the 8 best neurons × 2 drivers × 2 references. For each step count it reports, over
every map (drivers and references of every method): the mean and largest absolute difference of
the AUC from the reference, the Spearman correlation with it, each method's mean AUC, and the
paired comparison of every two methods (Wilcoxon signed-rank test on the same pairs, mean paired
difference with its 95 % interval, :mod:`sharedattr.report.stats`): does the verdict change? It also
reports the scoring time per map (``metric_times.csv``). Prints a markdown table and appends it to
docs/benchmarks.md (not with ``--no-write``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import time
from pathlib import Path

import numpy as np
from scipy import stats

from record import machine, print_and_append
from sharedattr.config.spec import ExperimentSpec
from sharedattr.data.insilico import write_insilico
from sharedattr.experiment.run import run_experiment
from sharedattr.plugins.specs import labels as spec_labels
from sharedattr.report.stats import paired_test

METHODS = [
    {"name": "parallel_backprop"},
    {"name": "saliency"},
    {"name": "integrated_gradients", "n_steps": 16},
]


def spec_for(data: Path, steps: list[int], args: argparse.Namespace) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "name": "deletion-steps",
            "seed": 0,
            "device": "cpu",
            "batch_size": 16,
            "cache": False,
            "data": {
                "stimuli": str(data / "stimuli" / "manifest.csv"),
                "responses": str(data / "responses.csv"),
                "neuron_parts": str(data / "neuron_parts.json"),
                "preferred_category": "bodies",
            },
            "backbone": {"name": "insilico_cnn", "layer": "block3", "input_size": 64},
            "readout": {"name": "ridge"},
            "selection": {"top_k": 8, "drivers_per_neuron": 2, "references_per_driver": 2},
            "methods": METHODS,
            "metrics": [{"name": "deletion", "steps": k} for k in steps],
            "output": {"figures": False},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-category", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--reference", type=int, default=100, help="the fine step count the others are compared to")
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-deletion-steps"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    start = time.perf_counter()
    data, out = args.workdir / "data", args.workdir / "out"
    write_insilico(data, args.n_per_category, 64, seed=0)
    all_steps = [*args.steps, args.reference]
    spec = spec_for(data, all_steps, args)
    run_experiment(spec, out, progress=True)
    labels = spec_labels(spec.metrics)
    steps_of = dict(zip(labels, all_steps))
    ref_label = labels[-1]
    rows = list(csv.DictReader((out / "results.csv").open()))
    values: dict[str, dict[tuple, float]] = {label: {} for label in labels}
    for r in rows:
        key = (r["method"], r["image"], r["neuron"], r["driver"], r["reference"], r["rank"])
        values[r["metric"]][key] = float(r["value"])
    keys = [k for k in values[ref_label] if all(math.isfinite(values[m].get(k, math.nan)) for m in labels)]
    ref = np.array([values[ref_label][k] for k in keys])
    seconds: dict[str, float] = {}
    maps: dict[str, int] = {}
    for r in csv.DictReader((out / "metric_times.csv").open()):
        seconds[r["metric"]] = seconds.get(r["metric"], 0.0) + float(r["seconds"])
        maps[r["metric"]] = maps.get(r["metric"], 0) + int(r["maps"])
    method_names = [m["name"] for m in METHODS]
    method_pairs = list(itertools.combinations(method_names, 2))
    lines = [
        "| steps | ms / map | mean abs diff from "
        f"{args.reference} steps | largest | Spearman ρ | "
        + " | ".join(f"{m} mean AUC" for m in method_names)
        + " | "
        + " | ".join(f"{a} vs {b}: mean diff [95 % CI], p" for a, b in method_pairs)
        + " |",
        "|" + "---|" * (5 + len(method_names) + len(method_pairs)),
    ]
    for label in labels:
        v = np.array([values[label][k] for k in keys])
        diff = np.abs(v - ref)
        rho = stats.spearmanr(v, ref).statistic if label != ref_label else 1.0
        means = []
        for m in method_names:
            mv = [values[label][k] for k in keys if k[0] == m]
            means.append(f"{np.mean(mv):.4f}")
        tests = []
        for a, b in method_pairs:
            pa = {k[1:]: values[label][k] for k in keys if k[0] == a}
            pb = {k[1:]: values[label][k] for k in keys if k[0] == b}
            common = [k for k in pa if k in pb]
            t = paired_test([pa[k] for k in common], [pb[k] for k in common], higher_is_better=False)
            tests.append(f"{t.mean_diff:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p {t.p:.2g}")
        lines.append(
            f"| {steps_of[label]} | {1000 * seconds[label] / maps[label]:.1f} | {diff.mean():.4f} | {diff.max():.4f} "
            f"| {rho:.4f} | " + " | ".join(means) + " | " + " | ".join(tests) + " |"
        )
    heading = (
        f"### Deletion steps: the AUC at {', '.join(map(str, args.steps))} steps against {args.reference}, "
        f"{len(keys)} maps (`insilico_cnn` block3 + ridge, {2 * args.n_per_category} images at 64 px)"
    )
    body = (
        f"The same maps of {', '.join(method_names)} (drivers and references of 8 neurons × 2 drivers × 2 references) "
        "scored by `deletion` at every step count in one run; mean diff > 0: the first method's AUC is lower "
        "(better), Wilcoxon signed-rank p on the same pairs. ms / map from metric_times.csv. "
        f"Total wall time {time.perf_counter() - start:.0f} s (work items reused from an earlier run are not "
        f"recomputed). {machine('cpu')}"
    )
    print_and_append(f"{heading}\n\n" + "\n".join(lines) + f"\n\n{body}\n", write=not args.no_write)


if __name__ == "__main__":
    main()
