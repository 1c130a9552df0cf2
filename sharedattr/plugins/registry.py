"""The component registry: every registered component, by kind and name, with the plugin it came from.

A :class:`Registry` is filled by :func:`sharedattr.plugins.loading.load_registry` through the
pluggy hooks of :mod:`sharedattr.plugins.hookspecs`, for built-in and third-party plugins
alike. Each :class:`Component` keeps its factory, its params model (validated with
``extra="forbid"``), a one-line description and its provenance: the plugin, and the
distribution and version that installed it (recorded in saved models, so that a missing
plugin can be named).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from sharedattr.plugins import hookspecs
from sharedattr.plugins.params import Configurable, NoParams, issues_from_validation
from sharedattr.plugins.specs import REGISTRY_KEY, ComponentSpec
from sharedattr.runtime.errors import (
    DuplicateComponentError,
    PluginDefinitionError,
    SpecError,
    UnknownComponentError,
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Component:
    """A registered component: what a spec ``{name: ..., **params}`` resolves to.

    ``source`` is the plugin's name (a built-in module, or an installed distribution);
    ``distribution`` and ``version`` the installed package that provides it, when known.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    source: str
    distribution: str | None = None
    version: str | None = None

    def validate_params(self, params: Mapping[str, Any], loc: str = "", context: Mapping | None = None) -> BaseModel:
        """Validate ``params`` against this component's model; raise :class:`SpecError` with field paths.

        ``context`` is pydantic's validation context (e.g. the config's folder for relative paths).
        """
        try:
            return self.params.model_validate(dict(params), context=dict(context or {}))
        except ValidationError as err:
            raise SpecError(issues_from_validation(err, prefix=loc)) from None

    def build(self, *args: Any, registry: Registry | None = None, **params: Any) -> Any:
        """Validate ``params`` and call the factory: ``factory(*args, **validated_params)`` (see
        :meth:`build_validated`)."""
        context = None if registry is None else {REGISTRY_KEY: registry}
        return self.build_validated(self.validate_params(params, context=context), *args, registry=registry)

    def build_validated(self, params: BaseModel, *args: Any, registry: Registry | None = None) -> Any:
        """Call the factory with params already validated by :meth:`validate_params`.

        A :class:`~sharedattr.plugins.params.Configurable` class gets the validated model itself
        (``factory(*args, params=model)``); any other factory gets its fields as keyword arguments. With
        ``registry``, a param that names another component (a :class:`ComponentSpec`, e.g. a synthesizer's
        ``energy``) reaches the factory built, from that registry (as a keyword argument of that name).
        """
        kwargs = params_as_kwargs(params)
        built = {
            k: v.build(registry) for k, v in kwargs.items() if registry is not None and isinstance(v, ComponentSpec)
        }
        if isinstance(self.factory, type) and issubclass(self.factory, Configurable):
            return self.factory(*args, params=params, **built)  # its defaults and constraints live in its model
        return self.factory(*args, **{**kwargs, **built})  # a plugin's factory: keyword arguments

    def provenance(self) -> dict[str, str | None]:
        """``{"name", "plugin", "distribution", "version"}``: where this component comes from (saved with models)."""
        return {"name": self.name, "plugin": self.source, "distribution": self.distribution, "version": self.version}


def params_as_kwargs(params: BaseModel) -> dict[str, Any]:
    """A validated params model as factory keyword arguments (nested models kept as models)."""
    return {name: getattr(params, name) for name in type(params).model_fields}


