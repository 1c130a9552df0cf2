"""``sharedattr.compare``: the method comparison of ``sharedattr run`` as one Python call on a fitted model.

It runs the same explanation chain as ``sharedattr run``
(:func:`sharedattr.experiment.stages.explain_stage`) on a model you already have, and returns the
tidy table as a pandas DataFrame (with ``return_maps``, a :class:`Comparison`: the table, the maps and the pairs'
images); nothing is written to disk. Given the measured responses, it ranks the drivers as ``sharedattr run`` does;
without them, by the model's predictions, with one :class:`PredictedDriversWarning` per call.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.data import Responses, StimulusSet
from sharedattr.data.features import extract_features
from sharedattr.data.ground_truth import load_neuron_parts
from sharedattr.data.loaders import load_responses, stimulus_set
from sharedattr.data.naming import arguments
from sharedattr.data.pairs import PairImages
from sharedattr.encoding.fit import predict
from sharedattr.encoding.model import EncodingModel
from sharedattr.experiment.context import RunContext, validated_specs
from sharedattr.experiment.stages import Components, PairSettings, Subject, explain_stage
from sharedattr.experiment.tables import RESULT_COLUMNS
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Registry
from sharedattr.plugins.specs import MatcherSpec, MethodSpec, MetricSpec
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.numerics import on_one_thread
from sharedattr.selection.neurons import measured_else_predicted

ComponentLike = str | Mapping[str, Any]
SOURCE = "sharedattr.compare"
PAIR_COLUMN = "pair"
"""The column of :func:`compare`'s table holding each row's pair: its index into the first axis ``P`` of the maps
(and of :attr:`Comparison.images`), in the order of :attr:`Comparison.pairs`."""
COMPARE_COLUMNS = [PAIR_COLUMN, *RESULT_COLUMNS]
"""The columns of :func:`compare`'s table: :data:`PAIR_COLUMN`, then those of ``results.csv``."""


class PredictedDriversWarning(UserWarning):
    """:func:`compare` ranked the drivers by the model's predictions: it was given no measured responses (or none for
    some neurons), so its drivers may differ from those ``sharedattr run`` picks on the same data."""


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """What :func:`compare` returns with ``return_maps=True``; it unpacks as ``table, maps = ...``.

    ``table``: the tidy DataFrame (:data:`COMPARE_COLUMNS`), whose ``pair`` column indexes the first axis ``P`` of
    ``maps`` (``{method: {"driver"|"reference": [P, H, W]}}``, ``"reference"`` where the method ran on it) and of
    ``images`` (the pairs' images ``drivers``/``references`` ``[P, C, H, W]`` in [0, 1], as the methods saw them);
    ``pairs``: ``(neuron id, driver id, reference id)`` of each pair, in that order.

    Example::

        result = sharedattr.compare(model, stimuli, responses=recorded, return_maps=True)
        k = result.pair_index("limbs", "objects_0003")          # the first pair of that neuron and driver
        result.maps["saliency"]["driver"][k]                    # its saliency map [H, W]
        result.table[result.table["pair"] == k]                 # its rows of the table
    """

    table: Any
    maps: dict[str, dict[str, Tensor]]
    images: PairImages
    pairs: list[tuple[str, str, str]]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.table, self.maps))

    def pair_index(self, neuron: str, driver: str, reference: str | None = None) -> int:
        """The index into ``P`` of the first pair of ``neuron`` and ``driver`` (and ``reference`` when given);
        :class:`~sharedattr.runtime.errors.UserError` listing the pairs there are when none matches."""
        for k, (n, d, r) in enumerate(self.pairs):
            if n == neuron and d == driver and reference in (None, r):
                return k
        shown = ", ".join(f"({n}, {d}, {r})" for n, d, r in self.pairs[:10]) + (" …" if len(self.pairs) > 10 else "")
        wanted = f"neuron {neuron!r}, driver {driver!r}" + ("" if reference is None else f", reference {reference!r}")
        raise UserError(f"no pair of {wanted} was explained; the pairs (neuron, driver, reference): {shown}")


def _neuron_indices(neurons: Sequence[str | int] | None, neuron_ids: list[str]) -> list[int]:
    if neurons is None:
        return list(range(len(neuron_ids)))
    index = {n: i for i, n in enumerate(neuron_ids)}
    out, unknown = [], []
    for n in neurons:
        if isinstance(n, int) and 0 <= n < len(neuron_ids):
            out.append(n)
        elif isinstance(n, str) and n in index:
            out.append(index[n])
        else:
            unknown.append(n)
    if unknown:
        raise UserError(
            f"compare(neurons=...): unknown neuron(s) {unknown}; the model has {neuron_ids[:20]}"
            f"{' …' if len(neuron_ids) > 20 else ''} (ids or indices 0..{len(neuron_ids) - 1})"
        )
    return out


