"""Synthesis benchmark: EGG against gradient ascent on in-silico neurons (the EGG paper's protocol).

    uv run python benchmarks/synthesis.py [--n-per-category 150 --seeds 3 --ga-steps 1000]
    uv run python benchmarks/synthesis.py --prior insilico-ddpm-v2 --preset reference --units pixel \
        --weights insilico-resnet18-v1 --egg ddpm:0.0226 ddpm:0.05 ddpm:0.1     # the fair test of issue 18

Renders a seeded in-silico stimulus set, simulates the part-tuned neurons (limbs, head,
body, head∧limbs, shape; ``--per-kind`` variants of each), fits the "train" model (``insilico_cnn``
with ``--weights``, block3 + ridge) and the evaluators: the same network fitted on other data
splits ("val"), the same network at block2 and block4 ("cross-layer") and the other shipped
architecture at block3 and block4 ("cross-arch"). Gradient ascent (AdamW, blurred gradients,
fixed norm) and EGG (``--prior``, ``--preset``, λ in ``--units``, several guidance scales) synthesise
for every neuron through :func:`sharedattr.experiment.synthesize.synthesize_experiment`. Both are
held to the same contrast: the norm ‖x − 0.5‖₂ of the model's input is fixed to the mean
norm of the natural stimuli. Activations are relative to each evaluator's prediction for the
neuron's best natural image. Compute: wall time and calls per neuron, the gradient-ascent
steps (and seconds) needed to reach EGG's within-model activation, read off its history, and
each synthesizer's time against the floor of bare forward+backward passes. Paired over neurons ×
seeds (and per neuron, seeds averaged): EGG's train activation as a fraction of gradient ascent's
and the transfer ratio cross ÷ train of each (Wilcoxon signed-rank, :mod:`sharedattr.report.stats`).
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
    """Two val evaluators (other data splits), two of the same network at other layers, and two of the other
    architecture (the other shipped weights) at block3 and block4: every one fitted to the same responses."""
    other = next(w for w in WEIGHTS if w != weights)

    def backbone(w: str, layer: str) -> dict:
        return {"name": "insilico_cnn", "weights": w, "layer": layer, "input_size": size}

    return [
        {"label": "val-split1", "role": "val", "split_seed": 1},
        {"label": "val-split2", "role": "val", "split_seed": 2},
        {"label": "cross-layer-block4", "role": "cross", "backbone": backbone(weights, "block4")},
        {"label": "cross-layer-block2", "role": "cross", "backbone": backbone(weights, "block2")},
        {"label": f"{ARCH_PREFIX}block3", "role": "cross", "backbone": backbone(other, "block3")},
        {"label": f"{ARCH_PREFIX}block4", "role": "cross", "backbone": backbone(other, "block4")},
    ]


def natural_norm(stimuli: Path, size: int) -> float:
    """Mean ‖x − 0.5‖₂ of the natural stimuli at the model's input size (grey, [0, 1] pixels)."""
    images = StimulusSet.load(stimuli).load_images((size, size), 1)
    return float((images - 0.5).flatten(1).norm(dim=1).mean())


def synthesizers(args: argparse.Namespace, norm: float) -> list[dict]:
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
        }
        for item in args.egg
    ]
    return [ga, *eggs]


def spec_for(data: Path, args: argparse.Namespace, norm: float, neurons: list[str]) -> ExperimentSpec:
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
            "backbone": {"name": "insilico_cnn", "weights": args.weights, "layer": "block3", "input_size": args.size},
            "readout": {"name": "ridge"},
            "selection": {"neurons": neurons},
            "synthesis": synthesizers(args, norm),
            "evaluators": evaluators_for(args.weights, args.size),
            "output": {"figures": True},
        }
    )


def ga_steps_to_reach(history: torch.Tensor, target: float) -> float:
    """First step (1-based) at which the seeds' mean response reaches ``target``; inf if never."""
    hit = (history.mean(1) >= target).nonzero()
    return float(hit[0, 0] + 1) if len(hit) else math.inf


def fmt(mean: float, sem: float) -> str:
    return "–" if not math.isfinite(mean) else f"{mean:.2f} ± {sem:.2f}" if math.isfinite(sem) else f"{mean:.2f}"


