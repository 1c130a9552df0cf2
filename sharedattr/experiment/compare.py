"""``sharedattr.compare``: the method comparison of ``sharedattr run`` as one Python call on a fitted model.

It runs the same explanation chain as ``sharedattr run``
(:func:`sharedattr.experiment.stages.explain_stage`) on a model you already have, and returns the
tidy table as a pandas DataFrame; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.data import StimulusSet
from sharedattr.data.features import extract_features
from sharedattr.data.ground_truth import load_neuron_parts
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
    neurons: Sequence[str | int] | None = None,
    methods: Sequence[ComponentLike] = ("parallel_backprop", "saliency", "integrated_gradients"),
    metrics: Sequence[ComponentLike] = ("gini", "deletion", "insertion"),
    matcher: ComponentLike = "cosine",
    responses: Tensor | None = None,
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
      the outputs when present); ``stimuli``, a :class:`~sharedattr.data.StimulusSet`, a manifest CSV or a folder
      per category (masks, where the set has them, enable the localisation metrics); ``responses`` ``[S, N]``
      aligned with the stimuli rank the drivers (NaN = not measured; without them the model's predictions do);
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

    Returns a pandas DataFrame, one row per neuron × driver × reference × method × image × metric (and, with
    ``return_maps``, the maps ``{method: {"driver"|"reference": [P, H, W]}}`` too).
    """
    import pandas as pd

    settings = _settings(settings, setting)
    registry = registry if registry is not None else get_registry()
    components = _components(methods, metrics, matcher, registry)
    ctx = RunContext(registry, torch.device(device), progress=progress)
    subject = _subject(model.to(device).eval(), stimuli, responses, neuron_parts, settings, ctx)
    if pairs is not None and neurons is not None:
        raise UserError("compare(): pass either neurons=... or pairs=..., not both (the pairs name their neurons)")
    given = None if pairs is None else _given_pairs(pairs, subject.neuron_ids, subject.stimuli.ids)
    chosen = _neuron_indices(neurons, subject.neuron_ids)
    explanation = explain_stage(ctx, subject, chosen, settings, components.built(ctx), given=given)
    table = pd.DataFrame(explanation.rows, columns=RESULT_COLUMNS)
    return (table, explanation.explained.maps) if return_maps else table


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
    stimuli: StimulusSet | str | Path,
    responses: Tensor | None,
    neuron_parts: Mapping[str, Sequence[str]] | str | Path | None,
    settings: PairSettings,
    ctx: RunContext,
) -> Subject:
    """What :func:`compare` explains: the stimuli's latents by ``model``, and what ranks the drivers (``responses``
    where measured, else the model's predictions)."""
    stimuli = stimuli if isinstance(stimuli, StimulusSet) else StimulusSet.load(Path(stimuli))
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
    drive = predicted
    if responses is not None:
        responses = torch.as_tensor(responses, dtype=torch.float32)
        if tuple(responses.shape) != tuple(predicted.shape):
            raise UserError(
                f"compare(responses=...): expected [stimuli, neurons] = {tuple(predicted.shape)}, "
                f"got {tuple(responses.shape)}"
            )
        drive = measured_else_predicted(responses, predicted)
    if isinstance(neuron_parts, (str, Path)):
        neuron_parts = load_neuron_parts(neuron_parts, list(stimuli.part_masks))
    return Subject(model, stimuli, latents, drive, neuron_ids, neuron_parts)
