"""Validating an experiment spec: the structure first, then every component's params against the registry.

Both phases report every problem at once, each with its field path; a list entry's path
names its component (``methods[1] (gradient_x_sign).mu``). Nothing named in a config is ever
imported: names only select registered components.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sharedattr.config.spec import ExperimentSpec, Strict
from sharedattr.plugins.contracts import BackboneModule, ReadoutModule, declared
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.params import BASE_DIR_KEY, CHECK_FILES_KEY, issues_from_validation
from sharedattr.plugins.registry import Registry
from sharedattr.plugins.specs import ComponentSpec
from sharedattr.runtime.errors import SpecError, SpecIssue, UnknownComponentError


def validate_experiment(
    data: Mapping[str, Any],
    *,
    registry: Registry | None = None,
    base_dir: Path | None = None,
    check_files: bool = True,
    source: object | None = None,
) -> ExperimentSpec:
    """Validate a raw experiment mapping; return the spec with every component's defaults filled in.

    Raises :class:`SpecError` listing every problem with its field path.

    Example::

        spec = sharedattr.validate_experiment(
            {"name": "mine", "data": {"stimuli": "manifest.csv", "responses": "responses.csv"},
             "backbone": {"name": "insilico_cnn"}, "methods": ["saliency"]}
        )
    """
    registry = registry if registry is not None else get_registry()
    context = {BASE_DIR_KEY: base_dir, CHECK_FILES_KEY: check_files}
    if not isinstance(data, Mapping):
        raise SpecError(
            [SpecIssue("", f"an experiment spec is a table of settings, got {type(data).__name__}")], source
        )
    data = {k: v for k, v in data.items() if k != SCHEMA_KEY}  # editors add "$schema" for completion
    try:
        spec = ExperimentSpec.model_validate(data, context=context)
    except ValidationError as err:
        structural = issues_from_validation(err)
        reported = {i.loc for i in structural}
        # Also check the component specs that are well-formed, so every problem is reported at once.
        extra = [
            i for i in _component_issues(_raw_component_specs(data), registry, context) if _plain(i.loc) not in reported
        ]
        raise SpecError(structural + extra, source) from None
    issues = pair_readout_with_backbone(spec, registry)
    issues += _component_issues(spec.component_specs(), registry, context)
    if issues:
        raise SpecError(issues, source)
    return spec


def pair_readout_with_backbone(spec: ExperimentSpec, registry: Registry) -> list[SpecIssue]:
    """What the backbone's class declares of the readout (:class:`~sharedattr.plugins.contracts.BackboneModule`):
    its ``readout_defaults`` (e.g. the Poisson loss for a trainable core) are given to ``spec.readout`` for the
    params the config leaves out and the readout's params model has, before the defaults are filled in (so the
    spec's digest and a saved model record them); and a trainable backbone needs a readout that trains with it
    (``fit_with_backbone``): an issue at ``readout`` otherwise. Unknown components are left to the component
    check."""
    try:
        backbone = declared(registry.get("backbone", spec.backbone.name).factory, BackboneModule)
        readout = registry.get("readout", spec.readout.name)
    except UnknownComponentError:
        return []
    if backbone.trainable and declared(readout.factory, ReadoutModule).fit_with_backbone is None:
        message = (
            f"the {spec.readout.name} readout cannot train with the trainable backbone {spec.backbone.name!r}; "
            "choose a trained readout (attention, gaussian2d or factorized), or a frozen backbone"
        )
        return [SpecIssue("readout.name", message)]
    given, fields = spec.readout.params, readout.params.model_fields
    for key, value in backbone.readout_defaults.items():
        if key in fields and key not in given:
            setattr(spec.readout, key, value)
    return []


SCHEMA_KEY = "$schema"


def named(loc: str, spec: ComponentSpec) -> str:
    """A list entry's field path with its component's name: ``methods[1]`` → ``methods[1] (gradient_x_sign)``."""
    return f"{loc} ({spec.name})" if loc.endswith("]") else loc


def _plain(loc: str) -> str:
    """A field path without the component names :func:`named` added."""
    return re.sub(r"\] \([^)]*\)", "]", loc)


def _component_issues(
    component_specs: list[tuple[str, ComponentSpec]], registry: Registry, context: Mapping[str, Any]
) -> list[SpecIssue]:
    """Validate each component spec's params; put the canonical params (defaults filled in) back into it."""
    issues: list[SpecIssue] = []
    for loc, component_spec in component_specs:
        try:
            params = component_spec.validated_params(registry, loc=named(loc, component_spec), context=context)
        except SpecError as err:
            issues.extend(err.issues)
            continue
        # Canonical form: defaults filled in, so the digest identifies the run exactly.
        for key, value in params.model_dump(mode="json").items():
            setattr(component_spec, key, value)
    return issues


def _raw_component_specs(data: Mapping[str, Any]) -> list[tuple[str, ComponentSpec]]:
    """The component specs in unvalidated ``data`` that parse as specs (used when the structure has errors)."""
    out: list[tuple[str, ComponentSpec]] = []
    for loc, spec_cls, value in _component_fields(data):
        try:
            out.append((loc, spec_cls.model_validate(value)))
        except ValidationError:
            pass  # already reported by the structural pass
    return out


def _component_fields(data: Mapping[str, Any], model: type[BaseModel] | None = None, prefix: str = ""):
    """``(field path, spec class, raw value)`` of every component spec in raw ``data``, nested ones included."""
    for field_name, info in (model or ExperimentSpec).model_fields.items():
        if not isinstance(data, Mapping) or field_name not in data:
            continue
        loc = f"{prefix}.{field_name}" if prefix else field_name
        value, annotation = data[field_name], info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
            annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
        items = [(loc, annotation, value)]
        if typing.get_origin(annotation) is list and isinstance(value, list):
            (item,) = typing.get_args(annotation)
            items = [(f"{loc}[{i}]", item, v) for i, v in enumerate(value)]
        for item_loc, cls, v in items:
            if isinstance(cls, type) and issubclass(cls, ComponentSpec):
                yield item_loc, cls, v
            elif isinstance(cls, type) and issubclass(cls, Strict):
                yield from _component_fields(v, cls, item_loc)
