"""JSON Schema export of the experiment spec, with every registered component's params.

A discriminated union cannot stay open to third-party plugins (its members are fixed when
the class is defined), so the union of each kind is built here, from what is registered
at export time.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from sharedattr.config.spec import ExperimentSpec
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Component, Registry
from sharedattr.plugins.specs import ComponentSpec


def component_spec_model(component: Component, registry: Registry | None = None) -> type[BaseModel]:
    """The spec model of one component: its params plus ``name: Literal[<name>]``.

    A param that names another component (e.g. a synthesizer's ``energy``) becomes the union
    of that kind's registered components, so the schema lists their params too.
    """
    nested: dict[str, Any] = {}
    if registry is not None:
        for field_name, info in component.params.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, ComponentSpec) and annotation.kind:
                nested[field_name] = (
                    _kind_union(annotation.kind, registry),
                    Field(
                        default=_dump_default(info.get_default(call_default_factory=True)), description=info.description
                    ),
                )
    return create_model(
        f"{component.kind}:{component.name}",
        __base__=component.params,
        __doc__=component.description or None,
        name=(Literal[component.name], Field(description=f"{component.kind} from plugin {component.source}")),
        **nested,
    )


def _kind_union(kind: str, registry: Registry) -> Any:
    components = registry.components(kind)
    if not components:
        return ComponentSpec
    members: list[Any] = [component_spec_model(c, registry) for c in components]
    bare = [c.name for c in components if not any(f.is_required() for f in c.params.model_fields.values())]
    if bare:
        members.append(Literal[tuple(bare)])  # a bare name selects a component with all defaults
    return Union[tuple(members)]  # noqa: UP007 - built dynamically


def _substitute(annotation: Any, registry: Registry) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, ComponentSpec) and annotation.kind:
        return _kind_union(annotation.kind, registry)
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return list[_substitute(item, registry)]
    return annotation


def experiment_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of :class:`ExperimentSpec` with each component field a union of the registered ones.

    Example::

        import json

        Path("experiment.schema.json").write_text(json.dumps(sharedattr.experiment_json_schema(), indent=2))
    """
    registry = registry or get_registry()
    fields: dict[str, Any] = {}
    for name, info in ExperimentSpec.model_fields.items():
        new = _substitute(info.annotation, registry)
        if new is info.annotation:
            fields[name] = (info.annotation, info)
        else:
            kwargs: dict[str, Any] = {"description": info.description}
            if info.default_factory is not None:
                default = info.default_factory()
                kwargs["default"] = _dump_default(default)
            elif not info.is_required():
                kwargs["default"] = info.default
            fields[name] = (new, Field(**kwargs))
    model = create_model("Experiment", __base__=ExperimentSpec.__base__, __doc__=ExperimentSpec.__doc__, **fields)
    schema = model.model_json_schema()
    schema["properties"] = {
        "$schema": {"type": "string", "description": "Ignored; lets editors find this schema."},
        **schema["properties"],
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sharedattr experiment"
    return schema


def _dump_default(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump_default(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
