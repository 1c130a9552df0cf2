"""``sharedattr synthesize``, and the synthesis stage of ``sharedattr run``: the configured synthesizers on the
selected neurons, their images scored on every evaluator model (the EGG paper's protocol).

Writes into one folder (``<run>/synthesis`` for ``sharedattr run``, ``--out`` for
``sharedattr synthesize``):

- ``scores.csv``: one row per neuron × synthesizer × seed × evaluator model: the response,
  the evaluator's prediction for the neuron's best natural image, their ratio (``relative``)
  and the synthesizer's cost (model forward/backward calls, denoiser calls, wall seconds);
- ``summary.csv``: per synthesizer × evaluator, the mean ± sem relative activation and cost;
- ``evaluators.csv``: each evaluator model, its role and its held-out fit;
- ``images.safetensors``: ``<synthesizer>/<neuron>`` ``[S, C, H, W]`` (what the model saw),
  ``<synthesizer>/<neuron>/prior`` (a diffusion prior's own resolution) and
  ``natural/<neuron>`` (the neuron's most exciting natural images);
- ``images.png`` (grid), ``comparison.png`` (activation per evaluator role and compute) and
  ``prior_samples.png`` (unguided samples of each diffusion prior);
- ``work/``: each finished (synthesizer, neuron) item, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sharedattr.config.spec import ExperimentSpec
from sharedattr.encoding.fit import fit_readout
from sharedattr.encoding.store import save_model, saved_digest
from sharedattr.experiment.context import NamedSynthesizer, RunContext, out_folder
from sharedattr.experiment.stages import Experiment, features, fit_for_run, select_stage, write_spec
from sharedattr.plugins.contracts import SynthesisResult
from sharedattr.plugins.registry import Registry
from sharedattr.runtime.distributed import SINGLE, Ranks
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_save_tensors, atomic_write_csv, atomic_write_json
from sharedattr.runtime.manifest import write_manifest
from sharedattr.runtime.memory import workers_within
from sharedattr.runtime.numerics import (
    Pieces,
    alone_unless_thread_safe,
    default_workers,
    environment,
    on_one_thread,
    replicate,
    seeded_global_rng,
)
from sharedattr.runtime.work_store import WorkStore, shape_validator, work_key
from sharedattr.synthesis.evaluation import TRAIN, Evaluator, describe_model, evaluator_digest, resolved_evaluator

SCORE_COLUMNS = ["neuron", "synthesizer", "seed", "evaluator", "role", "response", "best_natural", "relative"]
COST_COLUMNS = [
    "steps",
    "forward_calls",
    "backward_calls",
    "model_images",
    "denoiser_calls",
    "denoiser_backward_calls",
    "wall_s",
]
SUMMARY_COLUMNS = [
    "synthesizer",
    "evaluator",
    "role",
    "mean_relative",
    "sem_relative",
    "n",
    "mean_response",
    "wall_s_per_neuron",
    "forward_calls",
    "backward_calls",
    "denoiser_calls",
]
EVALUATOR_COLUMNS = ["evaluator", "role", "model", "median_test_r"]
PRIOR_SAMPLES = 16
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


def best_natural_indices(drive: Tensor, neuron: int, k: int) -> list[int]:
    """The ``k`` stimuli with the strongest response of ``neuron`` (``drive`` ``[S, N]``, NaN-free), best first."""
    return drive[:, neuron].topk(min(k, drive.shape[0])).indices.tolist()


def run_synthesis(
    ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, selected: list[int], folder: Path
) -> SynthesisRun | None:
    """Synthesise for every ``spec.synthesis`` entry × selected neuron; score on every evaluator; write ``folder``.

    Each (synthesizer, neuron) is one work item in ``folder/work``. A synthesizer with ``synthesize_many``
    samples its ``neuron_batch`` neurons at a time in one loop (:func:`neuron_loops`: fixed chunks of the
    selection, so resumed and distributed runs batch alike). With several ranks, each computes its own loops
    (round-robin), all wait at a barrier, and rank 0 fits the evaluators, merges the items and writes the
    outputs (the other ranks return None).
    """
    folder = Path(folder)
    ranks, device, progress = ctx.ranks, ctx.device, ctx.progress
    fit, stimuli = experiment.fit, experiment.stimuli
    neuron_ids, model = fit.neuron_ids, fit.model
    drive = experiment.drive
    store = WorkStore(folder / "work")
    size, channels = model.input_size, model.in_channels
    top_natural = {n: best_natural_indices(drive, n, N_NATURAL) for n in selected}  # best first
    synthesizers = ctx.synthesizers(spec.synthesis)
    loops = {synth.label: neuron_loops(synth.synthesizer, selected) for synth in synthesizers}
    loop_of = {(label, n): loop for label, chunks in loops.items() for loop in chunks for n in loop}
    valid = shape_validator(  # what _as_tensors stores: S images, their responses, the history [steps, S]
        {"images": ("S", channels, *size), "responses": ("S",), "history": (None, "S")},
        {"prior_images": ("S", None, None, None), "cost/*": ()},
    )

    def item_key(synth: NamedSynthesizer, n: int) -> str:
        loop = loop_of[(synth.label, n)]
        together = {"loop": [neuron_ids[k] for k in loop]} if len(loop) > 1 else {}  # batch composition matters
        return work_key(
            model=experiment.fit_digest,
            synthesizer=synth.spec,
            neuron=neuron_ids[n],
            reference=stimuli.ids[top_natural[n][0]],
            seed=spec.seed,
            **together,
        )

    workers = workers_within(spec.attribution.memory_mb, default_workers()) if device.type == "cpu" else 1
    replicas = threading.local()

    def here(synth: NamedSynthesizer) -> tuple[Any, Any]:
        """This worker's model and synthesizer: its own replicas when loops run side by side (samplers keep state,
        such as a scheduler's timesteps)."""
        if workers == 1:
            return model, synth.synthesizer
        if not hasattr(replicas, "model"):
            replicas.model, replicas.synthesizers = replicate(model), {}
        if synth.label not in replicas.synthesizers:
            replicas.synthesizers[synth.label] = replicate(synth.synthesizer)
        return replicas.model, replicas.synthesizers[synth.label]

    def run_loop(unit: tuple[NamedSynthesizer, list[int]]) -> dict[int, dict[str, Tensor]]:
        """The stored results of the neurons of ``loop``; if any is missing, the loop is synthesised again, all its
        neurons together (one sampling loop, the batch every run of this selection uses)."""
        synth, loop = unit
        keys = [item_key(synth, n) for n in loop]
        stored = [store.lookup("synthesis", key, valid) for key in keys]
        if all(item is not None for item in stored):
            return dict(zip(loop, stored))
        references = [stimuli.load_images(size, channels, top_natural[n][:1])[0].to(device) for n in loop]
        on, synthesizer = here(synth)
        # torch's global generator starts from the run's seed for a synthesizer that draws from it; one that
        # declares its own generators (the built-ins) runs side by side with others
        own = bool(getattr(synthesizer, "own_generators", False))
        with alone_unless_thread_safe(synthesizer), contextlib.nullcontext() if own else seeded_global_rng(spec.seed):
            if len(loop) == 1:
                results = [synthesizer.synthesize(on, loop[0], reference=references[0])]
            else:
                results = synthesizer.synthesize_many(on, loop, references=references)
        out = {}
        for n, key, item, result in zip(loop, keys, stored, results):
            if item is None:  # a sound stored item is kept: the same batch gave it
                item = _as_tensors(result)
                store.put("synthesis", key, item)
            out[n] = item
        return out

    units = [(synth, loop) for synth in synthesizers for loop in loops[synth.label]]

    def looped(todo: list[tuple[NamedSynthesizer, list[int]]], desc: str) -> list[dict[int, dict[str, Tensor]]]:
        with tqdm(total=len(todo), desc=desc, disable=not progress, leave=False) as bar:
            done = []
            for result in Pieces(workers).map(run_loop, todo):  # loops side by side, results in order
                bar.update()
                done.append(result)
            return done

    if ranks.distributed:
        looped(ranks.share(units), f"synthesis, rank {ranks.rank}")
        ranks.barrier()
        if not ranks.is_main:
            return None
    evaluators = fit_evaluators(ctx, spec, experiment, folder / "evaluators")
    rows: list[dict[str, Any]] = []
    images: dict[str, Tensor] = {}
    histories: dict[str, Tensor] = {}
    prior_samples: dict[str, Tensor] = {}
    for n in selected:
        images[f"natural/{neuron_ids[n]}"] = stimuli.load_images(size, channels, top_natural[n])
    results = {}
    for (synth, _), items in zip(units, looped(units, "synthesis")):
        results |= {(synth.label, n): item for n, item in items.items()}
    for synth in synthesizers:
        for n in selected:
            label = synth.label
            stored = results[(label, n)]
            result_images = stored["images"]
            images[f"{label}/{neuron_ids[n]}"] = result_images
            histories[f"{label}/{neuron_ids[n]}"] = stored["history"]
            if "prior_images" in stored:
                images[f"{label}/{neuron_ids[n]}/prior"] = stored["prior_images"]
            cost = {k.removeprefix("cost/"): float(v) for k, v in stored.items() if k.startswith("cost/")}
            rows += evaluator_rows(evaluators, result_images, n, neuron_ids[n], label, cost, spec.batch_size)
            if hasattr(synth.synthesizer, "prior_samples") and label not in prior_samples:
                samples = store.get_or_compute(
                    "prior_samples",
                    work_key(synthesizer=synth.spec, n=PRIOR_SAMPLES, seed=spec.seed),
                    lambda s=synth.synthesizer: {"images": s.prior_samples(PRIOR_SAMPLES, seed=spec.seed)},
                    shape_validator({"images": (PRIOR_SAMPLES, None, None, None)}),
                )
                prior_samples[label] = samples["images"]
    _warn_undefined(rows)
    result = SynthesisRun(rows, summarise(rows), evaluators, images, histories)
    write_synthesis(
        folder, spec, result, prior_samples, [neuron_ids[n] for n in selected], [synth.label for synth in synthesizers]
    )
    return result


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
    for evaluator in evaluators:
        responses = evaluator.responses(images, neuron, batch_size)
        best = float(evaluator.best_natural[neuron])
        for seed, value in enumerate(responses.tolist()):
            rows.append(
                {
                    "neuron": neuron_id,
                    "synthesizer": label,
                    "seed": seed,
                    "evaluator": evaluator.label,
                    "role": evaluator.role,
                    "response": value,
                    "best_natural": best,
                    "relative": value / best if best > 0 else math.nan,
                    **cost,
                }
            )
    return rows


