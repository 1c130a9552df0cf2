"""The run context: one object that resolves where a run computes and builds its components, once.

``sharedattr run``, ``sharedattr synthesize``, ``sharedattr fit`` and :func:`sharedattr.compare`
each start by making a :class:`RunContext`: the registry, the device (per rank under torchrun),
the ranks, whether to show progress, and every component of the spec validated and built once
(methods are bound to a model on first use, see
:class:`~sharedattr.attribution.engine.NamedMethod`). The stages below it take these built
objects, never a registry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sharedattr.attribution.engine import NamedMethod, NamedMetric
from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import named
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Component, Registry
from sharedattr.plugins.specs import ComponentSpec, MethodSpec, MetricSpec, labels
from sharedattr.runtime.devices import resolve_device
from sharedattr.runtime.distributed import SINGLE, Ranks, rank_device
from sharedattr.runtime.errors import SpecError
from sharedattr.runtime.run_folder import check_out_folder, make_out_folder


@dataclass(frozen=True)
class NamedSynthesizer:
    """A built synthesizer of a run: its label, canonical spec and the synthesizer."""

    label: str
    spec: dict[str, Any]
    synthesizer: Any


class StageTimer:
    """Wall time per stage of a run: :meth:`mark` starts a stage (ending the previous one), with a progress bar."""

    def __init__(self, stages: Sequence[str], progress: bool) -> None:
        self._marks: dict[str, float] = {}
        self._bar = tqdm(total=len(stages), desc="run", disable=not progress, unit="stage")

    def mark(self, name: str) -> None:
        if self._marks:
            self._bar.update()
        self._marks[name] = time.perf_counter()
        self._bar.set_postfix_str(name)

    def durations(self) -> dict[str, float]:
        """Seconds per stage marked so far, the last one ending now; closes the bar."""
        self._bar.update()
        self._bar.close()
        names, times = list(self._marks), [*self._marks.values(), time.perf_counter()]
        return {name: times[i + 1] - times[i] for i, name in enumerate(names)}


def input_paths(spec: ExperimentSpec) -> dict[str, Path]:
    """The files and folders a run of ``spec`` reads, by what they are (``data.stimuli``, ...): its output folder
    may not hold them (:func:`~sharedattr.runtime.run_folder.check_out_folder`)."""
    data = spec.data
    paths = {
        f"data.{field}": getattr(data, field)
        for field in ("stimuli", "images", "responses", "response_ids", "neuron_ids", "neuron_parts", "time_bins")
        if getattr(data, field) is not None
    }
    backbones = [("backbone", spec.backbone)] + [
        (f"evaluators[{i}].backbone", e.backbone) for i, e in enumerate(spec.evaluators) if e.backbone is not None
    ]
    for where, backbone in backbones:
        weights = backbone.params.get("weights_file")
        if isinstance(weights, (str, Path)) and Path(weights).is_absolute():
            paths[f"{where}.weights_file"] = Path(weights)
    return paths


@dataclass
class RunContext:
    """Where and how a run computes, and its components, each validated and built once.

    ``device`` is this rank's device; ``progress`` is already off on ranks other than 0;
    ``timer``, when set, times the stages (:meth:`mark`).
    """

    registry: Registry
    device: torch.device
    ranks: Ranks = SINGLE
    progress: bool = True
    timer: StageTimer | None = None

    def mark(self, stage: str) -> None:
        """A new stage starts (timed when the run has a timer)."""
        if self.timer is not None:
            self.timer.mark(stage)

    @classmethod
    def start(
        cls,
        spec: ExperimentSpec,
        out: Path | None = None,
        *,
        registry: Registry | None = None,
        ranks: Ranks = SINGLE,
        progress: bool = True,
        stages: Sequence[str] = (),
    ) -> RunContext:
        """The context of a run of ``spec``: seeds torch's global generator with ``spec.seed``, makes ``out``
        (when given) and resolves the device for this rank; with ``stages``, times them."""
        if out is not None:
            check_out_folder(out, input_paths(spec))
            make_out_folder(out)
        torch.manual_seed(spec.seed)
        device = rank_device(resolve_device(spec.device), ranks)
        progress = progress and ranks.is_main
        timer = StageTimer(stages, progress) if stages else None
        return cls(registry if registry is not None else get_registry(), device, ranks, progress, timer)

    # -- components ----------------------------------------------------------------------
    def component(self, spec: ComponentSpec) -> Component:
        return spec.component(self.registry)

    def build(self, spec: ComponentSpec) -> Any:
        """The component of ``spec``, validated and built (a stage builds each of its components once)."""
        return spec.build(self.registry)

    def methods(self, specs: Sequence[MethodSpec]) -> list[NamedMethod]:
        """Each method, labelled (``name``, ``name#2`` …), its params validated once; built once per model."""
        out = []
        for label, spec in zip(labels(specs), specs):
            component = self.component(spec)
            params = spec.validated_params(self.registry)
            out.append(
                NamedMethod(
                    label,
                    spec.model_dump(mode="json"),
                    lambda model, c=component, p=params: c.build_validated(p, model, registry=self.registry),
                    component.provenance(),
                )
            )
        return out

    def metrics(self, specs: Sequence[MetricSpec]) -> list[NamedMetric]:
        """Each metric, labelled and built once."""
        return [
            NamedMetric(label, spec.model_dump(mode="json"), self.build(spec), self.component(spec).provenance())
            for label, spec in zip(labels(specs), specs)
        ]

    def synthesizers(self, specs: Sequence[ComponentSpec]) -> list[NamedSynthesizer]:
        """Each synthesizer, labelled and built once."""
        return [
            NamedSynthesizer(label, spec.model_dump(mode="json"), self.build(spec))
            for label, spec in zip(labels(specs), specs)
        ]


def validated_specs(
    kind: str, spec_cls: type[ComponentSpec], values: Sequence[Any], registry: Registry, source: str
) -> list[Any]:
    """Component specs from names or ``{name, **params}`` mappings, their params validated against ``registry``;
    every problem at once, as a :class:`SpecError` against ``source`` (e.g. ``sharedattr.compare(methods=...)``)."""
    specs, issues = [], []
    for i, value in enumerate(values):
        spec = spec_cls.model_validate(value)
        try:
            spec.validated_params(registry, loc=named(f"{kind}[{i}]", spec))
        except SpecError as err:
            issues.extend(err.issues)
        specs.append(spec)
    if issues:
        raise SpecError(issues, source)
    return specs
