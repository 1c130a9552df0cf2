"""The stages every command is made of, each written once.

- :func:`fit_stage`: data → checks → features → fitted (or saved) encoding model → scores; and
  :func:`fit_for_run`, the same at the start of ``run`` and ``synthesize`` (rank 0 fits, the
  other ranks load what it saved);
- :func:`select_stage`: which neurons to explain, by the spec's rule;
- :func:`explain_stage`: the explanation chain: preferred categories → drivers and matched
  references → ground-truth parts → pair images → every method on every pair → every metric
  on every map → the tidy rows. ``sharedattr run`` and :func:`sharedattr.compare` both run it.

``sharedattr run`` is fit → select → explain → write → synthesise → report
(:mod:`sharedattr.experiment.run`), ``sharedattr synthesize`` fit → select → synthesise
(:mod:`sharedattr.experiment.synthesize`), ``compare`` features → explain
(:mod:`sharedattr.experiment.compare`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.attribution.engine import Explained, ExplainSettings, NamedMethod, NamedMetric, explain_pairs
from sharedattr.config.spec import ExperimentSpec
from sharedattr.data import StimulusSet, load_responses
from sharedattr.data.features import FeatureCache, extract_features, release_pages
from sharedattr.data.ground_truth import load_neuron_parts, pair_truth
from sharedattr.data.pairs import PairImages
from sharedattr.data.responses import responses_digest
from sharedattr.encoding.fit import Fit, FitSettings, fit_readout, fit_with_backbone
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.store import (
    check_reused_model,
    fit_digest,
    fit_inputs,
    save_model,
    saved_digest,
    saved_model_folder,
    warn_if_data_changed,
)
from sharedattr.experiment.context import RunContext, feature_cache_folder, out_folder
from sharedattr.experiment.tables import tidy_rows, write_scores
from sharedattr.plugins.contracts import BackboneModule, declared
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Registry
from sharedattr.plugins.specs import ComponentSpec
from sharedattr.runtime.devices import resolve_device
from sharedattr.runtime.errors import DataError, UserError, closest
from sharedattr.runtime.io import atomic_write_json
from sharedattr.runtime.memory import bytes_per_image, images_per_pass, workers_within
from sharedattr.runtime.numerics import default_workers, on_one_thread
from sharedattr.runtime.out_folder import folder_spec_digest
from sharedattr.runtime.run_files import FIT_FIGURE, FIT_SCORES, MODEL_DIR, SPEC_FILE
from sharedattr.runtime.run_folder import TEMP_SUFFIX, temporary_prefix
from sharedattr.runtime.work_store import WorkStore
from sharedattr.selection.matching import MatchOptions, MatchSettings, Pair, given_pairs, match_pairs
from sharedattr.selection.neurons import measured_else_predicted, preferred_categories, select_neurons


# -- fit ----------------------------------------------------------------------------------
@dataclass
class Experiment:
    """Everything the later stages need from the data and the fitted model.

    ``responses`` ``[S, N]`` are aligned to ``stimuli`` (NaN = not measured); ``latents``
    ``[S, ...]`` may be memory-mapped from the feature cache.
    """

    stimuli: StimulusSet
    responses: Tensor
    latents: Tensor
    fit: Fit
    cache_hit: bool
    fit_digest: str = ""
    reused: bool = False
    neuron_parts: dict[str, tuple[str, ...]] | None = None

    @cached_property
    def drive(self) -> Tensor:
        """``[S, N]``: what ranks the drivers and natural images: measured responses, else the model's predictions."""
        return measured_else_predicted(self.responses, self.fit.predicted)

    @property
    def subject(self) -> Subject:
        """What the explanation chain explains: the fitted model, the stimuli, their latents and the drive."""
        fit = self.fit
        return Subject(fit.model, self.stimuli, self.latents, self.drive, fit.neuron_ids, self.neuron_parts)