def _given_pairs(
    pairs: Sequence[tuple[str | int, str, str]], neuron_ids: list[str], stimulus_ids: Sequence[str]
) -> list[tuple[int, int, int]]:
    """``(neuron, driver id, reference id)`` → index triples; every unknown neuron or stimulus is named at once."""
    index = {s: i for i, s in enumerate(stimulus_ids)}
    out, problems = [], []
    for k, triple in enumerate(pairs):
        if not isinstance(triple, (tuple, list)) or len(triple) != 3:
            problems.append(f"pairs[{k}] = {triple!r}: expected (neuron, driver id, reference id)")
            continue
        neuron, driver, reference = triple
        try:
            (n,) = _neuron_indices([neuron], neuron_ids)
        except UserError:
            problems.append(f"pairs[{k}]: unknown neuron {neuron!r}")
            continue
        unknown = [str(s) for s in (driver, reference) if s not in index]
        if unknown:
            problems.append(f"pairs[{k}]: unknown stimulus id(s) {', '.join(unknown)}")
            continue
        out.append((n, index[driver], index[reference]))
    if problems:
        shown = "; ".join(problems[:10]) + (f"; … ({len(problems) - 10} more)" if len(problems) > 10 else "")
        raise UserError(f"compare(pairs=...): {shown}. Use the model's neuron ids and the stimulus set's ids")
    if not out:
        raise UserError("compare(pairs=...): no pairs given")
    return out