def write_synthesis(
    folder: Path,
    spec: ExperimentSpec,
    result: SynthesisRun,
    prior_samples: dict[str, Tensor],
    neuron_ids: list[str],
    labels: list[str],
) -> None:
    """``scores.csv``, ``summary.csv``, ``evaluators.csv``, ``images.safetensors`` and, with figures on,
    ``images.png``, ``comparison.png`` and ``prior_samples.png`` (``neuron_ids``: the selected neurons)."""
    rows, images, evaluators = result.rows, result.images, result.evaluators
    cost_columns = [c for c in COST_COLUMNS if any(c in r for r in rows)]
    cost_columns += sorted({k for r in rows for k in r} - set(SCORE_COLUMNS) - set(cost_columns))
    atomic_write_csv(folder / "scores.csv", rows, SCORE_COLUMNS + cost_columns)
    atomic_write_csv(folder / "summary.csv", result.summary, SUMMARY_COLUMNS)
    atomic_write_csv(
        folder / "evaluators.csv",
        [
            {
                "evaluator": e.label,
                "role": e.role,
                "model": e.description,
                "median_test_r": float(e.test_r[torch.isfinite(e.test_r)].median())
                if torch.isfinite(e.test_r).any()
                else math.nan,
            }
            for e in evaluators
        ],
        EVALUATOR_COLUMNS,
    )
    atomic_save_tensors(
        folder / "images.safetensors", {**images, **{f"prior_samples/{k}": v for k, v in prior_samples.items()}}
    )
    if not spec.output.figures:
        return
    from sharedattr.report.figures import comparison_figure, image_grid  # matplotlib only when figures are on

    grid = {}
    for neuron in neuron_ids:
        grid[f"{neuron} · natural (top {N_NATURAL})"] = images[f"natural/{neuron}"]
        for label in labels:
            grid[f"{neuron} · {label}"] = images[f"{label}/{neuron}"]
    image_grid(grid, folder / "images.png", spec.output.dpi)
    comparison_figure(result.summary, folder / "comparison.png", spec.output.dpi)
    if prior_samples:
        sample_rows = {
            f"{label}: unguided prior samples {i + 1}–{i + len(chunk)}": chunk
            for label, v in prior_samples.items()
            for i, chunk in zip(range(0, len(v), 8), v.split(8))
        }
        image_grid(sample_rows, folder / "prior_samples.png", spec.output.dpi)