@dataclass(frozen=True)
class ModelFolder:
    """Where a fitted encoding model is saved, and what identifies it there: ``record`` (saved in its
    ``model.json``, in this order) holds its digest under ``key`` (``fit_digest`` for a run's model,
    ``evaluator_digest`` for an evaluator's). With ``reuse``, a model saved there with the same digest is loaded
    instead of fitted again."""

    path: Path
    key: str
    record: dict[str, Any]
    reuse: bool = True

    @property
    def digest(self) -> str:
        return self.record[self.key]

    def saved(self) -> str | None:
        """The digest of the model saved there (None: none, or one that does not verify), when reusing."""
        return saved_digest(self.path, self.key) if self.reuse else None


@dataclass(frozen=True)
class FitJob:
    """One readout fit: the readout of ``readout_spec`` on the latents ``[S, ...]`` of ``backbone`` (built from
    ``backbone_spec``), to ``responses`` ``[S, N]`` of ``neuron_ids``, as ``settings`` says; kept in ``folder``.

    A trainable backbone (:class:`~sharedattr.plugins.contracts.BackboneModule`) is trained with the readout on the
    images of ``stimuli`` instead, and ``latents`` (None) are not used."""

    backbone_spec: ComponentSpec
    readout_spec: ComponentSpec
    backbone: Any
    latents: Tensor | None
    responses: Tensor
    neuron_ids: list[str]
    settings: FitSettings
    folder: ModelFolder
    stimuli: StimulusSet | None = None

    @property
    def trainable(self) -> bool:
        """Whether the backbone trains with the readout (what it declares)."""
        return declared(self.backbone, BackboneModule).trainable


def fit_or_load(ctx: RunContext, job: FitJob, saved: Path | None = None) -> tuple[Fit, bool]:
    """The fit of ``job``: the model saved in its folder when it has the job's digest (the same split and scores as
    the fit that saved it), else fitted now; and whether it was loaded. The fit stage and the synthesis stage's
    evaluators both fit this way: a frozen backbone's readout on its latents, a trainable backbone with its readout
    on the images (:func:`~sharedattr.encoding.fit.fit_with_backbone`). ``saved``: a model folder already checked to
    hold the job's model (:func:`~sharedattr.encoding.store.check_reused_model`, for ``--model``), loaded from there,
    never fitted."""
    reused = saved is not None or job.folder.saved() == job.folder.digest
    readout = ctx.build(job.readout_spec)
    if job.trainable:
        if job.stimuli is None:
            raise ValueError("a FitJob of a trainable backbone needs its stimuli (it trains on their images)")
        backbone = job.backbone
        images = job.stimuli.load_images(tuple(backbone.input_size), int(backbone.in_channels))
        inputs, fit_with = images, fit_with_backbone
    else:
        inputs, fit_with = job.latents, fit_readout
    saved = saved if saved is not None else job.folder.path if reused else None
    fit = fit_with(readout, job.backbone, inputs, job.responses, job.neuron_ids, job.settings, saved=saved)
    return fit, reused


def save_fit(ctx: RunContext, job: FitJob, fit: Fit) -> None:
    """Save ``fit``'s model into the job's folder, with the folder's record (its digest among it)."""
    folder = job.folder
    save_model(
        fit.model,
        job.backbone_spec,
        job.readout_spec,
        fit.neuron_ids,
        folder.path,
        extra=folder.record,
        registry=ctx.registry,
    )


@dataclass(frozen=True)
class Data:
    """A spec's data, loaded and checked: the stimuli, the recorded responses (and those aligned to the stimuli,
    ``[S, N]``, NaN = not measured), the neurons' parts where the set has part masks, and the digests of the data's
    content (:func:`~sharedattr.encoding.store.fit_digest` keys the fitted model on them)."""

    stimuli: StimulusSet
    recorded: Any
    responses: Tensor
    neuron_parts: dict[str, tuple[str, ...]] | None
    digests: dict[str, str]


def response_settings(spec: ExperimentSpec) -> dict[str, Any]:
    """The responses readers' keyword arguments from the config's ``[data]`` fields (beside ``data.responses``): what
    ``fit`` loads and ``validate`` inspects alike."""
    data = spec.data
    return {
        "ids_path": data.response_ids,
        "neuron_ids_path": data.neuron_ids,
        "time_window": data.time_window,
        "time_bins_path": data.time_bins,
        "nwb_table": data.nwb_table,
    }


