"""``sharedattr.compare``: the method comparison of ``sharedattr run`` as one Python call on a fitted model.

It runs the same explanation chain as ``sharedattr run``
(:func:`sharedattr.experiment.stages.explain_stage`) on a model you already have, and returns the
tidy table as a pandas DataFrame; nothing is written to disk.
"""

from __future__ import annotations

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
from sharedattr.experiment.stages import PairSettings, explain_stage
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
    preferred_category: str | None = None,
    drivers_per_neuron: int = 2,
    references_per_driver: int = 1,
    match_on: str = "dimensions",
    on_reference: bool = True,
    reduce: str = "sum",
    batch_size: int = 32,
    memory_mb: int = 2048,
    device: torch.device | str = "cpu",
    registry: Registry | None = None,
    progress: bool = False,
    return_maps: bool = False,
    neuron_parts: Mapping[str, Sequence[str]] | str | Path | None = None,
    pairs: Sequence[tuple[str | int, str, str]] | None = None,
) -> Any:
    """Compare attribution methods on the same neurons, drivers and references; return the tidy table.

    ``model``: a fitted encoding model (e.g. :func:`sharedattr.load_model`), images ``[B, C, H, W]``
    in [0, 1] → ``[B, N]``; its ``neuron_ids`` name the outputs when present. ``stimuli``: a
    :class:`~sharedattr.data.StimulusSet`, a manifest CSV or a folder per category (masks,
    where the set has them, enable the localisation metrics). ``neurons``: ids or output
    indices (default: all). ``responses`` ``[S, N]`` aligned with the stimuli rank the drivers
    (NaN = not measured); without them the model's predictions do. ``methods``, ``metrics``
    and ``matcher`` are registered names or ``{"name": ..., **params}`` dicts. ``neuron_parts``
    (``{neuron id: [part, ...]}`` or a JSON file, see :mod:`sharedattr.data.ground_truth`)
    scores localisation against the parts each pair shares (manifest ``mask:<part>`` columns).
    ``pairs``: ``(neuron, driver id, reference id)`` triples to explain instead of the selected
    drivers and their matched references (e.g. pairs whose shared parts a benchmark set by
    construction); ``neurons``, ``drivers_per_neuron`` and ``references_per_driver`` then do not
    apply, and each pair's ``similarity`` is the matcher's for its two images. ``memory_mb`` bounds one
    attribution pass (as ``attribution.memory_mb`` of a config: path methods run in chunks that fit).

    Returns a pandas DataFrame, one row per neuron × driver × reference × method × image ×
    metric (and, with ``return_maps``, the maps ``{method: {"driver"|"reference": [P, H, W]}}`` too).
    """
    import pandas as pd

    registry = registry if registry is not None else get_registry()
    if reduce not in ("sum", "abs_sum"):
        raise UserError(f"compare(reduce={reduce!r}): use 'sum' (signed) or 'abs_sum'")
    if not isinstance(memory_mb, int) or memory_mb < 16:
        raise UserError(f"compare(memory_mb={memory_mb!r}): give the budget of one attribution pass in MiB (≥ 16)")
    method_specs = validated_specs("methods", MethodSpec, methods, registry, f"{SOURCE}(methods=...)")
    metric_specs = validated_specs("metrics", MetricSpec, metrics, registry, f"{SOURCE}(metrics=...)")
    (matcher_spec,) = validated_specs("matcher", MatcherSpec, [matcher], registry, f"{SOURCE}(matcher=...)")
    ctx = RunContext(registry, torch.device(device), progress=progress)
    stimuli = stimuli if isinstance(stimuli, StimulusSet) else StimulusSet.load(Path(stimuli))
    model = model.to(device).eval()
    latents, _ = extract_features(
        model.backbone, stimuli, batch_size=batch_size, device=device, progress=progress, memory_mb=memory_mb
    )
    predicted = predict(model.readout, latents, batch_size, device)  # [S, N]
    neuron_ids = [str(n) for n in getattr(model, "neuron_ids", None) or range(predicted.shape[1])]
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
    if match_on not in ("dimensions", "channels"):
        raise UserError(f"compare(match_on={match_on!r}): use 'dimensions' or 'channels'")
    given = None
    if pairs is not None:
        if neurons is not None:
            raise UserError("compare(): pass either neurons=... or pairs=..., not both (the pairs name their neurons)")
        given = _given_pairs(pairs, neuron_ids, stimuli.ids)
    settings = PairSettings(
        preferred_category,
        drivers_per_neuron,
        references_per_driver,
        on_reference,
        reduce,
        batch_size,
        match_on,
        memory_mb,
    )
    explanation = explain_stage(
        ctx,
        model,
        stimuli,
        latents,
        drive,
        neuron_ids,
        _neuron_indices(neurons, neuron_ids),
        settings,
        matcher=ctx.build(matcher_spec),
        methods=ctx.methods(method_specs),
        metrics=ctx.metrics(metric_specs),
        neuron_parts=neuron_parts,
        given=given,
    )
    table = pd.DataFrame(explanation.rows, columns=RESULT_COLUMNS)
    return (table, explanation.explained.maps) if return_maps else table