def train_evaluator(experiment: Experiment, spec: ExperimentSpec) -> Evaluator:
    """The model the images are optimised on, as an evaluator."""
    fit = experiment.fit
    return Evaluator(
        TRAIN,
        TRAIN,
        fit.model,
        fit.predicted.max(0).values,
        fit.test_r,
        describe_model(
            spec.backbone.model_dump(mode="json"), spec.readout.model_dump(mode="json"), spec.data.split_seed
        ),
    )


def fit_evaluators(ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, folder: Path) -> list[Evaluator]:
    """The train model plus every ``spec.evaluators`` entry, fitted (or reloaded from ``folder/<label>``)."""
    evaluators = [train_evaluator(experiment, spec)]
    for e in tqdm(
        spec.evaluators, desc="evaluator models", disable=not ctx.progress or not spec.evaluators, leave=False
    ):
        resolved = resolved_evaluator(spec, e)
        backbone_spec, readout_spec = e.backbone or spec.backbone, e.readout or spec.readout
        backbone = ctx.build(backbone_spec).to(ctx.device)
        if backbone_spec == spec.backbone:
            latents = experiment.latents  # same features: no second pass over the images
        else:
            latents, _ = features(ctx, spec, backbone_spec, backbone, experiment.stimuli)
        target = folder / e.label
        digest = evaluator_digest(experiment.fit_digest, spec, e)
        saved = target if saved_digest(target, "evaluator_digest") == digest else None
        fit = fit_readout(
            ctx.build(readout_spec),
            backbone,
            latents,
            experiment.responses,
            experiment.fit.neuron_ids,
            test_fraction=spec.data.test_fraction,
            split_seed=resolved["split_seed"],
            batch_size=spec.batch_size,
            device=ctx.device,
            saved=saved,
            name=readout_spec.name,
        )
        if saved is None:
            save_model(
                fit.model,
                backbone_spec,
                readout_spec,
                fit.neuron_ids,
                target,
                extra={"evaluator_digest": digest, "role": e.role},
                registry=ctx.registry,
            )
        evaluators.append(
            Evaluator(
                e.label,
                e.role,
                fit.model,
                fit.predicted.max(0).values,
                fit.test_r,
                describe_model(resolved["backbone"], resolved["readout"], resolved["split_seed"]),
            )
        )
    return evaluators