def load_data(spec: ExperimentSpec) -> Data:
    """Load and check the spec's stimuli and responses, before any compute: categories, selected neurons, parts."""
    data = spec.data
    stimuli = StimulusSet.load(data.stimuli, images=data.images, category_column=data.category_column)
    stimuli.check_categories(data.categories)
    recorded = load_responses(data.responses, **response_settings(spec))
    check_selection(spec, stimuli, recorded.neuron_ids)
    neuron_parts = checked_neuron_parts(spec, stimuli, recorded.neuron_ids)
    digests = {"stimuli_digest": stimuli.content_digest(), "responses_digest": responses_digest(data)}
    return Data(stimuli, recorded, recorded.aligned_to(stimuli), neuron_parts, digests)


def fit_stage(
    ctx: RunContext,
    spec: ExperimentSpec,
    out: str | Path,
    *,
    reuse: bool = False,
    write: bool = True,
    check: Callable[[EncodingModel], Any] | None = None,
    spec_folder: Path | None = None,
    reused_model: Path | None = None,
) -> Experiment:
    """Load and check the data, extract (or reuse) features, fit and score the readout, save the model. A trainable
    backbone (it declares ``trainable``, :class:`~sharedattr.plugins.contracts.BackboneModule`) is fitted with the
    readout on the images instead, and its latents, computed from the trained backbone, are never cached.

    Writes ``scores.csv``, ``model/`` and, with figures on, ``figures/fit.png`` into ``out``
    (unless ``write`` is False: the ranks of a distributed run other than rank 0 only read).
    With ``reuse``, a model already saved in ``out/model`` by a fit of the same data, backbone,
    readout and seed (the same :func:`~sharedattr.encoding.store.fit_digest`) is loaded instead of
    fitted again. ``reused_model`` (``--model``: a model folder, a ``fit`` folder, see
    :func:`~sharedattr.encoding.store.saved_model_folder`) is checked to be the model this fit would make
    (:func:`~sharedattr.encoding.store.check_reused_model`: one :class:`UserError` naming what differs) and loaded
    from there, never fitted and never written to; ``out/model`` gets a copy whose ``model.json`` records where it
    came from (``reused_from``), so ``out`` holds all a report needs. The held-out scores are those of the saved
    fit: the same split, recomputed on the same features. ``check(model)`` runs on the fitted model before anything
    is written (the methods of a run are built on it there, so that a param that does not fit the model fails
    before the folder changes). ``spec_folder``: the folder whose ``spec.json`` vouches for these results; one
    describing another spec is retired as the first result is written (:func:`superseding`).
    """
    out = Path(out)
    data = load_data(spec)
    digest = fit_digest(spec, data.digests["stimuli_digest"], data.digests["responses_digest"])
    backbone = ctx.build(spec.backbone).to(ctx.device)
    source = None
    if reused_model is not None:  # before any compute: a model of another fit is refused at once
        source = saved_model_folder(reused_model)
        check_reused_model(source, spec, data.digests, backbone)
    trainable = declared(backbone, BackboneModule).trainable  # trained with the readout: latents come after the fit
    stimuli_digest = data.digests["stimuli_digest"]
    latents, hit = (
        (None, False) if trainable else features(ctx, spec, spec.backbone, backbone, data.stimuli, stimuli_digest)
    )
    inputs = fit_inputs(spec)  # the model records the data settings and seed too: a reuse names what differs
    record = {"spec_digest": spec.digest(), "fit_digest": digest, **data.digests, "split_seed": spec.data.split_seed}
    record |= {"data": inputs["data"], "seed": inputs["seed"]} | ({"reused_from": str(source)} if source else {})
    folder = ModelFolder(out / MODEL_DIR, "fit_digest", record, reuse)  # the specs there hold the other seeds
    settings = FitSettings(
        spec.data.test_fraction, spec.data.split_seed, spec.batch_size, ctx.device, spec.readout.name, ctx.progress
    )
    neuron_ids = list(data.recorded.neuron_ids)
    job = FitJob(
        spec.backbone, spec.readout, backbone, latents, data.responses, neuron_ids, settings, folder, data.stimuli
    )
    saved = folder.saved() if source is None else None
    if saved is not None and saved != digest:
        warn_if_data_changed(folder.path, spec, data.digests)
    fit, reused = fit_or_load(ctx, job, source)
    if trainable:
        latents, hit = features(ctx, spec, spec.backbone, fit.model.backbone, data.stimuli, stimuli_digest)
    if data.recorded.has_repeats:
        fit.score_repeats(data.recorded.trials_aligned_to(data.stimuli))
    experiment = Experiment(data.stimuli, data.responses, latents, fit, hit, digest, reused, data.neuron_parts)
    if check is not None:
        check(fit.model)
    if write:
        with superseding(spec_folder, spec.digest(), out / FIT_SCORES.name):
            write_scores(fit, out)
        if not reused or source is not None:
            save_fit(ctx, job, fit)
        if spec.output.figures:
            from sharedattr.report.figures import fit_figure  # matplotlib only when figures are on

            test = fit.test
            fit_figure(
                fit.test_r, fit.predicted[test], data.responses[test], fit.neuron_ids, out / FIT_FIGURE, spec.output.dpi
            )
    return experiment


