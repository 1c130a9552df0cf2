"""In-silico benchmark: do the methods recover the parts that really drive a neuron, and the parts a pair shares?

    uv run python benchmarks/insilico.py [--n-per-category 150 --neurons-per-kind 2 --drivers 4]
    uv run python benchmarks/insilico.py --backbone random   # control: the same run on a random backbone

Renders a seeded stimulus set, simulates part-tuned neurons (limbs, head, body, head∧limbs,
``--neurons-per-kind`` jittered variants each), fits the readout on the chosen backbone, picks
each neuron's strongest out-of-category drivers and their best-matching bodies, and runs
``parallel_backprop`` next to the Captum baselines through the normal pipeline
(:func:`sharedattr.experiment.run.run_experiment`). Localisation is scored against the neuron's parts
that *both* images of a pair contain (``data.neuron_parts``), on the driver and on the
reference. Prints a markdown table and appends it, with the command and machine info, to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from record import machine, print_and_append
from sharedattr.config.spec import ExperimentSpec
from sharedattr.data.insilico import DEFAULT_NEURONS, neuron_population, write_insilico
from sharedattr.experiment.run import run_experiment

BODY_KINDS = [n for n in DEFAULT_NEURONS if n.name != "shape"]  # the shape neuron prefers objects: nothing shared
# every path method from the same black baseline and with the same 16 steps (samples), so that differences are the
# methods', not their baselines' (an earlier version compared parallel_backprop from black with IG from mid-grey)
METHODS = [
    {"name": "parallel_backprop"},  # the default: product, layer path
    {"name": "parallel_backprop", "variant": "own"},  # its control on the same path
    {"name": "parallel_backprop", "variant": "positive", "path": "ig", "n_steps": 16, "baseline": 0.0},
    {"name": "saliency"},
    {"name": "input_x_gradient"},
    {"name": "integrated_gradients", "n_steps": 16, "baseline": 0.0},
    {"name": "smoothgrad", "samples": 16},
    {"name": "guided_backprop"},
    {"name": "deep_lift", "baseline": 0.0},
    {"name": "gradient_shap", "baselines": [0.0], "n_samples": 16},
    {"name": "occlusion", "window": 8, "stride": 4, "baseline": 0.0},
    {"name": "grad_cam"},
]
# --variants: which choices inside parallel backprop matter (variant, path, baseline), each path beside its own
# control (variant own) and the single-image method of the same path and baseline
VARIANTS = [
    {"name": "parallel_backprop", "variant": "product", "path": "gradient"},
    {"name": "parallel_backprop", "variant": "positive", "path": "gradient"},
    {"name": "parallel_backprop", "variant": "own", "path": "gradient"},
    {"name": "parallel_backprop", "variant": "product", "path": "layer"},
    {"name": "parallel_backprop", "variant": "positive", "path": "layer"},
    {"name": "parallel_backprop", "variant": "own", "path": "layer"},
    {"name": "parallel_backprop", "variant": "positive", "path": "ig", "n_steps": 16, "baseline": 0.0},
    {"name": "parallel_backprop", "variant": "own", "path": "ig", "n_steps": 16, "baseline": 0.0},
    {"name": "integrated_gradients", "n_steps": 16, "baseline": 0.0},
    {"name": "parallel_backprop", "variant": "positive", "path": "ig", "n_steps": 16, "baseline": 0.5},
    {"name": "parallel_backprop", "variant": "own", "path": "ig", "n_steps": 16, "baseline": 0.5},
    {"name": "integrated_gradients", "n_steps": 16, "baseline": 0.5},
    {"name": "grad_cam"},
]
METRICS = [
    {"name": "relevance_mass"},
    {"name": "pointing_game"},
    {"name": "relevance_rank"},
    {"name": "deletion", "steps": 16, "baseline": 0.5},
    {"name": "gini"},
    {"name": "randomisation"},
]
# (metric, image, column title) of the table
COLUMNS = [
    ("relevance_mass", "driver", "mass drv ↑"),
    ("relevance_mass", "reference", "mass ref ↑"),
    ("pointing_game", "driver", "point drv ↑"),
    ("pointing_game", "reference", "point ref ↑"),
    ("relevance_rank", "driver", "rank drv ↑"),
    ("deletion", "driver", "deletion drv ↓"),
    ("gini", "driver", "gini ↑"),
    ("randomisation", "driver", "random ρ ↓"),
]


def spec_for(data: Path, args: argparse.Namespace, neurons: list[str]) -> ExperimentSpec:
    backbone = (
        {"name": "insilico_cnn", "layer": args.layer, "input_size": args.size}
        if args.backbone == "trained"
        else {"name": "insilico_cnn", "layer": args.layer, "input_size": args.size, "weights": None}
    )
    return ExperimentSpec.model_validate(
        {
            "name": f"insilico-benchmark-{args.backbone}",
            "seed": 0,
            "device": args.device,
            "batch_size": 32,
            "cache": False,
            "data": {
                "stimuli": str(data / "stimuli" / "manifest.csv"),
                "responses": str(data / "responses.csv"),
                "neuron_parts": str(data / "neuron_parts.json"),
                "preferred_category": "bodies",
            },
            "backbone": backbone,
            "readout": {"name": "ridge", "pooling": args.pooling},
            "matcher": {"name": "cosine"},
            "selection": {"neurons": neurons, "drivers_per_neuron": args.drivers},
            "attribution": {"on_reference": True},
            "methods": VARIANTS if args.variants else METHODS,
            "metrics": METRICS,
            "output": {"figures": False},
        }
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table(run: Path, given: list[dict]) -> str:
    """The markdown table of ``run``; ``given`` are the method specs it ran, in order (their labels' notes)."""
    summary = {(r["method"], r["metric"], r["image"]): r for r in read_csv(run / "summary.csv")}
    times = {r["method"]: float(r["ms_per_pair"]) for r in read_csv(run / "methods.csv")}
    lines = ["| method | " + " | ".join(c[2] for c in COLUMNS) + " | ms / pair |", "|---" * (len(COLUMNS) + 2) + "|"]
    for m, spec in zip(times, given):
        cells = []
        for metric, image, _ in COLUMNS:
            r = summary.get((m, metric, image))
            cells.append(
                f"{float(r['mean']):.2f} ± {float(r['sem']):.2f}" if r and r["mean"] not in ("", "nan") else "–"
            )
        note = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("name", "n_steps", "n_samples", "samples"))
        lines.append(f"| {m} ({note}) | " if note else f"| {m} | ")
        lines[-1] += " | ".join(cells) + f" | {times[m]:.1f} |"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-category", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--neurons-per-kind", type=int, default=2)
    parser.add_argument("--drivers", type=int, default=4)
    parser.add_argument("--backbone", choices=["trained", "random"], default="trained")
    parser.add_argument("--layer", default="block3")
    parser.add_argument(
        "--pooling",
        choices=["none", "avg", "max"],
        default="none",
        help="ridge readout's spatial pooling (avg: position-invariant contributions)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="compare parallel_backprop's variants (variant, path, baseline), each beside its own-map control",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-insilico"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    data, run = (
        args.workdir / "data",
        args.workdir / f"run-{args.backbone}-{args.layer}-{args.pooling}{'-variants' if args.variants else ''}",
    )
    neurons = neuron_population(args.neurons_per_kind, seed=0, kinds=BODY_KINDS)
    start = time.perf_counter()
    write_insilico(data, args.n_per_category, args.size, seed=0, neurons=neurons, progress=True)
    result = run_experiment(spec_for(data, args, [n.name for n in neurons]), run, progress=True)
    wall = time.perf_counter() - start
    pairs = len(result.pairs)
    text = table(run, VARIANTS if args.variants else METHODS)
    r = result.test_r[result.selected]
    heading = (
        f"### In-silico shared-part localisation{', parallel_backprop variants' if args.variants else ''}: "
        f"{args.backbone} `insilico_cnn` ({args.layer}), "
        f"ridge pooling {args.pooling}, {len(result.selected)} neurons × {args.drivers} drivers = {pairs} pairs, "
        f"{2 * args.n_per_category} images at {args.size} px"
    )
    notes = (
        f"Held-out r of the explained neurons: median {r.median():.2f} (min {r.min():.2f}). "
        f"Localisation is scored against the neuron's parts present in both images of each pair. "
        f"Total wall time {wall:.0f} s.\n\n{machine(args.device)}"
    )
    print_and_append(f"{heading}\n\n{text}\n\n{notes}\n", write=not args.no_write)


if __name__ == "__main__":
    main()
