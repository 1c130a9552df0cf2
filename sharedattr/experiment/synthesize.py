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
- ``work/``: each finished (synthesizer, neuron) item, so an interrupted run resumes;
- ``report.html`` (``sharedattr synthesize`` only; a run's report holds its synthesis section): the synthesis
  section of the report (summary table, images, comparison figure, evaluators) under an overview, rebuilt by
  ``sharedattr report DIR``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.config.spec import ExperimentSpec
from sharedattr.experiment.context import NamedSynthesizer, RunContext, out_folder
from sharedattr.experiment.evaluators import fit_evaluators
from sharedattr.experiment.stages import (
    Experiment,
    fit_for_run,
    select_stage,
    write_spec,
)
from sharedattr.experiment.synthesis_outputs import (
    N_NATURAL,
    EqualActivation,
    SynthesisRun,
    add_equal_activation,
    equal_activation_rows,
    evaluator_rows,
    summarise_synthesis,
    warn_undefined,
    write_synthesis,
)
from sharedattr.plugins.contracts import SynthesisResult, Synthesizer, declared, neurons_per_loop
from sharedattr.plugins.registry import Registry
from sharedattr.report import write_report
from sharedattr.runtime.distributed import SINGLE, Ranks
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_json
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
from sharedattr.runtime.run_files import (
    ENVIRONMENT_FILE,
    EVALUATORS_DIR,
    FIT_DIR,
    WORK_DIR,
)
from sharedattr.runtime.work_store import WorkStore, shape_validator, work_key
from sharedattr.synthesis.evaluation import Evaluator, steps_to_reach
from sharedattr.synthesis.prior import PriorCheck, check_prior

PRIOR_SAMPLES = 16


Unit = tuple[NamedSynthesizer, list[int]]
"""One sampling loop: a synthesizer and the selected neurons it samples together."""
Stored = dict[str, Tensor]
"""One finished (synthesizer, neuron) item as stored (:func:`_as_tensors`)."""


def best_natural_indices(drive: Tensor, neuron: int, k: int) -> list[int]:
    """The ``k`` stimuli with the strongest response of ``neuron`` (``drive`` ``[S, N]``, NaN-free), best first."""
    return drive[:, neuron].topk(min(k, drive.shape[0])).indices.tolist()


# -- the stage ------------------------------------------------------------------------------
def run_synthesis(
    ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, selected: list[int], folder: Path
) -> SynthesisRun | None:
    """Synthesise for every ``spec.synthesis`` entry × selected neuron; score on every evaluator; write ``folder``.

    Each (synthesizer, neuron) is one work item in ``folder/work``. A synthesizer with ``synthesize_many``
    samples its ``neuron_batch`` neurons at a time in one loop (:func:`neuron_loops`: fixed chunks of the
    selection, so resumed and distributed runs batch alike). With several ranks, each computes its own loops
    (round-robin), all wait, and rank 0 fits the evaluators, merges the items and writes the outputs (the other
    ranks return None).
    """
    folder = Path(folder)
    plan = SynthesisPlan(
        ctx, spec, experiment, selected, ctx.synthesizers(spec.synthesis), WorkStore(folder / WORK_DIR)
    )
    ranks = ctx.ranks
    checks = check_priors(plan) if ranks.is_main else {}  # before any sampling: one warning per mismatched prior
    ranks.share_then_wait(plan.units, lambda mine: len(synthesize_units(plan, mine, f"synthesis, rank {ranks.rank}")))
    if not ranks.is_main:
        return None
    evaluators = fit_evaluators(ctx, spec, experiment, folder / EVALUATORS_DIR)
    result = score_synthesis(plan, evaluators, stored_results(plan), checks)
    write_synthesis(folder, spec, result)
    return result


class Replicas(threading.local):
    """This thread's own copies of the model and of each synthesizer, for loops that run side by side (samplers
    keep state, such as a scheduler's timesteps); each thread makes its own on first use."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.synthesizers: dict[str, Any] = {}


@dataclass
class SynthesisPlan:
    """The synthesis stage's work, fixed before any of it runs: every sampling loop (:attr:`units`), how each
    (synthesizer, neuron) item is keyed (:meth:`item_key`) and checked (:attr:`valid`) in ``store``, and how many
    loops run side by side (:attr:`workers`)."""

    ctx: RunContext
    spec: ExperimentSpec
    experiment: Experiment
    selected: list[int]
    synthesizers: list[NamedSynthesizer]
    store: WorkStore
    replicas: Replicas = field(default_factory=Replicas)

    @property
    def neuron_ids(self) -> list[str]:
        return self.experiment.fit.neuron_ids

    @cached_property
    def top_natural(self) -> dict[int, list[int]]:
        """Per selected neuron, its :data:`N_NATURAL` most exciting natural stimuli, best first."""
        return {n: best_natural_indices(self.experiment.drive, n, N_NATURAL) for n in self.selected}

    @cached_property
    def loops(self) -> dict[str, list[list[int]]]:
        """Per synthesizer label, the selected neurons in the groups it samples together (:func:`neuron_loops`)."""
        return {synth.label: neuron_loops(synth.synthesizer, self.selected) for synth in self.synthesizers}

    @cached_property
    def loop_of(self) -> dict[tuple[str, int], list[int]]:
        """``(synthesizer label, neuron)`` → the loop that samples it."""
        return {(label, n): loop for label, chunks in self.loops.items() for loop in chunks for n in loop}

    @cached_property
    def units(self) -> list[Unit]:
        """Every sampling loop, synthesizer by synthesizer."""
        return [(synth, loop) for synth in self.synthesizers for loop in self.loops[synth.label]]

    @cached_property
    def workers(self) -> int:
        """Loops side by side: as many as the memory budget allows on the CPU, one on an accelerator."""
        if self.ctx.device.type != "cpu":
            return 1
        return workers_within(self.spec.attribution.memory_mb, default_workers())

    @cached_property
    def valid(self) -> Any:
        """What a stored item must hold (:func:`_as_tensors`): S images, their responses, the history ``[steps, S]``."""
        model = self.experiment.fit.model
        return shape_validator(
            {"images": ("S", model.in_channels, *model.input_size), "responses": ("S",), "history": (None, "S")},
            {"prior_images": ("S", None, None, None), "cost/*": ()},
        )

    def item_key(self, synth: NamedSynthesizer, neuron: int) -> str:
        """The work key of ``synth``'s images of ``neuron``: the model, the synthesizer's spec, the neuron, its best
        natural image, the seed and, sampled with others, the loop's neurons (the batch composition matters)."""
        loop = self.loop_of[(synth.label, neuron)]
        ids = self.neuron_ids
        together = {"loop": [ids[k] for k in loop]} if len(loop) > 1 else {}
        return work_key(
            model=self.experiment.fit_digest,
            synthesizer=synth.spec,
            neuron=ids[neuron],
            reference=self.experiment.stimuli.ids[self.top_natural[neuron][0]],
            seed=self.spec.seed,
            **together,
        )

    def natural_images(self, neuron: int, k: int = N_NATURAL) -> Tensor:
        """The ``k`` most exciting natural images of ``neuron`` ``[k, C, H, W]`` at the model's input, best first."""
        model = self.experiment.fit.model
        return self.experiment.stimuli.load_images(model.input_size, model.in_channels, self.top_natural[neuron][:k])

    def stimulus_sample(self, k: int = PRIOR_SAMPLES) -> Tensor:
        """Up to ``k`` stimuli, evenly spaced over the set, ``[k, C, H, W]`` at the model's input size, with their
        own channels (1 when they are all grey, else 3): what a generative prior is compared with."""
        stimuli, size = self.experiment.stimuli, self.experiment.fit.model.input_size
        indices = sorted({int(i) for i in torch.linspace(0, len(stimuli) - 1, min(k, len(stimuli))).round()})
        return stimuli.load_images(size, stimuli.channels_for(3, indices), indices)

    def on_this_thread(self, synth: NamedSynthesizer) -> tuple[nn.Module, Any]:
        """The model and ``synth``'s synthesizer this worker uses: its own replicas when loops run side by side."""
        model = self.experiment.fit.model
        if self.workers == 1:
            return model, synth.synthesizer
        mine = self.replicas
        if mine.model is None:
            mine.model = replicate(model)
        if synth.label not in mine.synthesizers:
            mine.synthesizers[synth.label] = replicate(synth.synthesizer)
        return mine.model, mine.synthesizers[synth.label]


def neuron_loops(synthesizer: Any, selected: list[int]) -> list[list[int]]:
    """The selected neurons in the groups a synthesizer samples together: chunks of its ``neuron_batch`` in
    selection order when it has ``synthesize_many`` of its own (:func:`~sharedattr.plugins.contracts.neurons_per_loop`),
    else one neuron each. Fixed by the selection alone, so a resumed or distributed run batches exactly as an
    uninterrupted single process does."""
    size = neurons_per_loop(synthesizer)
    return [selected[i : i + size] for i in range(0, len(selected), size)]


def synthesize_units(plan: SynthesisPlan, units: list[Unit], desc: str) -> list[dict[int, Stored]]:
    """Every loop of ``units`` (:func:`synthesize_loop`), ``plan.workers`` side by side; results in order."""
    with tqdm(total=len(units), desc=desc, disable=not plan.ctx.progress, leave=False) as bar:
        done = []
        for result in Pieces(plan.workers).map(partial(synthesize_loop, plan), units):
            bar.update()
            done.append(result)
        return done


def synthesize_loop(plan: SynthesisPlan, unit: Unit) -> dict[int, Stored]:
    """The stored items of the neurons of ``unit``'s loop; if any is missing, the loop is synthesised again, all
    its neurons together (one sampling loop, the batch every run of this selection uses), and the missing ones
    are stored (a sound stored item is kept: the same batch gave it)."""
    synth, loop = unit
    keys = [plan.item_key(synth, n) for n in loop]
    stored = [plan.store.lookup("synthesis", key, plan.valid) for key in keys]
    if all(item is not None for item in stored):
        return dict(zip(loop, stored))
    references = [plan.natural_images(n, 1)[0].to(plan.ctx.device) for n in loop]
    model, synthesizer = plan.on_this_thread(synth)
    results = call_synthesizer(synthesizer, model, loop, references, plan.spec.seed)
    out = {}
    for n, key, item, result in zip(loop, keys, stored, results):
        if item is None:
            item = _as_tensors(result)
            plan.store.put("synthesis", key, item)
        out[n] = item
    return out


def call_synthesizer(
    synthesizer: Any, model: nn.Module, loop: list[int], references: list[Tensor], seed: int
) -> list[SynthesisResult]:
    """One result per neuron of ``loop``: ``synthesize`` for one neuron, ``synthesize_many`` for several.

    A synthesizer that is not ``thread_safe`` runs alone; torch's global generator starts from ``seed`` for one
    that draws from it (one that declares ``own_generators``, as the built-ins, runs side by side with others).
    """
    members = declared(synthesizer, Synthesizer)
    with guarded(members, seed):
        if len(loop) == 1:
            return [synthesizer.synthesize(model, loop[0], reference=references[0])]
        return members.synthesize_many(model, loop, references=references)


@contextlib.contextmanager
def guarded(members: Any, seed: int) -> Any:
    """Where a synthesizer's call runs (``members``: what it declares): alone unless ``thread_safe``, with torch's
    global generator started from ``seed`` unless it has ``own_generators``."""
    with alone_unless_thread_safe(members.thread_safe is True):
        with contextlib.nullcontext() if bool(members.own_generators) else seeded_global_rng(seed):
            yield


def stored_results(plan: SynthesisPlan) -> dict[tuple[str, int], Stored]:
    """Every (synthesizer label, neuron) item: read back from the store, or synthesised where missing."""
    results = {}
    for (synth, _), items in zip(plan.units, synthesize_units(plan, plan.units, "synthesis")):
        results |= {(synth.label, n): item for n, item in items.items()}
    return results


# -- scores -------------------------------------------------------------------------------
def score_synthesis(
    plan: SynthesisPlan,
    evaluators: list[Evaluator],
    results: dict[tuple[str, int], Stored],
    checks: dict[str, PriorCheck] | None = None,
) -> SynthesisRun:
    """The run in memory: the rows of ``scores.csv`` (every item on every evaluator), the summary, the images
    (``natural/<neuron>``, ``<synthesizer>/<neuron>`` and, with a prior, ``<synthesizer>/<neuron>/prior``), the
    histories and, per synthesizer with a prior, its unguided samples (:func:`prior_samples_of`) and how they fit
    the stimuli (``checks``, :func:`check_priors`: the summary's ``prior_mismatch`` and the rows of ``priors.csv``)."""
    checks = checks or {}
    ids = plan.neuron_ids
    images = {f"natural/{ids[n]}": plan.natural_images(n) for n in plan.selected}
    rows: list[dict[str, Any]] = []
    histories: dict[str, Tensor] = {}
    prior_samples: dict[str, Tensor] = {}
    for synth in plan.synthesizers:
        for n in plan.selected:
            stored, name = results[(synth.label, n)], f"{synth.label}/{ids[n]}"
            images[name] = stored["images"]
            histories[name] = stored["history"]
            if "prior_images" in stored:
                images[f"{name}/prior"] = stored["prior_images"]
            cost = {k.removeprefix("cost/"): float(v) for k, v in stored.items() if k.startswith("cost/")}
            rows += evaluator_rows(evaluators, stored["images"], n, ids[n], synth.label, cost, plan.spec.batch_size)
        samples = prior_samples_of(plan, synth)
        if samples is not None:
            prior_samples[synth.label] = samples
    warn_undefined(rows)
    labels = [synth.label for synth in plan.synthesizers]
    selected = [ids[n] for n in plan.selected]
    summary = summarise_synthesis(rows)
    for row in summary:
        check = checks.get(row["synthesizer"])
        row["prior_mismatch"] = "; ".join(check.mismatches) if check is not None else ""
    equal_rows = []
    for n, item in equal_activation_items(plan, results):
        images[f"{item.synthesizer}/{item.neuron_id}/at/{item.matched_to}"] = item.images
        equal_rows += equal_activation_rows(evaluators, item, n, plan.spec.batch_size)
    add_equal_activation(summary, equal_rows, rows)
    run = SynthesisRun(rows, summary, evaluators, images, histories, prior_samples, selected, labels)
    run.prior_checks = [prior_check_row(label, check) for label, check in checks.items()]
    run.equal_rows = equal_rows
    return run


def equal_activation_items(
    plan: SynthesisPlan, results: dict[tuple[str, int], Stored]
) -> list[tuple[int, EqualActivation]]:
    """The comparison at equal train activation: the first synthesizer that declares ``iterates_at`` (an iterative
    one, e.g. ``gradient_ascent``), matched to every synthesizer that does not (e.g. ``egg``), per selected neuron:
    seed ``s``'s iterate at the first step its train-model response (its history) reaches the other's train
    activation of seed ``s`` (:func:`~sharedattr.synthesis.evaluation.steps_to_reach`; never reached: its last
    iterate). The iterates are replayed (``iterates_at``) and stored in ``work/``, so a second run reuses them.
    Nothing without an iterative synthesizer and another one; a pair with different ``n_seeds`` is left out, with a
    warning."""

    def iterative(synth: NamedSynthesizer) -> bool:
        return declared(synth.synthesizer, Synthesizer).iterates_at is not None

    by = next((synth for synth in plan.synthesizers if iterative(synth)), None)
    if by is None:
        return []
    items = []
    for target in (synth for synth in plan.synthesizers if not iterative(synth)):
        for n in plan.selected:
            mine, theirs = results[(by.label, n)], results[(target.label, n)]
            history, targets = mine["history"], theirs["responses"]
            if history.shape[1] != targets.shape[0]:
                warnings.warn(
                    f"no comparison at equal train activation of {by.label} with {target.label}: they have "
                    f"{history.shape[1]} and {targets.shape[0]} seeds; give both the same n_seeds",
                    stacklevel=2,
                )
                break
            steps, reached = steps_to_reach(history, targets)
            images = mine["images"].clone()  # a seed that never reaches keeps its last iterate, as stored
            if any(reached):  # replay only as far as the seeds that reach (not the whole run for the others)
                furthest = max(k for k, r in zip(steps, reached) if r)
                replayed = replayed_iterates(
                    plan, by, (target, n), [k if r else furthest for k, r in zip(steps, reached)]
                )
                images[torch.tensor(reached)] = replayed[torch.tensor(reached)]
            steps_run = float(mine.get("cost/steps", torch.tensor(float(len(history)))))
            wall_s = float(mine.get("cost/wall_s", torch.tensor(math.nan)))
            ids = plan.neuron_ids
            item = EqualActivation(
                by.label, target.label, ids[n], steps, reached, targets.tolist(), images, steps_run, wall_s
            )
            items.append((n, item))
    return items


def replayed_iterates(
    plan: SynthesisPlan, by: NamedSynthesizer, matched: tuple[NamedSynthesizer, int], steps: list[int]
) -> Tensor:
    """``by``'s iterates ``[S, C, H, W]`` of neuron ``matched[1]``, seed ``s`` after ``steps[s]`` updates (its
    ``iterates_at``, under the guards of its calls), stored once per (its item, the matched item, steps)."""
    target, n = matched
    model = plan.experiment.fit.model

    def replay() -> Stored:
        synthesizer = by.synthesizer
        members = declared(synthesizer, Synthesizer)
        reference = plan.natural_images(n, 1)[0].to(plan.ctx.device)
        with guarded(members, plan.spec.seed):
            return {"images": members.iterates_at(model, n, steps, reference=reference).detach().cpu().contiguous()}

    key = work_key(by=plan.item_key(by, n), matched=plan.item_key(target, n), steps=steps)
    valid = shape_validator({"images": (len(steps), model.in_channels, *model.input_size)})
    return plan.store.get_or_compute("equal_activation", key, replay, valid)["images"]


def check_priors(plan: SynthesisPlan) -> dict[str, PriorCheck]:
    """Per synthesizer with a generative prior (its declared ``prior_samples``), its unguided samples
    (:func:`prior_samples_of`, stored: the run shows the same ones) against up to :data:`PRIOR_SAMPLES` stimuli,
    evenly spaced, at the model's input (:func:`~sharedattr.synthesis.prior.check_prior`); one warning per prior
    that does not fit, naming it, the mismatch and how to pass another."""
    checks: dict[str, PriorCheck] = {}
    stimuli = None
    for synth in plan.synthesizers:
        samples = prior_samples_of(plan, synth)
        if samples is None:
            continue
        if stimuli is None:
            stimuli = plan.stimulus_sample()
        check = check_prior(str(synth.spec.get("prior", synth.label)), samples, stimuli)
        if check.mismatches:
            warnings.warn(check.warning(synth.label), stacklevel=2)
        checks[synth.label] = check
    return checks


def prior_check_row(label: str, check: PriorCheck) -> dict[str, Any]:
    """The ``priors.csv`` row (:data:`~sharedattr.runtime.run_files.PRIOR_CHECKS`) of synthesizer ``label``'s
    prior."""
    (pc, ph, pw), (sc, sh, sw) = check.prior_shape, check.stimuli_shape
    return {
        "synthesizer": label,
        "prior": check.prior,
        "prior_channels": pc,
        "prior_height": ph,
        "prior_width": pw,
        "stimuli_channels": sc,
        "input_height": sh,
        "input_width": sw,
        "prior_mean": check.prior_mean,
        "prior_std": check.prior_std,
        "stimuli_mean": check.stimuli_mean,
        "stimuli_std": check.stimuli_std,
        "mismatch": "; ".join(check.mismatches),
    }


def prior_samples_of(plan: SynthesisPlan, synth: NamedSynthesizer) -> Tensor | None:
    """:data:`PRIOR_SAMPLES` unguided samples ``[PRIOR_SAMPLES, C, H, W]`` of ``synth``'s generative prior (stored
    once per synthesizer spec and seed), or None for a synthesizer without ``prior_samples`` or no selection."""
    sampler = declared(synth.synthesizer, Synthesizer).prior_samples
    if sampler is None or not plan.selected:
        return None
    seed = plan.spec.seed
    samples = plan.store.get_or_compute(
        "prior_samples",
        work_key(synthesizer=synth.spec, n=PRIOR_SAMPLES, seed=seed),
        lambda: {"images": sampler(PRIOR_SAMPLES, seed=seed)},
        shape_validator({"images": (PRIOR_SAMPLES, None, None, None)}),
    )
    return samples["images"]


def _as_tensors(result: SynthesisResult) -> Stored:
    out = {
        "images": result.images.detach().cpu().contiguous(),
        "responses": result.responses.detach().cpu(),
        "history": result.history.detach().cpu(),
    }
    if result.prior_images is not None:
        out["prior_images"] = result.prior_images.detach().cpu().contiguous()
    for k, v in result.cost.items():
        out[f"cost/{k}"] = torch.tensor(float(v), dtype=torch.float64)
    return out


# -- the command -------------------------------------------------------------------------------
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
    """``sharedattr synthesize``: fit the model (into ``out/fit``, reused when unchanged; with ``spec.model``, the
    CLI's ``--model``, the model ``sharedattr fit`` saved there, checked and loaded, never fitted), select the
    neurons as ``sharedattr run`` does, then synthesise and score everything into ``out``.

    ``out`` is checked and locked as ``sharedattr run`` does (:func:`~sharedattr.experiment.context.out_folder`;
    ``config``: the file ``spec`` was read from, an input too); ``spec.json`` is written once every result is, then
    ``report.html`` and ``manifest.json``.

    With several ``ranks``, rank 0 fits, the (synthesizer, neuron) items are dealt out, and rank 0
    merges and writes (the other ranks return None), as in :func:`sharedattr.experiment.run.run_experiment`.

    Example::

        sharedattr.synthesize_experiment(sharedattr.load_experiment("experiment.toml"), Path("synthesis/"))
        pd.read_csv("synthesis/scores.csv")   # per neuron × synthesizer × evaluator
    """
    if not spec.synthesis:
        raise UserError(
            'the config has no synthesizers: add a [[synthesis]] table, e.g. name = "egg" or '
            'name = "gradient_ascent" (see docs/synthesis.md)'
        )
    out = Path(out)
    with out_folder(spec, out, config=config, ranks=ranks, kind="synthesize"):
        ctx = RunContext.start(spec, registry=registry, ranks=ranks, progress=progress)
        experiment = fit_for_run(ctx, spec, out, out / FIT_DIR)
        result = run_synthesis(ctx, spec, experiment, select_stage(spec, experiment), out)
        if ranks.is_main:
            atomic_write_json(out / ENVIRONMENT_FILE, environment())
            write_spec(out, spec)
            write_report(out)  # report.html: the synthesis section under an overview (sharedattr.report)
            write_manifest(out)
        return result