def features(
    ctx: RunContext,
    spec: ExperimentSpec,
    backbone_spec: Any,
    backbone: Any,
    stimuli: StimulusSet,
    stimuli_digest: str | None = None,
) -> tuple[Tensor, bool]:
    """Latents ``[S, ...]`` of every stimulus by ``backbone`` (built from ``backbone_spec``), through the
    feature cache when ``spec.cache`` is on, in passes that fit ``attribution.memory_mb``; and whether the cache
    hit. A trainable backbone's latents are never cached (its weights are not those of its spec)."""
    folder = None if declared(backbone, BackboneModule).trainable else feature_cache_folder(spec)
    cache = None if folder is None else FeatureCache(folder, backbone_spec.model_dump(mode="json"), stimuli_digest)
    return extract_features(
        backbone,
        stimuli,
        cache=cache,
        batch_size=spec.batch_size,
        device=ctx.device,
        progress=ctx.progress,
        memory_mb=spec.attribution.memory_mb,
    )


@on_one_thread
def fit_experiment(
    spec: ExperimentSpec,
    out: str | Path,
    *,
    registry: Registry | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    reuse: bool = False,
    config: str | Path | None = None,
) -> Experiment:
    """``sharedattr fit``: :func:`fit_stage` of ``spec`` into ``out``, on ``device`` (default: the spec's).

    ``out`` is checked and locked as ``sharedattr run`` does (:func:`~sharedattr.experiment.context.out_folder`):
    it may not hold the fit's inputs, ``config`` (the file ``spec`` was read from) among them, and no other live
    command may be writing into it. A ``spec.json`` there that describes another spec is retired
    (:func:`superseding`): the folder's scores and model stop matching it.

    Example::

        experiment = sharedattr.fit_experiment(sharedattr.load_experiment("my-neurons.toml"), "fits/my-neurons")
        experiment.fit.test_r            # held-out Pearson r per neuron
        model = experiment.fit.model     # or later: sharedattr.load_model("fits/my-neurons/model")
    """
    with out_folder(spec, out, config=config) as folder:
        ctx = RunContext(
            registry if registry is not None else get_registry(),
            torch.device(device) if device is not None else resolve_device(spec.device),
            progress=progress,
        )
        return fit_stage(ctx, spec, folder, reuse=reuse, spec_folder=folder)