@on_one_thread
def compare(
    model: EncodingModel,
    stimuli: StimulusSet | str | Path,
    *,
    images: str | Path | None = None,
    category_column: str | None = None,
    neurons: Sequence[str | int] | None = None,
    methods: Sequence[ComponentLike] = ("parallel_backprop", "saliency", "integrated_gradients"),
    metrics: Sequence[ComponentLike] = ("gini", "deletion", "insertion"),
    matcher: ComponentLike = "cosine",
    responses: Responses | Tensor | str | Path | None = None,
    neuron_parts: Mapping[str, Sequence[str]] | str | Path | None = None,
    pairs: Sequence[tuple[str | int, str, str]] | None = None,
    settings: PairSettings | None = None,
    device: torch.device | str = "cpu",
    registry: Registry | None = None,
    progress: bool = False,
    return_maps: bool = False,
    **setting: Any,
) -> Any:
    """Compare attribution methods on the same neurons, drivers and references; return the tidy table.

    The keywords come in the groups of ``sharedattr run``'s explanation chain
    (:func:`sharedattr.experiment.stages.explain_stage`):

    - *what is explained* (its :class:`~sharedattr.experiment.stages.Subject`): ``model``, a fitted encoding model
      (e.g. :func:`sharedattr.load_model`), images ``[B, C, H, W]`` in [0, 1] → ``[B, N]`` (its ``neuron_ids`` name
      the outputs when present); ``stimuli``, a :class:`~sharedattr.data.StimulusSet`
      (:func:`sharedattr.load_stimuli`), or what :func:`sharedattr.load_stimuli` reads: a manifest CSV, a BrainIO
      stimulus set CSV (with ``images``, its folder or ZIP, and ``category_column``) or a folder per category (masks,
      where the set has them, enable the localisation metrics); ``responses``, the measured responses that rank the
      drivers as ``sharedattr run`` ranks them: :class:`~sharedattr.data.trials.Responses`
      (:func:`sharedattr.load_responses`; matched to the stimuli by stimulus id and to the model's outputs by neuron
      id), a file :func:`sharedattr.load_responses` reads without further arguments, or a tensor ``[S, N]`` aligned
      with the stimuli and the outputs (NaN = not measured: the model's prediction stands in). Without them the
      model's predictions rank the drivers, and a :class:`PredictedDriversWarning` says so once;
      ``neuron_parts`` (``{neuron id: [part, ...]}`` or a JSON file, see :mod:`sharedattr.data.ground_truth`) scores
      localisation against the parts each pair shares (manifest ``mask:<part>`` columns);
    - *which pairs*: ``neurons`` (ids or output indices; default all), or ``pairs``: ``(neuron, driver id, reference
      id)`` triples to explain instead of the selected drivers and their matched references (e.g. pairs whose
      shared parts a benchmark set by construction; each pair's ``similarity`` is then the matcher's for its two
      images);
    - *the components* (:class:`~sharedattr.experiment.stages.Components`): ``methods``, ``metrics`` and
      ``matcher``, registered names or ``{"name": ..., **params}`` dicts;
    - *the settings*: a :class:`~sharedattr.experiment.stages.PairSettings`, or its fields as keywords
      (``preferred_category``, ``drivers_per_neuron``, ``references_per_driver``, ``match_on``, ``on_reference``,
      ``reduce``, ``batch_size``, ``memory_mb``: the budget of one attribution pass, as ``attribution.memory_mb``
      of a config); keywords given with ``settings`` replace its fields;
    - *how it runs*: ``device``, ``registry``, ``progress``, and ``return_maps``.

    Errors a user can cause are one :class:`~sharedattr.runtime.errors.UserError` naming this function's argument
    (e.g. ``compare(category_column=...)``), raised before any compute where the inputs allow.

    Returns a pandas DataFrame, one row per neuron × driver × reference × method × image × metric
    (:data:`COMPARE_COLUMNS`: ``pair``, the pair's index into the maps, then the columns of ``results.csv``); with
    ``return_maps``, a :class:`Comparison` (``table, maps = compare(...)``, the maps
    ``{method: {"driver"|"reference": [P, H, W]}}``, and the pairs' images for :func:`sharedattr.plot.show_pair`).

    Example::

        stimuli = sharedattr.load_stimuli("stimulus_set.csv", images="stimulus_set.zip", category_column="object_name")
        recorded = sharedattr.load_responses("assembly.nc", time_window=(70, 170))
        model = sharedattr.load_model("fits/my-neurons/model")
        table = sharedattr.compare(model, stimuli, responses=recorded, neurons=["n00"], methods=["saliency"])
        table.groupby(["method", "image", "metric"])["value"].mean()
    """
    import pandas as pd

    settings = _settings(settings, setting)
    registry = registry if registry is not None else get_registry()
    components = _components(methods, metrics, matcher, registry)
    if pairs is not None and neurons is not None:
        raise UserError("compare(): pass either neurons=... or pairs=..., not both (the pairs name their neurons)")
    ctx = RunContext(registry, torch.device(device), progress=progress)
    stimuli = stimulus_set(stimuli, images, category_column, "compare")
    subject, measured = _subject(model.to(device).eval(), stimuli, responses, neuron_parts, settings, ctx)
    given = None if pairs is None else _given_pairs(pairs, subject.neuron_ids, subject.stimuli.ids)
    chosen = _neuron_indices(neurons, subject.neuron_ids)
    if given is None:
        _warn_if_predicted(measured, [subject.neuron_ids[n] for n in chosen], chosen)
    explanation = explain_stage(ctx, subject, chosen, settings, components.built(ctx), given=given)
    table = pd.DataFrame(explanation.rows, columns=RESULT_COLUMNS)
    named = [(subject.neuron_ids[p.neuron], stimuli.ids[p.driver], stimuli.ids[p.reference]) for p in explanation.pairs]
    first = {pair: k for k, pair in reversed(list(enumerate(named)))}  # a pair given twice: its first index
    table.insert(0, PAIR_COLUMN, [first[row] for row in zip(table["neuron"], table["driver"], table["reference"])])
    if not return_maps:
        return table
    return Comparison(table, explanation.explained.maps, explanation.images, named)


def _warn_if_predicted(measured: Tensor | None, names: Sequence[str], chosen: Sequence[int]) -> None:
    """One :class:`PredictedDriversWarning` when the model's predictions rank the drivers of any ``chosen`` neuron
    (output indices; ``names`` their ids): no responses were given (``measured`` None), or the given ones ``[S, N]``
    measure none of that neuron's stimuli."""
    if measured is None:
        why = "no measured responses were given (responses=...)"
    else:
        unmeasured = [name for name, n in zip(names, chosen) if torch.isnan(measured[:, n]).all()]
        if not unmeasured:
            return
        why = f"the responses measure no stimulus of neuron(s) {', '.join(unmeasured[:10])}"
    warnings.warn(
        f"sharedattr.compare: {why}, so the model's predictions rank the drivers; `sharedattr run` ranks them by the "
        "measured responses and may pick other drivers. Pass responses=sharedattr.load_responses(...) to match it",
        PredictedDriversWarning,
        stacklevel=4,  # the caller of compare(), past its thread decorator
    )