def neuron_loops(synthesizer: Any, selected: list[int]) -> list[list[int]]:
    """The selected neurons in the groups a synthesizer samples together: chunks of its ``neuron_batch`` in
    selection order when it has ``synthesize_many``, else one neuron each. Fixed by the selection alone, so a
    resumed or distributed run batches exactly as an uninterrupted single process does."""
    size = (
        int(getattr(synthesizer, "neuron_batch", 1)) if callable(getattr(synthesizer, "synthesize_many", None)) else 1
    )
    size = max(1, size)
    return [selected[i : i + size] for i in range(0, len(selected), size)]


def _as_tensors(result: SynthesisResult) -> dict[str, Tensor]:
    out = {
        "images": result.images.detach().cpu().contiguous(),
        "responses": result.responses.detach().cpu(),
        "history": result.history.detach().cpu(),
    }
    prior = getattr(result, "prior_images", None)
    if prior is not None:
        out["prior_images"] = prior.detach().cpu().contiguous()
    for k, v in result.cost.items():
        out[f"cost/{k}"] = torch.tensor(float(v), dtype=torch.float64)
    return out


def _warn_undefined(rows: list[dict[str, Any]]) -> None:
    bad = sorted({(r["neuron"], r["evaluator"]) for r in rows if not r["best_natural"] > 0})
    if bad:
        warnings.warn(
            f"relative activation is undefined (left empty) where the evaluator predicts no positive "
            f"response to any natural image: {bad}",
            stacklevel=2,
        )