@dataclass
class Registry:
    """All registered components, by kind and name, and what happened to every plugin.

    ``plugins``: the plugins that loaded; ``failed_plugins``: the ones that did not, and why
    (one line each; ``failed_tracebacks`` has the full traceback); ``entry_points``: every
    installed entry point considered; ``not_loaded``: installed plugins left out by
    ``SHAREDATTR_LOAD_PLUGINS`` or ``SHAREDATTR_BLOCK_PLUGINS`` (label → the variable);
    ``clashes``: names registered by more than one plugin (only when loaded with
    ``on_clash="record"``, as ``sharedattr plugins`` does; otherwise a clash raises).
    """

    components_by_kind: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in hookspecs.KINDS}
    )
    plugins: list[str] = field(default_factory=list)
    failed_plugins: dict[str, str] = field(default_factory=dict)
    failed_tracebacks: dict[str, str] = field(default_factory=dict)
    entry_points: dict[str, str] = field(default_factory=dict)
    not_loaded: dict[str, str] = field(default_factory=dict)
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    # -- registration -------------------------------------------------------------------
    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        params: type[BaseModel] | None = None,
        description: str = "",
        source: str = "<python>",
        distribution: str | None = None,
        version: str | None = None,
    ) -> Component:
        """Register one component. Raises :class:`DuplicateComponentError` on a name clash."""
        if kind not in self.components_by_kind:
            raise PluginDefinitionError(f"plugin {source!r}: unknown component kind {kind!r}")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise PluginDefinitionError(
                f"plugin {source!r}: {kind} name {name!r} must be lower case, start with a letter "
                "and contain only letters, digits, '_', '-' and '.'"
            )
        if not callable(factory):
            raise PluginDefinitionError(f"plugin {source!r}: factory of {kind} {name!r} is not callable")
        if params is None and isinstance(factory, type) and issubclass(factory, Configurable):
            params = factory.params_model  # a Configurable class (a plugin's subclass of a built-in, say) carries it
        params = _checked_params_model(params, kind, name, source)
        existing = self.components_by_kind[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(kind, name, existing.source, source)
        component = Component(kind, name, factory, params, " ".join(description.split()), source, distribution, version)
        self.components_by_kind[kind][name] = component
        return component

    # -- lookup -------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; raises :class:`UnknownComponentError` with suggestions."""
        try:
            return self.components_by_kind[kind][name]
        except KeyError:
            if kind not in self.components_by_kind:
                raise UnknownComponentError("component kind", kind, list(self.components_by_kind)) from None
            raise UnknownComponentError(
                kind, name, list(self.components_by_kind[kind]), not_loaded=self.not_loaded
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components_by_kind[kind])

    def components(self, kind: str) -> list[Component]:
        return [self.components_by_kind[kind][n] for n in self.names(kind)]

    def build(self, kind: str, name: str, *args: Any, **params: Any) -> Any:
        """Build component ``name`` of ``kind`` from raw params: ``factory(*args, **validated)``; components its
        params name arrive built from this registry."""
        return self.get(kind, name).build(*args, registry=self, **params)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable listing: kinds → components (name, description, source, params schema)."""
        return {
            "plugins": list(self.plugins),
            "failed_plugins": dict(self.failed_plugins),
            "entry_points": dict(self.entry_points),
            "not_loaded": dict(self.not_loaded),
            "clashes": [
                {"kind": kind, "name": name, "plugins": sources} for (kind, name), sources in self.clashes.items()
            ],
            "components": {
                kind: [
                    {
                        "name": c.name,
                        "description": c.description,
                        "plugin": c.source,
                        "distribution": c.distribution,
                        "version": c.version,
                        "params": c.params.model_json_schema(),
                    }
                    for c in self.components(kind)
                ]
                for kind in self.components_by_kind
            },
        }


def _checked_params_model(params: Any, kind: str, name: str, source: str) -> type[BaseModel]:
    if params is None:
        return NoParams
    if not (inspect.isclass(params) and issubclass(params, BaseModel)):
        raise PluginDefinitionError(f"plugin {source!r}: params of {kind} {name!r} must be a pydantic BaseModel class")
    # 'name' selects the component; a spec's attributes (params, build, pydantic's own ...) would be shadowed
    reserved = sorted(f for f in params.model_fields if f == "name" or hasattr(ComponentSpec, f))
    if reserved:
        raise PluginDefinitionError(
            f"plugin {source!r}: params of {kind} {name!r} may not have field(s) {', '.join(map(repr, reserved))}: "
            "'name' selects the component in a spec, and the others are attributes of a component spec"
        )
    if params.model_config.get("extra") != "forbid" or params.model_config.get("allow_inf_nan", True):
        # Unknown keys in a config must be errors, never silently dropped; inf and NaN are never valid settings.
        params = type(
            params.__name__,
            (params,),
            {"model_config": {**params.model_config, "extra": "forbid", "allow_inf_nan": False}},
        )
    return params