def _settings(settings: PairSettings | None, keywords: Mapping[str, Any]) -> PairSettings:
    """``settings`` with the keyword fields on top (unknown keywords are refused as Python refuses them), checked."""
    fields = {f.name for f in dataclasses.fields(PairSettings)}
    unknown = sorted(set(keywords) - fields)
    if unknown:
        raise TypeError(f"compare() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    settings = dataclasses.replace(settings or PairSettings(), **keywords)
    if settings.reduce not in ("sum", "abs_sum"):
        raise UserError(f"compare(reduce={settings.reduce!r}): use 'sum' (signed) or 'abs_sum'")
    if not isinstance(settings.memory_mb, int) or settings.memory_mb < 16:
        raise UserError(
            f"compare(memory_mb={settings.memory_mb!r}): give the budget of one attribution pass in MiB (≥ 16)"
        )
    if settings.match_on not in ("dimensions", "channels"):
        raise UserError(f"compare(match_on={settings.match_on!r}): use 'dimensions' or 'channels'")
    return settings


@dataclasses.dataclass(frozen=True)
class _ComponentSpecs:
    """The validated specs of :func:`compare`'s methods, metrics and matcher."""

    methods: list[MethodSpec]
    metrics: list[MetricSpec]
    matcher: MatcherSpec

    def built(self, ctx: RunContext) -> Components:
        return Components(ctx.build(self.matcher), ctx.methods(self.methods), ctx.metrics(self.metrics))


def _components(
    methods: Sequence[ComponentLike], metrics: Sequence[ComponentLike], matcher: ComponentLike, registry: Registry
) -> _ComponentSpecs:
    """Every component spec validated against ``registry`` (each problem named with its argument) before any
    compute."""
    return _ComponentSpecs(
        validated_specs("methods", MethodSpec, methods, registry, f"{SOURCE}(methods=...)"),
        validated_specs("metrics", MetricSpec, metrics, registry, f"{SOURCE}(metrics=...)"),
        validated_specs("matcher", MatcherSpec, [matcher], registry, f"{SOURCE}(matcher=...)")[0],
    )


def _subject(
    model: EncodingModel,
    stimuli: StimulusSet,
    responses: Responses | Tensor | str | Path | None,
    neuron_parts: Mapping[str, Sequence[str]] | str | Path | None,
    settings: PairSettings,
    ctx: RunContext,
) -> tuple[Subject, Tensor | None]:
    """What :func:`compare` explains: the stimuli's latents by ``model``, and what ranks the drivers (``responses``
    where measured, else the model's predictions, as ``sharedattr run`` ranks them); and the measured responses
    ``[S, N]`` aligned with the stimuli and the model's outputs (None when none were given)."""
    batch_size, device = settings.batch_size, ctx.device
    latents, _ = extract_features(
        model.backbone,
        stimuli,
        batch_size=batch_size,
        device=device,
        progress=ctx.progress,
        memory_mb=settings.memory_mb,
    )
    predicted = predict(model.readout, latents, batch_size, device)  # [S, N]
    neuron_ids = model.neuron_ids or [str(n) for n in range(predicted.shape[1])]
    measured = None if responses is None else _measured(responses, stimuli, neuron_ids)
    drive = predicted if measured is None else measured_else_predicted(measured, predicted)
    if isinstance(neuron_parts, (str, Path)):
        neuron_parts = load_neuron_parts(neuron_parts, list(stimuli.part_masks), arguments("compare"))
    return Subject(model, stimuli, latents, drive, neuron_ids, neuron_parts), measured


def _measured(responses: Responses | Tensor | str | Path, stimuli: StimulusSet, neuron_ids: list[str]) -> Tensor:
    """The measured responses ``[S, N]`` in the order of ``stimuli`` (by stimulus id) and of the model's outputs
    ``neuron_ids`` (by neuron id; NaN for an output the recording lacks); a tensor is taken as aligned already."""
    if isinstance(responses, (str, Path)):
        responses = load_responses(responses)
    if not isinstance(responses, Responses):
        values = torch.as_tensor(responses, dtype=torch.float32)
        expected = (len(stimuli), len(neuron_ids))
        if tuple(values.shape) != expected:
            raise UserError(
                f"compare(responses=...): expected [stimuli, neurons] = {expected}, got {tuple(values.shape)}; or pass "
                "sharedattr.load_responses(...), matched to the stimuli and neurons by id"
            )
        return values
    recorded = responses.aligned_to(stimuli)  # [S, N recorded]
    column = {n: i for i, n in enumerate(responses.neuron_ids)}
    if not any(n in column for n in neuron_ids):
        shown = ", ".join(responses.neuron_ids[:10]) + (" …" if len(responses.neuron_ids) > 10 else "")
        raise UserError(
            f"compare(responses=...): none of the model's neurons ({', '.join(neuron_ids[:10])}"
            f"{' …' if len(neuron_ids) > 10 else ''}) is in the responses ({responses.source}: {shown}); give the "
            "responses the model was fitted to"
        )
    out = torch.full((len(stimuli), len(neuron_ids)), float("nan"))
    for n, name in enumerate(neuron_ids):
        if name in column:
            out[:, n] = recorded[:, column[name]]
    return out
