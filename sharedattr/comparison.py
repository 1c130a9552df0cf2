"""``sharedattr.compare``: the method comparison of ``sharedattr run`` as one Python call on a fitted model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .data import StimulusSet
from .data.ground_truth import load_neuron_parts, pair_parts
from .errors import SpecError, UserError
from .explain import ExplainSettings, PairImages, explain_pairs, tidy_rows
from .features import extract_features
from .fitting import predict
from .matching import match_pairs, preferred_categories
from .models.encoding import EncodingModel
from .registry import Registry, get_registry
from .specs import MatcherSpec, MethodSpec, MetricSpec

ComponentLike = str | Mapping[str, Any]


def _specs(kind: str, spec_cls: type, values: Sequence[ComponentLike], registry: Registry) -> list[Any]:
    """Validate ``values`` (names or ``{name, **params}``) against the registry; every problem at once."""
    specs, issues = [], []
    for i, value in enumerate(values):
        spec = spec_cls.model_validate(value)
        try:
            spec.validated_params(registry, loc=f"{kind}[{i}]")
        except SpecError as err:
            issues.extend(err.issues)
        specs.append(spec)
    if issues:
        raise SpecError(issues, f"sharedattr.compare({kind}=...)")
    return specs


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
        raise UserError(f"compare(neurons=...): unknown neuron(s) {unknown}; the model has {neuron_ids[:20]}"
                        f"{' …' if len(neuron_ids) > 20 else ''} (ids or indices 0..{len(neuron_ids) - 1})")
    return out


def compare(model: EncodingModel, stimuli: StimulusSet | str | Path, *, neurons: Sequence[str | int] | None = None,
            methods: Sequence[ComponentLike] = ("parallel_backprop", "saliency", "integrated_gradients"),
            metrics: Sequence[ComponentLike] = ("gini", "deletion", "insertion"),
            matcher: ComponentLike = "cosine", responses: Tensor | None = None,
            preferred_category: str | None = None, drivers_per_neuron: int = 2, references_per_driver: int = 1,
            on_reference: bool = True, reduce: str = "sum", batch_size: int = 32,
            device: torch.device | str = "cpu", registry: Registry | None = None, progress: bool = False,
            return_maps: bool = False, neuron_parts: Mapping[str, Sequence[str]] | str | Path | None = None) -> Any:
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

    Returns a pandas DataFrame, one row per neuron × driver × reference × method × image ×
    metric (and, with ``return_maps``, the maps ``{method: {"driver"|"reference": [P, H, W]}}`` too).
    """
    import pandas as pd

    from .pipeline import RESULT_COLUMNS

    registry = registry or get_registry()
    if reduce not in ("sum", "abs_sum"):
        raise UserError(f"compare(reduce={reduce!r}): use 'sum' (signed) or 'abs_sum'")
    method_specs = _specs("methods", MethodSpec, methods, registry)
    metric_specs = _specs("metrics", MetricSpec, metrics, registry)
    (matcher_spec,) = _specs("matcher", MatcherSpec, [matcher], registry)
    stimuli = stimuli if isinstance(stimuli, StimulusSet) else StimulusSet.load(Path(stimuli))
    model = model.to(device).eval()
    latents, _ = extract_features(model.backbone, stimuli, batch_size=batch_size, device=device, progress=progress)
    predicted = predict(model.readout, latents, batch_size, device)  # [S, N]
    neuron_ids = [str(n) for n in getattr(model, "neuron_ids", None) or range(predicted.shape[1])]
    drive = predicted
    if responses is not None:
        responses = torch.as_tensor(responses, dtype=torch.float32)
        if tuple(responses.shape) != tuple(predicted.shape):
            raise UserError(f"compare(responses=...): expected [stimuli, neurons] = {tuple(predicted.shape)}, "
                            f"got {tuple(responses.shape)}")
        drive = torch.where(torch.isnan(responses), predicted, responses)
    selected = _neuron_indices(neurons, neuron_ids)
    categories = list(stimuli.categories)
    preferred = preferred_categories(categories, drive, selected, preferred_category)
    pairs = match_pairs(model.readout, latents, matcher_spec.build(registry=registry), categories, drive, selected,
                        preferred, drivers_per_neuron=drivers_per_neuron,
                        references_per_driver=references_per_driver, batch_size=batch_size, device=device)
    size, channels = model.input_size, model.in_channels
    if isinstance(neuron_parts, (str, Path)):
        neuron_parts = load_neuron_parts(neuron_parts, list(stimuli.part_masks))
    shared = None if neuron_parts is None else pair_parts(stimuli, neuron_parts, neuron_ids, pairs)
    images = PairImages.load(stimuli, pairs, size, channels, shared)
    settings = ExplainSettings(on_reference, reduce, batch_size, device)
    explained = explain_pairs(model, pairs, images, method_specs, metric_specs, settings, registry=registry,
                              progress=progress)
    table = pd.DataFrame(tidy_rows(pairs, explained, neuron_ids, stimuli.ids, categories), columns=RESULT_COLUMNS)
    return (table, explained.maps) if return_maps else table

