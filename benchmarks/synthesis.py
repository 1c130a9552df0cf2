"""Synthesis benchmark: EGG against gradient ascent on in-silico neurons (the EGG paper's protocol).

    uv run python benchmarks/synthesis.py [--n-per-category 150 --seeds 3 --ga-steps 1000]
    uv run python benchmarks/synthesis.py --prior insilico-ddpm-v2 --preset reference --units pixel \
        --weights insilico-resnet18-v1 --egg ddpm:0.0226 ddpm:0.05 ddpm:0.1     # the fair test of issue 18

``--train-model core`` runs the paper's protocol on the data-driven train model (issue 27): the ``stacked_core`` +
attention readout trained jointly (as ``benchmarks/core.py``), val evaluators of the same architecture fitted with
other seeds (the core's initialisation and the data split), both shipped task-driven networks (frozen, block3, with
the same readout) as cross-architecture evaluators, and a random-feature floor.

λ is fixed in advance (issue 27): the neurons are split, per kind, into validation neurons (the first
``--val-per-kind`` variants) and held-out neurons (the others, disjoint). With several ``--egg`` runs, each
samples the validation neurons first, and the one with the highest mean relative activation on the val evaluators
(the train architecture fitted on other splits: the paper's validation models) is chosen; gradient ascent and the
chosen EGG run then synthesise only the held-out neurons, and every table reports those. One ``--egg`` run is
fixed in advance as given. Gradient ascent and EGG loop over ``--neuron-batch`` neurons alike.

Renders a seeded in-silico stimulus set, simulates the part-tuned neurons (limbs, head,
body, head∧limbs, shape; ``--per-kind`` variants of each), fits the "train" model (``insilico_cnn``
with ``--weights``, block3 + ridge) and the evaluators: the same network fitted on other data
splits ("val"), the same network at block2 and block4 ("cross-layer") and the other shipped
architecture at block3 and block4 ("cross-arch"), and the train network with random weights ("floor").
Gradient ascent (AdamW, blurred gradients,
fixed norm) and EGG (``--prior``, ``--preset``, λ in ``--units``, several guidance scales) synthesise
for every neuron through :func:`sharedattr.experiment.synthesize.synthesize_experiment`. Both are
held to the same contrast: the norm ‖x − 0.5‖₂ of the model's input is fixed to the mean
norm of the natural stimuli. Activations are relative to each evaluator's prediction for the
neuron's best natural image. Compute: wall time and calls per neuron, the gradient-ascent
steps (and seconds) needed to reach EGG's within-model activation, read off its history, and
each synthesizer's time against the floor of bare forward+backward passes. Paired over neurons ×
seeds (and per neuron, seeds averaged): EGG's train activation as a fraction of gradient ascent's
and the transfer ratio cross ÷ train of each (Wilcoxon signed-rank, :mod:`sharedattr.report.stats`).
Beside the plain ratio, gradient ascent's iterate at the step where it first reaches EGG's train activation
(``equal_activation.csv``) gives the transfer at equal train activation, and the compute to reach that activation
counts the neurons × seeds it never reaches at its full run (right-censored at the budget, with the censoring rate).
Prints markdown tables and appends them, with the command and machine info, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from record import machine, print_and_append
from sharedattr.config.spec import ExperimentSpec
from sharedattr.data import StimulusSet
from sharedattr.data.insilico import DEFAULT_NEURONS, neuron_population, write_insilico
from sharedattr.experiment.synthesize import synthesize_experiment
from sharedattr.report.figures import role_means

WEIGHTS = ("insilico-v1", "insilico-resnet18-v1")  # the plain CNN and the ResNet-18-shaped network
ARCH_PREFIX = "cross-arch-"  # evaluators of the other architecture; "cross-layer-": the same network, another layer


def evaluators_for(weights: str, size: int) -> list[dict]:
    """Two val evaluators (other data splits), two of the same network at other layers, two of the other
    architecture (the other shipped weights) at block3 and block4, and the floor: the train network's architecture
    with random weights at block3. Every one fitted to the same responses."""
    other = next(w for w in WEIGHTS if w != weights)

    def backbone(w: str | None, layer: str) -> dict:
        return {"name": "insilico_cnn", "weights": w, "layer": layer, "input_size": size}

    return [
        {"label": "val-split1", "role": "val", "split_seed": 1},
        {"label": "val-split2", "role": "val", "split_seed": 2},
        {"label": "cross-layer-block4", "role": "cross", "backbone": backbone(weights, "block4")},
        {"label": "cross-layer-block2", "role": "cross", "backbone": backbone(weights, "block2")},
        {"label": f"{ARCH_PREFIX}block3", "role": "cross", "backbone": backbone(other, "block3")},
        {"label": f"{ARCH_PREFIX}block4", "role": "cross", "backbone": backbone(other, "block4")},
        {"label": "floor-random-block3", "role": "floor", "backbone": backbone(None, "block3")},
    ]


def core_backbone(size: int, seed: int = 0) -> dict:
    """The data-driven core of ``benchmarks/core.py`` (``stacked_core``, 3 layers × 16 channels, first kernel 9,
    stride 2), its weights initialised from ``seed``."""
    return {
        "name": "stacked_core",
        "layers": 3,
        "channels": 16,
        "input_kernel": 9,
        "hidden_kernel": 5,
        "input_stride": 2,
        "input_size": size,
        "seed": seed,
    }


def core_readout(epochs: int) -> dict:
    """The attention readout trained jointly with the core, as ``benchmarks/core.py`` trains it (MSE, identity
    output: the simulated responses carry Gaussian noise and go below 0)."""
    trained = {"max_epochs": epochs, "patience": 10, "batch_size": 32, "seed": 0, "loss": "mse"}
    return {"name": "attention", **trained, "nonlinearity": "identity", "lr_decay_factor": 0.3}


def core_evaluators(size: int) -> list[dict]:
    """The paper's protocol on the data-driven train model: two val evaluators (the same core + attention fitted
    with other seeds: the core's initialisation and the data split), both shipped task-driven networks (frozen,
    block3, with the same attention readout) as cross-architecture evaluators, and a random-feature floor."""

    def task(w: str | None) -> dict:
        return {"name": "insilico_cnn", "weights": w, "layer": "block3", "input_size": size}

    return [
        {"label": "val-seed1", "role": "val", "backbone": core_backbone(size, 1), "split_seed": 1},
        {"label": "val-seed2", "role": "val", "backbone": core_backbone(size, 2), "split_seed": 2},
        *({"label": f"{ARCH_PREFIX}{w}", "role": "cross", "backbone": task(w)} for w in WEIGHTS),
        {"label": "floor-random-block3", "role": "floor", "backbone": task(None)},
    ]


def natural_norm(stimuli: Path, size: int) -> float:
    """Mean ‖x − 0.5‖₂ of the natural stimuli at the model's input size (grey, [0, 1] pixels)."""
    images = StimulusSet.load(stimuli).load_images((size, size), 1)
    return float((images - 0.5).flatten(1).norm(dim=1).mean())