def _mean_of(rows: list[dict[str, Any]], key: str) -> float:
    """The mean of ``key`` over ``rows`` (NaN where a row lacks it, or without rows)."""
    values = [float(r.get(key, math.nan)) for r in rows]
    return sum(values) / len(values) if values else math.nan


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per synthesizer × evaluator: mean ± sem of ``relative`` over neurons × seeds, and the mean cost."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["synthesizer"], r["evaluator"], r["role"]), []).append(r)
    out = []
    for (synth, evaluator, role), group in groups.items():
        rel = [r["relative"] for r in group if math.isfinite(r["relative"])]
        n = len(rel)
        mean = sum(rel) / n if n else math.nan
        sem = math.sqrt(sum((v - mean) ** 2 for v in rel) / (n - 1) / n) if n > 1 else math.nan
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


@on_one_thread
def synthesize_experiment(
    spec: ExperimentSpec,
    out: Path,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    ranks: Ranks = SINGLE,
    config: str | Path | None = None,
) -> SynthesisRun | None:
    """``sharedattr synthesize``: fit the model (into ``out/fit``, reused when unchanged), select the
    neurons as ``sharedattr run`` does, then synthesise and score everything into ``out``.

    ``out`` is checked and locked as ``sharedattr run`` does (:func:`~sharedattr.experiment.context.out_folder`;
    ``config``: the file ``spec`` was read from, an input too); ``spec.json`` is written once every result is.

    With several ``ranks``, rank 0 fits, the (synthesizer, neuron) items are dealt out, and rank 0
    merges and writes (the other ranks return None), as in :func:`sharedattr.experiment.run.run_experiment`.
    """
    if not spec.synthesis:
        raise UserError(
            'the config has no synthesizers: add a [[synthesis]] table, e.g. name = "egg" or '
            'name = "gradient_ascent" (see docs/synthesis.md)'
        )
    out = Path(out)
    with out_folder(spec, out, config=config, ranks=ranks, kind="synthesize"):
        ctx = RunContext.start(spec, registry=registry, ranks=ranks, progress=progress)
        experiment = fit_for_run(ctx, spec, out, out / "fit")
        result = run_synthesis(ctx, spec, experiment, select_stage(spec, experiment), out)
        if ranks.is_main:
            atomic_write_json(out / "environment.json", environment())
            write_spec(out, spec)
            write_manifest(out)
        return result


def format_synthesis_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table."""
    header = ["synthesizer", "evaluator", "role", "relative ± sem", "n", "s/neuron", "fwd", "bwd", "denoiser"]
    lines = [
        [
            r["synthesizer"],
            r["evaluator"],
            r["role"],
            f"{r['mean_relative']:.3f} ± {r['sem_relative']:.3f}"
            if math.isfinite(r["sem_relative"])
            else f"{r['mean_relative']:.3f}",
            str(r["n"]),
            f"{r['wall_s_per_neuron']:.2f}",
            f"{r['forward_calls']:.0f}",
            f"{r['backward_calls']:.0f}",
            f"{r['denoiser_calls']:.0f}",
        ]
        for r in summary
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*line) for line in lines)]
    )
