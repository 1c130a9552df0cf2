"""The EGG paper's modelling comparison on in-silico data: a data-driven core trained end to end with its readout
against a task-driven (frozen) backbone with a readout, held-out r and FEV on the same split.

    uv run python benchmarks/core.py [--n-per-category 100 --neurons-per-kind 2 --size 64 --write]

Renders a seeded in-silico stimulus set (bodies and objects) with part-tuned neurons recorded twice (so FEV is
defined), then fits each model with ``sharedattr fit``'s stage on the same train/test split
(``data.split_seed``): ``stacked_core`` trained jointly with an ``attention`` and a ``gaussian2d`` readout, and the
shipped task-driven ``insilico_cnn`` (frozen, trained to tell the parts apart) with the same readouts and with ridge.
Every trained readout uses the same settings (MSE, identity output, the learning rate dropping on a plateau).
Prints a markdown table (median held-out r, mean FEV, seconds) and, with ``--write``, appends it with the machine
and command to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from record import machine, print_and_append
from sharedattr.config.validation import validate_experiment
from sharedattr.data.insilico import neuron_population, write_insilico
from sharedattr.experiment.stages import fit_experiment


def models(args: argparse.Namespace) -> list[tuple[str, dict, dict]]:
    core = {
        "name": "stacked_core",
        "layers": 3,
        "channels": 16,
        "input_kernel": 9,
        "hidden_kernel": 5,
        "input_stride": 2,
        "input_size": args.size,
    }
    task = {"name": "insilico_cnn", "weights": "insilico-v1", "layer": "block3", "input_size": args.size}
    # the same readout settings on every backbone; MSE with an identity output, since the simulated responses carry
    # Gaussian noise and go below 0 (the core's default Poisson loss needs counts)
    trained = {"max_epochs": args.epochs, "patience": 10, "batch_size": 32, "seed": 0, "loss": "mse"}
    trained |= {"nonlinearity": "identity", "lr_decay_factor": 0.3}
    return [
        ("data-driven core + attention", core, {"name": "attention", **trained}),
        ("data-driven core + gaussian2d", core, {"name": "gaussian2d", **trained}),
        ("task-driven insilico_cnn block3 (frozen) + attention", task, {"name": "attention", **trained}),
        ("task-driven insilico_cnn block3 (frozen) + gaussian2d", task, {"name": "gaussian2d", **trained}),
        ("task-driven insilico_cnn block3 (frozen) + ridge", task, {"name": "ridge"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-per-category", type=int, default=100)
    parser.add_argument("--neurons-per-kind", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        neurons = neuron_population(args.neurons_per_kind, seed=0)
        files = write_insilico(folder / "data", args.n_per_category, args.size, seed=0, neurons=neurons, repeats=2)
        lines = [
            f"### Data-driven core vs task-driven backbone: {len(neurons)} in-silico neurons (2 repeats), "
            f"{2 * args.n_per_category} images at {args.size} px, one train/test split",
            "",
            "| model | median held-out r | mean FEV | seconds |",
            "|---|---|---|---|",
        ]
        for label, backbone, readout in models(args):
            spec = validate_experiment(
                {
                    "name": "core-benchmark",
                    "device": "cpu",
                    "batch_size": 32,
                    "cache": False,
                    "data": {"stimuli": str(files.manifest), "responses": str(files.responses)},
                    "backbone": backbone,
                    "readout": readout,
                    "output": {"figures": False},
                }
            )
            start = time.perf_counter()
            fit = fit_experiment(spec, folder / label.replace(" ", "_"), progress=False).fit
            seconds = time.perf_counter() - start
            r = statistics.median(fit.test_r.tolist())
            fev = [v for v in (fit.fev.tolist() if fit.fev is not None else []) if v == v]
            fev_text = f"{statistics.mean(fev):.3f}" if fev else "n/a"
            lines.append(f"| {label} | {r:.3f} | {fev_text} | {seconds:.0f} |")
            print(lines[-1], flush=True)
        lines += ["", machine("cpu"), ""]
        print_and_append("\n".join(lines), write=args.write)


if __name__ == "__main__":
    main()