def check_selection(spec: ExperimentSpec, stimuli: StimulusSet, neuron_ids: Sequence[str]) -> None:
    """``selection.neurons`` must name recorded neurons, ``data.preferred_category`` a stimulus category:
    checked before any compute."""
    preferred, categories = spec.data.preferred_category, stimuli.category_names
    if preferred is not None and preferred not in categories:
        hint = closest(preferred, categories)
        raise UserError(
            f"data.preferred_category: {preferred!r} is not one of {categories}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (the categories of {spec.data.stimuli})"
        )
    unknown = [n for n in spec.selection.neurons or [] if n not in set(neuron_ids)]
    if unknown:
        hints = [f"{closest(n, neuron_ids)!r} for {n!r}" for n in unknown if closest(n, neuron_ids)]
        shown = ", ".join(neuron_ids[:20]) + (" ..." if len(neuron_ids) > 20 else "")
        raise UserError(
            f"selection.neurons: unknown neuron id(s) {unknown}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; the responses ({spec.data.responses}) have {len(neuron_ids)} neurons: {shown}"
        )


def checked_neuron_parts(
    spec: ExperimentSpec, stimuli: StimulusSet, neuron_ids: Sequence[str]
) -> dict[str, tuple[str, ...]] | None:
    """``data.neuron_parts``, checked against the manifest's part columns and the recorded neuron ids."""
    if spec.data.neuron_parts is None:
        return None
    parts = load_neuron_parts(spec.data.neuron_parts, list(stimuli.part_masks))
    unknown = sorted(set(parts) - set(neuron_ids))
    if unknown:
        raise DataError(
            spec.data.neuron_parts, [f"neuron {n!r} is not in the responses ({spec.data.responses})" for n in unknown]
        )
    return parts


def fit_for_run(
    ctx: RunContext,
    spec: ExperimentSpec,
    out: Path,
    fit_dir: Path,
    check: Callable[[EncodingModel], Any] | None = None,
) -> Experiment:
    """The start of ``sharedattr run``/``synthesize``: the fitted (or saved) model in ``fit_dir``.

    Rank 0 (holding the run lock of ``out``) fits, reusing a saved model of the same digest; ``check(model)`` runs
    before anything is written. A run that fails on its inputs or on ``check`` leaves the folder as it was. The
    first result written retires an ``out/spec.json`` of another spec (:func:`superseding`); the command writes
    its own (:func:`write_spec`) once every result is written. After a barrier, the other ranks load what rank 0
    saved, writing nothing. With ``spec.model`` (``--model``), nothing is fitted: every rank checks and loads that
    saved model (:func:`fit_stage`'s ``reused_model``), and rank 0 copies it into ``fit_dir``.
    """
    ranks = ctx.ranks
    if ranks.is_main:
        experiment = fit_stage(ctx, spec, fit_dir, reuse=True, check=check, spec_folder=out, reused_model=spec.model)
    ranks.barrier()  # the other ranks load the model rank 0 saved (or, with spec.model, that one)
    if not ranks.is_main:
        experiment = fit_stage(ctx, spec, fit_dir, reuse=True, write=False, check=check, reused_model=spec.model)
    return experiment


def write_spec(out: Path, spec: ExperimentSpec) -> Path:
    """Write ``out/spec.json``: the validated spec with every default filled in, and its digest.

    ``run`` and ``synthesize`` call it once the folder holds every result of ``spec`` (before the report and the
    manifest), so the file never vouches for results the folder does not hold: a run that fails or is killed
    before then leaves no ``spec.json`` of its own, and the next run of the same spec resumes and writes it.
    """
    return atomic_write_json(out / SPEC_FILE, {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})