def synthesizers(args: argparse.Namespace, norm: float, eggs: list[str] | None = None) -> list[dict]:
    """Gradient ascent and one EGG run per ``eggs`` item (``SCHEDULER:λ``; default ``--egg``), both looping over
    ``--neuron-batch`` neurons at once."""
    ga = {
        "name": "gradient_ascent",
        "steps": args.ga_steps,
        "lr": args.ga_lr,
        "optimizer": "adamw",
        "precondition": "blur",
        "blur_sigma": 1.0,
        "norm": norm,
        "clip": False,
        "n_seeds": args.seeds,
        "neuron_batch": args.neuron_batch,
    }
    eggs = [
        {
            "name": "egg",
            "prior": args.prior,
            "preset": args.preset,
            "guidance_units": args.units,
            "steps": args.egg_steps,
            "scheduler": item.split(":")[0],
            "guidance_scale": float(item.split(":")[1]),
            "energy": {"name": "mei", "norm": norm},
            "n_seeds": args.seeds,
            "neuron_batch": args.neuron_batch,
        }
        for item in (args.egg if eggs is None else eggs)
    ]
    return [ga, *eggs]


def spec_for(
    data: Path, args: argparse.Namespace, synthesis: list[dict], neurons: list[str], model: Path | None = None
) -> ExperimentSpec:
    """The benchmark's experiment: the train model and evaluators of ``--train-model`` (``task``: the shipped
    ``insilico_cnn`` block3 + ridge; ``core``: the data-driven core + attention, :func:`core_evaluators`); ``model``:
    a fit of the same train model to reuse (the λ-selection stage's), not fitted again."""
    if args.train_model == "core":
        backbone, readout = core_backbone(args.size), core_readout(args.core_epochs)
        evaluators = core_evaluators(args.size)
    else:
        backbone = {"name": "insilico_cnn", "weights": args.weights, "layer": "block3", "input_size": args.size}
        readout, evaluators = {"name": "ridge"}, evaluators_for(args.weights, args.size)
    return ExperimentSpec.model_validate(
        {
            "name": "synthesis-benchmark",
            "seed": 0,
            "device": args.device,
            "batch_size": 32,
            "cache": False,
            "data": {
                "stimuli": str(data / "stimuli" / "manifest.csv"),
                "responses": str(data / "responses.csv"),
                "preferred_category": "bodies",
            },
            "backbone": backbone,
            "readout": readout,
            "selection": {"neurons": neurons},
            "synthesis": synthesis,
            "evaluators": evaluators,
            "output": {"figures": True},
            **({"model": str(model)} if model is not None else {}),
        }
    )


