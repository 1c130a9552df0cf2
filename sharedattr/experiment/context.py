"""The run context: one object that resolves where a run computes and builds its components, once.

``sharedattr run``, ``sharedattr synthesize`` and ``sharedattr fit`` first take their output folder with
:func:`out_folder` (checked, created, locked); they and :func:`sharedattr.compare` then make a
:class:`RunContext`: the registry, the device (per rank under torchrun), the ranks, whether to show progress,
and every component of the spec validated and built once (methods are bound to a model on first use, see
:class:`~sharedattr.attribution.engine.NamedMethod`). The stages below it take these built objects, never a
registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sharedattr.attribution.engine import NamedMethod, NamedMetric
from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import named
from sharedattr.data.features import default_cache_dir
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Component, Registry
from sharedattr.plugins.specs import ComponentSpec, MethodSpec, MetricSpec, labels
from sharedattr.runtime.devices import resolve_device
from sharedattr.runtime.distributed import SINGLE, Ranks, rank_device
from sharedattr.runtime.errors import SpecError
from sharedattr.runtime.out_folder import held_out_folder
from sharedattr.runtime.run_folder import check_out_folder, make_out_folder
from sharedattr.runtime.timing import StageTimer


@dataclass(frozen=True)
class NamedSynthesizer:
    """A built synthesizer of a run: its label, canonical spec and the synthesizer."""

    label: str
    spec: dict[str, Any]
    synthesizer: Any


def input_paths(spec: ExperimentSpec) -> dict[str, Path]:
    """The files and folders a run of ``spec`` reads, by what they are (``data.stimuli``, ...): its output folder
    may not hold them (:func:`~sharedattr.runtime.run_folder.check_out_folder`)."""
    data = spec.data
    paths = {
        f"data.{field}": getattr(data, field)
        for field in ("stimuli", "images", "responses", "response_ids", "neuron_ids", "neuron_parts", "time_bins")
        if getattr(data, field) is not None
    }
    if spec.model is not None:  # a saved model a run reuses (--model): read only, never written into
        paths["model"] = spec.model
    backbones = [("backbone", spec.backbone)] + [
        (f"evaluators[{i}].backbone", e.backbone) for i, e in enumerate(spec.evaluators) if e.backbone is not None
    ]
    for where, backbone in backbones:
        weights = backbone.params.get("weights_file")
        if isinstance(weights, (str, Path)) and Path(weights).is_absolute():
            paths[f"{where}.weights_file"] = Path(weights)
    return paths


def feature_cache_folder(spec: ExperimentSpec) -> Path | None:
    """Where a run of ``spec`` caches backbone features: ``cache_dir``, else $SHAREDATTR_CACHE, else the user cache;
    None with ``cache = false``."""
    return (spec.cache_dir or default_cache_dir()) if spec.cache else None


def prepare_out_folder(spec: ExperimentSpec, out: str | Path, config: str | Path | None = None) -> Path:
    """Check the output folder ``out`` of a run of ``spec`` and create it; returns it resolved.

    Refused, with one line and before anything is written: an ``out`` that is, contains or lies inside one of the
    run's inputs (:func:`input_paths`, and ``config``, the config file the spec was read from: a config saved as
    ``<out>/spec.json`` would be overwritten by the run), or that is the feature cache folder (other runs write
    there at any time); an ``out`` that cannot be created or written.
    """
    inputs: dict[str, str | Path | None] = dict(input_paths(spec))
    if config is not None:
        inputs["config file"] = config
    check_out_folder(out, inputs, shared={"feature cache folder (cache_dir)": feature_cache_folder(spec)})
    return make_out_folder(out)


def out_folder(
    spec: ExperimentSpec,
    out: str | Path,
    *,
    config: str | Path | None = None,
    ranks: Ranks = SINGLE,
    kind: str = "run",
) -> contextlib.AbstractContextManager[Path]:
    """Hold the output folder of a command that writes one (``run``, ``synthesize``, ``fit``) while the block runs
    (:func:`~sharedattr.runtime.out_folder.held_out_folder`), with the inputs of a run of ``spec``
    (:func:`prepare_out_folder`); yields it resolved."""
    return held_out_folder(prepare_out_folder(spec, out, config), kind, main=ranks.is_main)


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
        """The context of a run of ``spec``: seeds torch's global generator with ``spec.seed``, checks and makes
        ``out`` when given (:func:`prepare_out_folder`; the commands take their folder with :func:`out_folder`
        first) and resolves the device for this rank; with ``stages``, times them."""
        if out is not None:
            prepare_out_folder(spec, out)
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
                    params,
                    component.factory,
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