def table(result, labels: list[str], specs: list[dict]) -> tuple[str, list[str]]:
    """The markdown table and the notes on compute to reach EGG's activation."""
    means = role_means(result.summary)
    train = {r["synthesizer"]: r for r in result.summary if r["role"] == "train"}
    lines = [
        "| synthesizer | train ↑ | val ↑ | cross ↑ | s / neuron | model fwd+bwd / neuron | denoiser calls / neuron |",
        "|---|---|---|---|---|---|---|",
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
            + " | ".join(fmt(*m.get(role, (math.nan, math.nan))) for role in ("train", "val", "cross"))
            + f" | {t['wall_s_per_neuron']:.2f} | {t['forward_calls'] + t['backward_calls']:.0f}"
            + f" | {t['denoiser_calls']:.0f} |"
        )
    notes = []
    ga_label = labels[0]
    neurons = sorted({r["neuron"] for r in result.rows})
    ga_wall = train[ga_label]["wall_s_per_neuron"]
    ga_total_steps = specs[0]["steps"]
    for label in labels[1:]:
        steps, ratios = [], []
        for n in neurons:
            finals = [
                r["response"]
                for r in result.rows
                if r["synthesizer"] == label and r["neuron"] == n and r["role"] == "train"
            ]
            target = sum(finals) / len(finals)  # EGG's mean final response on the train model
            k = ga_steps_to_reach(result.histories[f"{ga_label}/{n}"], target)
            steps.append(k)
            if math.isfinite(k):
                ratios.append((ga_wall * k / ga_total_steps) / train[label]["wall_s_per_neuron"])
        reached = sum(math.isfinite(k) for k in steps)
        finite = sorted(k for k in steps if math.isfinite(k))
        median = finite[len(finite) // 2] if finite else math.nan
        ratio = sorted(ratios)[len(ratios) // 2] if ratios else math.nan
        notes.append(
            f"`{label}`: gradient ascent reaches this EGG run's mean train-model response for {reached}/{len(neurons)} "
            f"neurons, after a median {median:.0f} of {ga_total_steps} steps; wall-time ratio GA-to-reach / "
            f"EGG (median over the neurons reached): {ratio:.2f}×."
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
    wall = {r["synthesizer"]: r["wall_s_per_neuron"] for r in result.summary if r["role"] == "train"}
    lines = [
        "| EGG run | n | train: EGG ÷ GA [95 % CI] | cross-arch ÷ train: EGG, GA; EGG − GA [95 % CI], p | "
        "cross-layer ÷ train: EGG, GA; EGG − GA [95 % CI], p | wall: EGG ÷ GA's full run |",
        "|---|---|---|---|---|---|",
    ]
    for label in labels[1:]:
        keys = sorted(k for k in train[ga] if k in train[label] and train[ga][k] > 0 and train[label][k] > 0)
        ratio = np.array([train[label][k] / train[ga][k] for k in keys])
        low, high = confidence_interval(ratio)
        cells = []
        neurons = sorted({k[0] for k in keys})
        for cross in (arch, layer):
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
        lines.append(
            f"| {label} | {len(keys)} | {ratio.mean():.3f} [{low:.3f}, {high:.3f}] | {cells[0]} | {cells[1]} "
            f"| {wall[label] / wall[ga]:.2f} |"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-category", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-kind", type=int, default=1, help="neurons per kind (5 kinds); 1 = the 5 default neurons")
    parser.add_argument("--ga-steps", type=int, default=1000)
    parser.add_argument("--ga-lr", type=float, default=0.05)
    parser.add_argument("--egg-steps", type=int, default=50)
    parser.add_argument(
        "--egg",
        nargs="+",
        default=["ddpm:2", "ddpm:5", "ddpm:10", "ddim:5"],
        help="EGG runs as SCHEDULER:λ (scheduler ddpm or ddim, λ the guidance scale)",
    )
    parser.add_argument("--prior", default="insilico-ddpm-v1", help="EGG's diffusion prior (shipped name or folder)")
    parser.add_argument("--preset", default="project", choices=["project", "reference"], help="EGG's sampling preset")
    parser.add_argument(
        "--units", default="image", choices=["image", "pixel"], help="EGG's guidance_units (pixel: λ per pixel)"
    )
    parser.add_argument(
        "--weights", default="insilico-v1", choices=WEIGHTS, help="the train model's insilico_cnn weights"
    )
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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data, out = args.workdir / "data", args.workdir / "out"
    start = time.perf_counter()
    neurons = DEFAULT_NEURONS if args.per_kind == 1 else neuron_population(args.per_kind, seed=0)
    write_insilico(data, args.n_per_category, args.size, seed=0, neurons=neurons, progress=True)
    norm = natural_norm(data / "stimuli" / "manifest.csv", args.size)
    spec = spec_for(data, args, norm, [n.name for n in neurons])
    result = synthesize_experiment(spec, out, progress=True)
    wall = time.perf_counter() - start
    from sharedattr.plugins.specs import labels as spec_labels

    labels = spec_labels(spec.synthesis)
    text, notes = table(result, labels, synthesizers(args, norm))
    paired = paired_table(result, labels)
    notes += floor_notes(result, labels, synthesizers(args, norm), args.seeds)
    evaluators = ", ".join(f"{e.label} ({e.role}, median r {e.test_r.median():.2f})" for e in result.evaluators)
    heading = (
        f"### Synthesis: EGG vs gradient ascent on {len(neurons)} in-silico neurons, "
        f"{args.seeds} seeds, `insilico_cnn` ({args.weights}) block3 + ridge ({2 * args.n_per_category} images at "
        f"{args.size} px), prior {args.prior}, preset {args.preset}, λ in {args.units} units"
    )
    body = (
        f"Mean ± sem over neurons × seeds of the response relative to each evaluator's best natural image "
        f"(1 = as strong as the strongest stimulus in the set); several evaluators of a role are pooled. "
        f"Contrast fixed for both methods: ‖x − 0.5‖₂ = {norm:.2f} (the natural images' mean). "
        f"Evaluators: {evaluators}.\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n\nPaired over neurons × seeds (the same neurons and seeds for every synthesizer): the train-model "
        "activation of each EGG run as a fraction of gradient ascent's, and the transfer ratio (the mean relative "
        "activation on the cross evaluators ÷ on the train model, per neuron and seed) of EGG against gradient "
        "ascent: Wilcoxon signed-rank p and the mean paired difference with its 95 % t interval. cross-arch: the other "
        "shipped network (block3, block4); cross-layer: the train network's block2 and block4.\n\n"
        + paired
        + f"\n\nTotal wall time {wall:.0f} s. {machine(args.device)}"
    )
    print_and_append(f"{heading}\n\n{text}\n\n{body}\n", write=not args.no_write)


if __name__ == "__main__":
    main()