def fmt(mean: float, sem: float) -> str:
    return "–" if not math.isfinite(mean) else f"{mean:.2f} ± {sem:.2f}" if math.isfinite(sem) else f"{mean:.2f}"


def table(result, labels: list[str], specs: list[dict]) -> tuple[str, list[str]]:
    """The markdown table and the notes on compute to reach EGG's activation."""
    means = role_means(result.summary)
    train = {r["synthesizer"]: r for r in result.summary if r["role"] == "train"}
    lines = [
        "| synthesizer | train ↑ | val ↑ | cross ↑ | floor (random features) | s / neuron | model fwd+bwd / neuron "
        "| denoiser calls / neuron |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, spec in zip(labels, specs):
        m, t = means[label], train[label]
        note = (
            f"λ {spec['guidance_scale']}, {spec['steps']} {spec['scheduler'].upper()} steps"
            if spec["name"] == "egg"
            else f"{spec['steps']} steps, lr {spec['lr']}, blur σ {spec['blur_sigma']}"
        )
        lines.append(
            f"| {label} ({note}) | "
            + " | ".join(fmt(*m.get(role, (math.nan, math.nan))) for role in ("train", "val", "cross", "floor"))
            + f" | {t['wall_s_per_neuron']:.2f} | {t['forward_calls'] + t['backward_calls']:.0f}"
            + f" | {t['denoiser_calls']:.0f} |"
        )
    notes = []
    for label in labels[1:]:
        t = train[label]
        censored = t.get("censored_rate", math.nan)
        notes.append(
            f"`{label}`: gradient ascent reaches this EGG run's train activation (per neuron × seed) after a median "
            f"{t.get('steps_to_equal', math.nan):.0f} of {specs[0]['steps']} steps; it never does for "
            f"{censored:.0%} of neurons × seeds, counted at its full run (right-censored at the budget"
            f"{'; the median is exact below 50 %' if censored < 0.5 else '; a lower bound at 50 % or more'}). "
            f"Compute to the same activation, GA's seconds to reach ÷ EGG's (median): "
            f"{t.get('compute_to_equal', math.nan):.2f}×."
        )
    return "\n".join(lines), notes


def per_sample(rows: list[dict], label: str, keep) -> dict[tuple[str, int], float]:  # noqa: ANN001 - a predicate
    """``(neuron, seed)`` → the mean relative activation of synthesizer ``label`` over the evaluators ``keep`` takes."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if r["synthesizer"] == label and keep(r) and math.isfinite(r["relative"]):
            groups.setdefault((r["neuron"], int(r["seed"])), []).append(r["relative"])
    return {k: sum(v) / len(v) for k, v in groups.items()}


def paired_table(result, labels: list[str]) -> str:
    """Each EGG run against gradient ascent on the same neurons × seeds: train activation ratio, and the transfer
    ratio cross ÷ train for the other architecture and for the other layers (paired test, :mod:`report.stats`)."""
    from sharedattr.report.stats import confidence_interval, paired_test

    rows, ga = result.rows, labels[0]
    train = {lab: per_sample(rows, lab, lambda r: r["role"] == "train") for lab in labels}
    arch = {lab: per_sample(rows, lab, lambda r: r["evaluator"].startswith(ARCH_PREFIX)) for lab in labels}
    layer = {lab: per_sample(rows, lab, lambda r: r["evaluator"].startswith("cross-layer-")) for lab in labels}
    equal = result.equal_rows  # GA's iterates at each EGG run's train activation (matched_to: the EGG run)
    wall = {r["synthesizer"]: r["wall_s_per_neuron"] for r in result.summary if r["role"] == "train"}
    lines = [
        "| EGG run | n | train: EGG ÷ GA [95 % CI] | cross-arch ÷ train: EGG, GA; EGG − GA [95 % CI], p | "
        "cross-layer ÷ train: EGG, GA; EGG − GA [95 % CI], p | cross-arch ÷ train at equal train activation: EGG, "
        "GA; EGG − GA [95 % CI], p | wall: EGG ÷ GA's full run |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in labels[1:]:
        keys = sorted(k for k in train[ga] if k in train[label] and train[ga][k] > 0 and train[label][k] > 0)
        ratio = np.array([train[label][k] / train[ga][k] for k in keys])
        low, high = confidence_interval(ratio)
        cells = []
        neurons = sorted({k[0] for k in keys})
        for cross in (arch, layer):
            if not cross[label]:  # no evaluator of this family (the core's protocol has no cross-layer ones)
                cells.append("–")
                continue
            egg = [cross[label][k] / train[label][k] for k in keys]
            gas = [cross[ga][k] / train[ga][k] for k in keys]
            t = paired_test(egg, gas)
            # the same per neuron, its seeds averaged first (seeds of one neuron are not independent)
            per = {n: [e - g for k, e, g in zip(keys, egg, gas) if k[0] == n] for n in neurons}
            tn = paired_test([float(np.mean(v)) for v in per.values()], [0.0] * len(per))
            cells.append(
                f"{np.mean(egg):.3f}, {np.mean(gas):.3f}; {t.mean_diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], "
                f"p {t.p:.2g}; per neuron ({len(per)}): p {tn.p:.2g}"
            )
        matched = [r for r in equal if r["matched_to"] == label]
        at_train = per_sample(matched, ga, lambda r: r["role"] == "train")
        at_arch = per_sample(matched, ga, lambda r: r["evaluator"].startswith(ARCH_PREFIX))
        both = [k for k in keys if k in at_train and at_train[k] > 0 and k in at_arch]
        egg = [arch[label][k] / train[label][k] for k in both]
        gas = [at_arch[k] / at_train[k] for k in both]
        t = paired_test(egg, gas)
        cells.append(
            f"{np.mean(egg):.3f}, {np.mean(gas):.3f}; {t.mean_diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], "
            f"p {t.p:.2g}"
            if both
            else "–"
        )
        lines.append(
            f"| {label} | {len(keys)} | {ratio.mean():.3f} [{low:.3f}, {high:.3f}] | {cells[0]} | {cells[1]} "
            f"| {cells[2]} | {wall[label] / wall[ga]:.2f} |"
        )
    return "\n".join(lines)


def floor_seconds(model: torch.nn.Module, prior_source: str | None, seeds: int, reps: int = 5) -> float:
    """Seconds of one bare step's compute for ``seeds`` images, the physical floor of a synthesis step: with
    ``prior_source``, the UNet's forward on noisy images, the x0 estimate, the train model's forward on it and the
    backward through both (an EGG step without the scheduler or any bookkeeping); without, the model's forward and
    backward on ``seeds`` images at its input size (a gradient-ascent step without the optimiser)."""
    from sharedattr.synthesis.preprocess import fit_to_model
    from sharedattr.synthesis.prior import load_prior

    g = torch.Generator().manual_seed(0)
    if prior_source is None:
        channels, size = model.in_channels, model.input_size
        x = torch.rand(seeds, channels, *(size if isinstance(size, tuple) else (size, size)), generator=g)
        t = unet = None
    else:
        prior = load_prior(prior_source)
        unet = prior.unet
        x = torch.randn(seeds, prior.channels, prior.sample_size, prior.sample_size, generator=g)
        t = torch.full((seeds,), 500, dtype=torch.long)

    def step() -> None:
        x_in = x.clone().requires_grad_(True)
        images = x_in if unet is None else (x_in - 0.5 * unet(x_in, t).sample + 1) / 2
        response = model(fit_to_model(images, model))[:, 0].sum()
        torch.autograd.grad(response, x_in)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - start) / reps


def floor_notes(result, labels: list[str], specs: list[dict], seeds: int) -> list[str]:
    """Each synthesizer's wall time per neuron against its floor: steps × :func:`floor_seconds` on the batch each
    neuron ran in (``neurons_per_loop`` × seeds images for EGG, which samples several neurons per loop), divided
    by that loop's neurons, averaged over the neurons."""
    train = next(e for e in result.evaluators if e.role == "train").model
    wall = {r["synthesizer"]: r["wall_s_per_neuron"] for r in result.summary if r["role"] == "train"}
    notes = []
    for label, spec in zip(labels, specs):
        loop = {
            r["neuron"]: round(float(r.get("neurons_per_loop", 1) or 1))
            for r in result.rows
            if r["synthesizer"] == label
        }
        sizes = sorted(set(loop.values()))
        per_size = {k: spec["steps"] * floor_seconds(train, spec.get("prior"), k * seeds) / k for k in sizes}
        floor = sum(per_size[k] for k in loop.values()) / len(loop)
        batches = ", ".join(f"{k * seeds}" for k in sizes)
        notes.append(
            f"`{label}`: {wall[label]:.2f} s per neuron against a floor of {floor:.2f} s ({spec['steps']} bare "
            f"{'UNet + model' if 'prior' in spec else 'model'} forward+backward passes on batches of {batches} "
            f"images{f' ({seeds} seeds of each neuron of a loop), per neuron' if sizes != [1] else ''}): "
            f"{floor / wall[label]:.2f} of the floor's rate."
        )
    return notes


def split_neurons(neurons: list, per_kind: int, val_per_kind: int) -> tuple[list, list]:
    """The validation neurons (the first ``val_per_kind`` variants of each kind) and the held-out ones (the others):
    disjoint, every kind in both. ``neurons``: kind-major, ``per_kind`` variants each (:func:`neuron_population`)."""
    validation = [n for k, n in enumerate(neurons) if k % per_kind < val_per_kind]
    return validation, [n for k, n in enumerate(neurons) if k % per_kind >= val_per_kind]


def choose_lambda(result, labels: list[str], eggs: list[str]) -> tuple[str, str]:  # noqa: ANN001 - a SynthesisRun
    """The EGG run (``SCHEDULER:λ``) with the highest mean relative activation on the val evaluators over the
    validation neurons × seeds (the rule fixed in advance), and a markdown table of every run's."""
    means = role_means(result.summary)
    val = {item: means[label].get("val", (math.nan, math.nan)) for label, item in zip(labels, eggs)}
    chosen = max(eggs, key=lambda item: val[item][0] if math.isfinite(val[item][0]) else -math.inf)
    lines = ["| EGG run (validation neurons) | train ↑ | val ↑ (the rule) |", "|---|---|---|"]
    for label, item in zip(labels, eggs):
        mark = " ← chosen" if item == chosen else ""
        lines.append(f"| {item}{mark} | {fmt(*means[label].get('train', (math.nan, math.nan)))} | {fmt(*val[item])} |")
    return chosen, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-category", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--per-kind", type=int, default=2, help="neurons per kind (5 kinds); 1 = the 5 default neurons (one --egg only)"
    )
    parser.add_argument(
        "--val-per-kind",
        type=int,
        default=None,
        help="validation neurons per kind, on which λ is chosen (default: half of --per-kind); the others are held "
        "out and reported",
    )
    parser.add_argument("--ga-steps", type=int, default=1000)
    parser.add_argument("--ga-lr", type=float, default=0.05)
    parser.add_argument("--egg-steps", type=int, default=50)
    parser.add_argument(
        "--egg",
        nargs="+",
        default=["ddpm:2", "ddpm:5", "ddpm:10", "ddim:5"],
        help="EGG runs as SCHEDULER:λ (scheduler ddpm or ddim, λ the guidance scale); with several, the one chosen "
        "on the validation neurons is reported on the held-out ones",
    )
    parser.add_argument(
        "--neuron-batch", type=int, default=8, help="neurons per loop, for gradient ascent and EGG alike"
    )
    parser.add_argument("--prior", default="insilico-ddpm-v1", help="EGG's diffusion prior (shipped name or folder)")
    parser.add_argument("--preset", default="project", choices=["project", "reference"], help="EGG's sampling preset")
    parser.add_argument(
        "--units", default="image", choices=["image", "pixel"], help="EGG's guidance_units (pixel: λ per pixel)"
    )
    parser.add_argument(
        "--weights", default="insilico-v1", choices=WEIGHTS, help="the train model's insilico_cnn weights"
    )
    parser.add_argument(
        "--train-model",
        default="task",
        choices=["task", "core"],
        help="task: insilico_cnn (--weights) block3 + ridge; core: the data-driven stacked_core + attention, trained "
        "jointly (the paper's train model), with the task-driven networks as cross evaluators",
    )
    parser.add_argument("--core-epochs", type=int, default=100, help="most epochs of the core's joint fit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 keeps the timings fair when other work shares the cores)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-synthesis"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    val_per_kind = args.per_kind // 2 if args.val_per_kind is None else args.val_per_kind
    if len(args.egg) > 1 and not 1 <= val_per_kind < args.per_kind:
        parser.error(
            f"choosing λ among {len(args.egg)} --egg runs needs validation and held-out neurons of every kind: "
            f"--val-per-kind in [1, --per-kind) (got {val_per_kind} of {args.per_kind}); raise --per-kind to 2 or "
            "more, or give one --egg"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data, out = args.workdir / "data", args.workdir / "out"
    start = time.perf_counter()
    neurons = list(DEFAULT_NEURONS) if args.per_kind == 1 else neuron_population(args.per_kind, seed=0)
    write_insilico(data, args.n_per_category, args.size, seed=0, neurons=neurons, progress=True)
    norm = natural_norm(data / "stimuli" / "manifest.csv", args.size)
    from sharedattr.plugins.specs import labels as spec_labels

    eggs, held_out, fitted = list(args.egg), neurons, None
    if len(args.egg) > 1:
        validation, held_out = split_neurons(neurons, args.per_kind, val_per_kind)
        select = spec_for(data, args, synthesizers(args, norm)[1:], [n.name for n in validation])
        chosen, choice = choose_lambda(
            synthesize_experiment(select, args.workdir / "select", progress=True), spec_labels(select.synthesis), eggs
        )
        eggs, fitted = [chosen], args.workdir / "select" / "fit"  # the same train model, fitted once
        protocol = (
            f"λ fixed in advance: chosen among {', '.join(args.egg)} on {len(validation)} validation neurons "
            f"({val_per_kind} per kind) by the highest mean relative activation on the val evaluators; every table "
            f"below is on the {len(held_out)} held-out neurons (disjoint), with {chosen} only.\n\n{choice}"
        )
    else:
        protocol = f"λ fixed in advance: the one EGG run given ({eggs[0]}), on all {len(held_out)} neurons."
    synthesis = synthesizers(args, norm, eggs)
    spec = spec_for(data, args, synthesis, [n.name for n in held_out], fitted)
    result = synthesize_experiment(spec, out, progress=True)
    wall = time.perf_counter() - start
    labels = spec_labels(spec.synthesis)
    text, notes = table(result, labels, synthesis)
    paired = paired_table(result, labels)
    notes += floor_notes(result, labels, synthesis, args.seeds)
    evaluators = ", ".join(f"{e.label} ({e.role}, median r {e.test_r.median():.2f})" for e in result.evaluators)
    families = (
        "cross-arch: both shipped task-driven networks (block3); no cross-layer evaluators."
        if args.train_model == "core"
        else "cross-arch: the other shipped network (block3, block4); cross-layer: the train network's block2 and "
        "block4."
    )
    train_model = (
        "the data-driven `stacked_core` + attention (trained jointly)"
        if args.train_model == "core"
        else f"`insilico_cnn` ({args.weights}) block3 + ridge"
    )
    heading = (
        f"### Synthesis: EGG vs gradient ascent on {len(held_out)} held-out in-silico neurons, "
        f"{args.seeds} seeds, {train_model} ({2 * args.n_per_category} images at "
        f"{args.size} px), prior {args.prior}, preset {args.preset}, λ in {args.units} units"
    )
    body = (
        f"{protocol}\n\n"
        f"Mean ± sem over neurons × seeds of the response relative to each evaluator's best natural image "
        f"(1 = as strong as the strongest stimulus in the set); several evaluators of a role are pooled. "
        f"Contrast fixed for both methods: ‖x − 0.5‖₂ = {norm:.2f} (the natural images' mean). Both loop over "
        f"{args.neuron_batch} neurons at once. Evaluators: {evaluators}.\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n\nPaired over neurons × seeds (the same neurons and seeds for every synthesizer): the train-model "
        "activation of each EGG run as a fraction of gradient ascent's, and the transfer ratio (the mean relative "
        "activation on the cross evaluators ÷ on the train model, per neuron and seed) of EGG against gradient "
        "ascent: Wilcoxon signed-rank p and the mean paired difference with its 95 % t interval. "
        + families
        + " At equal train activation: gradient ascent's iterate at the first step its train response reaches EGG's "
        "(same neuron and seed; its last iterate where it never does), docs/synthesis.md.\n\n"
        + paired
        + f"\n\nTotal wall time {wall:.0f} s. {machine(args.device)}"
    )
    print_and_append(f"{heading}\n\n{text}\n\n{body}\n", write=not args.no_write)


if __name__ == "__main__":
    main()
