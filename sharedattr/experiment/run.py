"""``sharedattr run``: data → encoding model → neuron/driver selection → matching → attribution → metrics.

The stages (:mod:`sharedattr.experiment.stages`) use the components named in the
:class:`~sharedattr.config.spec.ExperimentSpec`, each built once by the run's
:class:`~sharedattr.experiment.context.RunContext`. Results are written atomically to the output folder, under the
names (and, for the tables, with the columns and types) of the run folder's contract,
:mod:`sharedattr.runtime.run_files`:

- ``spec.json``: the validated spec with every default filled in, and its digest; written once every result is,
  so it never describes results the folder does not hold (see :func:`~sharedattr.experiment.stages.write_spec`);
- ``scores.csv``, ``model/`` and ``figures/fit.png``: the fitted encoding model and its
  held-out Pearson r per neuron (as ``sharedattr fit`` writes them); with ``spec.model`` (``--model DIR``), the
  model ``sharedattr fit`` saved in DIR, checked against the spec's data, backbone, readout and seed and loaded,
  not fitted (``model/model.json`` records it as ``reused_from``; DIR is only read);
- ``pairs.csv``: per neuron, each out-of-category driver and its matched references;
- ``results.csv`` (and ``results.parquet`` when pyarrow is installed): tidy, one row per
  neuron × driver × reference × method × image (driver or reference) × metric;
- ``summary.csv``: method × image × metric mean ± sem (also printed);
- ``maps.safetensors``: every attribution map ``[P, H, W]``, keyed ``<method>/<image>``;
- ``methods.csv``: per method, the wall time to make all its maps and the milliseconds per pair;
- ``metric_times.csv``: per metric × method, the wall time to score that method's maps, per map, and as a
  share of the method's own time;
- ``components.json``: what each method and metric declares (pairwise; family and direction) and its plugin;
- ``synthesis/``: when synthesizers are configured, their images scored on the train, val and cross
  evaluator models (see :mod:`sharedattr.experiment.synthesize`);
- ``figures/``: PNGs (fit quality, one attribution grid per neuron);
- ``work/``: finished work items (per method × block of ``batch_size`` pairs: its maps, and its
  scores per metric × image), so a second run of the same spec, or a run after an
  interruption, recomputes nothing that was finished (see docs/scaling.md);
- ``environment.json``: torch, its CPU kernels and the processor, which decide the results' last bits (the
  thread and rank counts do not: every result is computed on one thread, see docs/reliability.md);
- ``timings.json``: per stage, its wall time (``seconds``) and peak resident memory (``peak_rss_mb``, see
  :class:`~sharedattr.runtime.timing.StageTimer`);
- ``report.html``: a self-contained HTML report of all of the above (rebuild it with ``sharedattr report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from sharedattr.attribution.engine import NamedMethod, NamedMetric
from sharedattr.config.spec import ExperimentSpec
from sharedattr.encoding.model import EncodingModel
from sharedattr.experiment.context import RunContext, out_folder
from sharedattr.experiment.stages import (
    Components,
    Experiment,
    Explanation,
    PairSettings,
    Resume,
    explain_stage,
    fit_for_run,
    select_stage,
    write_spec,
)
from sharedattr.experiment.tables import (
    method_times,
    metric_times,
    save_maps,
    summarise_results,
    write_components,
    write_pairs,
    write_results,
)
from sharedattr.plugins.registry import Registry
from sharedattr.report import write_report
from sharedattr.runtime.distributed import SINGLE, Ranks
from sharedattr.runtime.io import atomic_write_json
from sharedattr.runtime.manifest import write_manifest
from sharedattr.runtime.numerics import environment, on_one_thread
from sharedattr.runtime.run_files import (
    ENVIRONMENT_FILE,
    FIGURES_DIR,
    METHOD_TIMES,
    METRIC_TIMES,
    SUMMARY,
    SYNTHESIS_DIR,
    TIMINGS_FILE,
    WORK_DIR,
)
from sharedattr.runtime.work_store import WorkStore
from sharedattr.selection.matching import Pair

STAGES = ("fit", "match", "attribute", "write", "synthesize")


@dataclass
class RunResult:
    """What :func:`run_experiment` wrote, in memory: ``rows`` is the tidy table, ``summary`` its means."""

    out_dir: Path
    neuron_ids: list[str]
    test_r: Tensor
    selected: list[int]
    pairs: list[Pair]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    reused: dict[str, Any] = field(default_factory=dict)


@on_one_thread
def run_experiment(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    ranks: Ranks = SINGLE,
    config: str | Path | None = None,
) -> RunResult | None:
    """Run the whole experiment described by ``spec``; write the results to ``out_dir``.

    ``out_dir`` is checked and locked first (:func:`~sharedattr.experiment.context.out_folder`): it may not hold the
    run's inputs, ``config`` (the file ``spec`` was read from) among them, and no other live command may be writing
    into it.

    Everything already computed in ``out_dir`` by a run of the same spec (the fitted model,
    each work item's maps and scores) is reused, so a repeated or resumed run is cheap. With ``spec.model`` (a
    folder ``sharedattr fit`` wrote; the CLI's ``--model``), that model is reused instead of fitting one, after a
    check that it was fitted on the spec's data, backbone, readout and seed (a :class:`UserError` names what
    differs); the outputs are those of a run that fits the same model.

    Example::

        >>> spec = load_experiment("experiment.toml")  # doctest: +SKIP
        >>> spec = spec.model_copy(update={"model": Path("fits/it-bodies")})  # doctest: +SKIP
        >>> result = run_experiment(spec, "results/")  # doctest: +SKIP
        >>> result.reused["model"]  # doctest: +SKIP
        1

    With several ``ranks`` (see :mod:`sharedattr.runtime.distributed`; ``out_dir`` on a folder every
    rank sees), rank 0 fits, every rank matches, the work items are dealt out round-robin, and
    rank 0 merges them and writes every output, the same as a single process; the other ranks
    return None. Progress bars are shown by rank 0 only.

    Example::

        result = sharedattr.run_experiment(sharedattr.load_experiment("experiment.toml"), "results/")
        pd.read_csv("results/results.csv")   # the table sharedattr.compare() returns on the same pairs
    """
    out = Path(out_dir)
    with out_folder(spec, out, config=config, ranks=ranks):
        ctx = RunContext.start(spec, registry=registry, ranks=ranks, progress=progress, stages=STAGES)
        return _run_locked(ctx, spec, out)


def _run_locked(ctx: RunContext, spec: ExperimentSpec, out: Path) -> RunResult | None:
    """:func:`run_experiment` once rank 0 holds the run lock of ``out``."""
    methods, metrics = ctx.methods(spec.methods), ctx.metrics(spec.metrics)

    def build_methods(model: EncodingModel) -> None:  # a param that does not fit the model (grad_cam's layer) fails
        for method in methods:  # here, before the fit writes anything; the built methods are reused below
            method.build(model)

    ctx.mark("fit")
    experiment = fit_for_run(ctx, spec, out, out, check=build_methods)
    neurons = select_stage(spec, experiment)
    resume = Resume(WorkStore(out / WORK_DIR), experiment.fit_digest)
    explanation = explain_stage(
        ctx,
        experiment.subject,
        neurons,
        PairSettings.from_spec(spec),
        Components(ctx.build(spec.matcher), methods, metrics),
        resume=resume,
    )
    if explanation.explained is None:  # another rank than 0: its items are written; rank 0 merges them
        synthesize_stage(ctx, spec, experiment, neurons, out)
        return None
    ctx.mark("write")
    summary = write_outputs(spec, out, experiment, explanation, methods, metrics)
    ctx.mark("synthesize")
    synthesize_stage(ctx, spec, experiment, neurons, out)
    stages = ctx.timer.stages()  # {stage: {seconds, peak_rss_mb, peak_of}}; the report also reads {stage: seconds}
    atomic_write_json(out / TIMINGS_FILE, stages)
    atomic_write_json(out / ENVIRONMENT_FILE, environment())  # what decides the last bits on this machine
    durations = {stage: record["seconds"] for stage, record in stages.items()}
    write_spec(out, spec)  # every result is written: now the spec may vouch for them
    write_report(out)
    write_manifest(out)
    reused = {
        "model": int(experiment.reused),
        "work_items_reused": resume.store.hits,
        "work_items_computed": resume.store.misses,
        "work_items_computed_by_rank": explanation.explained.computed_by_rank,
    }
    fit = experiment.fit
    return RunResult(
        out, fit.neuron_ids, fit.test_r, neurons, explanation.pairs, explanation.rows, summary, durations, reused
    )


def write_outputs(
    spec: ExperimentSpec,
    out: Path,
    experiment: Experiment,
    explanation: Explanation,
    methods: list[NamedMethod],
    metrics: list[NamedMetric],
) -> list[dict[str, Any]]:
    """The run's tables, maps, components and figures (rank 0); returns the summary rows."""
    fit, stimuli, explained, pairs = experiment.fit, experiment.stimuli, explanation.explained, explanation.pairs
    neuron_ids, categories = fit.neuron_ids, list(stimuli.categories)
    write_pairs(out, pairs, experiment.drive, neuron_ids, stimuli.ids, categories)
    write_results(out, explanation.rows)
    summary = summarise_results(explanation.rows)
    SUMMARY.write(out, summary)
    METHOD_TIMES.write(out, method_times(explained, len(pairs)))
    METRIC_TIMES.write(out, metric_times(explained))
    write_components(out, methods, metrics, {m.label: m.pairwise(fit.model) for m in methods})
    if spec.output.save_maps and explained.maps:
        save_maps(out, explained, pairs, neuron_ids, stimuli.ids)
    if spec.output.figures:
        from sharedattr.report.figures import attribution_grids  # matplotlib only when figures are on

        attribution_grids(
            pairs,
            explanation.images.drivers,
            explanation.images.references,
            explained.maps,
            neuron_ids,
            stimuli.ids,
            out / FIGURES_DIR,
            spec.output.dpi,
        )
    return summary


def synthesize_stage(
    ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, neurons: list[int], out: Path
) -> None:
    """The configured synthesizers on the selected neurons, into ``out/synthesis`` (nothing when none)."""
    if spec.synthesis:
        from sharedattr.experiment.synthesize import run_synthesis

        run_synthesis(ctx, spec, experiment, neurons, out / SYNTHESIS_DIR)