def _identity(path: Path) -> tuple[int, ...] | None:
    """What tells whether ``path`` was replaced (an atomic write makes a new inode): None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def superseding(folder: Path | None, digest: str, first: Path) -> Iterator[None]:
    """Around the write of ``first``, the first result a command writes into ``folder`` for the spec of ``digest``.

    A ``folder/spec.json`` that describes another spec vouches for results that this command is about to replace,
    so it is set aside (renamed to a temporary) before the block and removed after it; the command writes its own
    ``spec.json`` once every result is written (:func:`write_spec`). If the block fails and ``first`` was not
    replaced (a full disk, an interrupt before the rename), nothing in the folder changed and the spec is put back.
    Killed in between, the set-aside file is a temporary of a dead writer, removed by the next run. Nothing happens
    without ``folder``, without a ``spec.json``, or when it describes this spec (a resumed run).
    """
    if folder is None or folder_spec_digest(folder) in (None, digest):
        yield
        return
    spec_file = folder / SPEC_FILE
    aside = spec_file.with_name(f"{temporary_prefix(spec_file)}aside{TEMP_SUFFIX}")
    before = _identity(first)
    os.replace(spec_file, aside)
    try:
        yield
    except BaseException:
        if _identity(first) == before:
            os.replace(aside, spec_file)
        raise
    finally:
        aside.unlink(missing_ok=True)


# -- select -------------------------------------------------------------------------------
def select_stage(spec: ExperimentSpec, experiment: Experiment) -> list[int]:
    """Output indices of the neurons to explain, by ``spec.selection`` (explicit ids, or the best held-out r)."""
    sel, fit = spec.selection, experiment.fit
    return select_neurons(fit.neuron_ids, fit.test_r, neurons=sel.neurons, top_k=sel.top_k, min_r=sel.min_r)


# -- explain ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PairSettings:
    """How drivers and references are chosen and their maps made comparable.

    From ``spec.data``/``spec.selection``/``spec.attribution`` (:meth:`from_spec`) or from :func:`sharedattr.compare`'s
    keywords; built by keyword only. ``preferred_category``, ``drivers_per_neuron``, ``references_per_driver`` and
    ``match_on`` choose the pairs (:mod:`sharedattr.selection.matching`); ``on_reference``, ``reduce``,
    ``batch_size`` and ``memory_mb`` make the maps (:class:`~sharedattr.attribution.engine.ExplainSettings`, built
    from them by :meth:`explain_settings`).
    """

    preferred_category: str | None = None
    drivers_per_neuron: int = 2
    references_per_driver: int = 1
    match_on: str = "dimensions"
    on_reference: bool = True
    reduce: str = "sum"
    batch_size: int = 32
    memory_mb: int = 2048

    @classmethod
    def from_spec(cls, spec: ExperimentSpec) -> PairSettings:
        return cls(
            preferred_category=spec.data.preferred_category,
            drivers_per_neuron=spec.selection.drivers_per_neuron,
            references_per_driver=spec.selection.references_per_driver,
            match_on=spec.selection.match_on,
            on_reference=spec.attribution.on_reference,
            reduce=spec.attribution.reduce,
            batch_size=spec.batch_size,
            memory_mb=spec.attribution.memory_mb,
        )

    def explain_settings(self, model: EncodingModel, channels: int, device: torch.device) -> ExplainSettings:
        """The engine's settings for ``model`` on images of ``channels``: the images one pass may hold and the work
        items side by side, both from :attr:`memory_mb` (neither changes a result's bits)."""
        per_image = bytes_per_image(model, model.input_size, channels, device)
        return ExplainSettings(
            self.on_reference,
            self.reduce,
            self.batch_size,
            device,
            images_per_pass(self.memory_mb, per_image),
            workers_within(self.memory_mb, default_workers()),
        )


@dataclass(frozen=True)
class Subject:
    """What the explanation chain explains: a fitted model, the stimuli and their latents, and what ranks drivers.

    ``latents`` ``[S, ...]`` and ``drive`` ``[S, N]`` (measured responses, else the model's predictions) are aligned
    with ``stimuli``; ``neuron_ids`` name the model's N outputs; ``neuron_parts`` (neuron id → its driving parts)
    gives part ground truth, where the stimulus set has part masks. ``sharedattr run`` takes it from the fit
    (:attr:`Experiment.subject`); :func:`sharedattr.compare` builds it from a model and stimuli.
    """

    model: EncodingModel
    stimuli: StimulusSet
    latents: Tensor
    drive: Tensor
    neuron_ids: list[str]
    neuron_parts: Mapping[str, Sequence[str]] | None = None


@dataclass(frozen=True)
class Components:
    """The built components of the explanation chain: the matcher, and each method and metric with its label."""

    matcher: Any
    methods: Sequence[NamedMethod]
    metrics: Sequence[NamedMetric]


@dataclass(frozen=True)
class Resume:
    """Where a run keeps its finished work items (``store``) and the digest of the model they were computed with:
    an item is reused by a later run of the same model, pairs and component."""

    store: WorkStore
    model_digest: str


@dataclass
class Explanation:
    """What the explanation chain made: the pairs (neuron, driver, reference), their images and masks, every
    method's maps and every metric's scores, and the tidy rows. ``explained`` is None (and ``rows`` empty)
    on the ranks of a distributed run other than rank 0."""

    pairs: list[Pair]
    images: PairImages
    explained: Explained | None
    rows: list[dict[str, Any]]


def explain_stage(
    ctx: RunContext,
    subject: Subject,
    neurons: Sequence[int],
    settings: PairSettings,
    components: Components,
    *,
    resume: Resume | None = None,
    given: Sequence[tuple[int, int, int]] | None = None,
) -> Explanation:
    """The explanation chain for ``neurons`` (output indices of ``subject.model``): drivers and their matched
    references (or the ``given`` ``(neuron, driver, reference)`` index triples, each keeping the matcher's
    similarity), then every method on every pair and every metric on every map. With ``resume``, every work item
    is kept in (and reused from) its store, keyed by the model's digest and the pairs' ids."""
    ctx.mark("match")
    pairs = match_stage(ctx, subject, neurons, settings, components.matcher, given)
    release_pages(subject.latents)  # attribution reads images, not features: the OS may drop the cached map's pages
    ctx.mark("attribute")
    return attribute_stage(ctx, subject, pairs, settings, components, resume)


def match_stage(
    ctx: RunContext,
    subject: Subject,
    neurons: Sequence[int],
    settings: PairSettings,
    matcher: Any,
    given: Sequence[tuple[int, int, int]] | None = None,
) -> list[Pair]:
    """The pairs to explain: each neuron's out-of-category drivers and their matched references, or ``given``."""
    readout, latents = subject.model.readout, subject.latents
    options = MatchOptions(on=settings.match_on, batch_size=settings.batch_size, device=ctx.device)
    if given is not None:
        return given_pairs(readout, latents, matcher, given, options)
    categories = list(subject.stimuli.categories)
    preferred = preferred_categories(categories, subject.drive, neurons, settings.preferred_category)
    match = MatchSettings(settings.drivers_per_neuron, settings.references_per_driver, options)
    return match_pairs(readout, latents, matcher, categories, subject.drive, neurons, preferred, match)


def attribute_stage(
    ctx: RunContext,
    subject: Subject,
    pairs: list[Pair],
    settings: PairSettings,
    components: Components,
    resume: Resume | None = None,
) -> Explanation:
    """Every method on every pair and every metric on every map (:func:`~sharedattr.attribution.engine.explain_pairs`),
    and the tidy rows."""
    model, stimuli, neuron_ids = subject.model, subject.stimuli, subject.neuron_ids
    truth = None if subject.neuron_parts is None else pair_truth(stimuli, subject.neuron_parts, neuron_ids, pairs)
    indices = [i for p in pairs for i in (p.driver, p.reference)]
    images = PairImages.load(stimuli, pairs, model.input_size, stimuli.channels_for(model.in_channels, indices), truth)
    identity = (
        None
        if resume is None
        else {
            "model": resume.model_digest,
            "pairs": [[neuron_ids[p.neuron], stimuli.ids[p.driver], stimuli.ids[p.reference]] for p in pairs],
        }
    )
    explained = explain_pairs(
        model,
        pairs,
        images,
        components.methods,
        components.metrics,
        replace(
            settings.explain_settings(model, images.drivers.shape[1], ctx.device),
            progress=ctx.progress,
            ranks=ctx.ranks,
        ),
        store=None if resume is None else resume.store,
        identity=identity,
    )
    categories = list(stimuli.categories)
    rows = [] if explained is None else tidy_rows(pairs, explained, neuron_ids, stimuli.ids, categories)
    return Explanation(pairs, images, explained, rows)
