"""The component registry, filled through pluggy hooks by built-in and third-party plugins.

Built-in components live in the modules of :data:`DEFAULT_PLUGINS` and register through
the same ``register_*`` hooks as third-party plugins, which are discovered through the
``sharedattr`` entry-point group. Set ``SHAREDATTR_LOAD_PLUGINS`` to a comma-separated list
of entry-point or distribution names to load only those (an empty string loads none):
useful to isolate a misbehaving plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from . import hookspecs
from .errors import (
    DuplicateComponentError,
    PluginDefinitionError,
    SpecError,
    UnknownComponentError,
)
from .params import NoParams, issues_from_validation

ENTRY_POINT_GROUP = "sharedattr"
LOAD_PLUGINS_ENV = "SHAREDATTR_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "sharedattr.models.backbones",
    "sharedattr.models.insilico_cnn",
    "sharedattr.models.readouts",
    "sharedattr.models.sgd_readouts",
    "sharedattr.methods.matchers",
    "sharedattr.methods.captum_methods",
    "sharedattr.methods.parallel_backprop",
    "sharedattr.metrics.builtin",
    "sharedattr.metrics.localisation",
    "sharedattr.metrics.faithfulness",
    "sharedattr.metrics.randomisation",
    "sharedattr.synthesis.energies",
    "sharedattr.synthesis.gradient_ascent",
    "sharedattr.synthesis.egg",
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; every other plugin keeps working."""


@dataclass(frozen=True)
class Component:
    """A registered component: what a spec ``{name: ..., **params}`` resolves to."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    source: str

    def validate_params(self, params: Mapping[str, Any], loc: str = "", context: Mapping | None = None) -> BaseModel:
        """Validate ``params`` against this component's model; raise :class:`SpecError` with field paths.

        ``context`` is pydantic's validation context (e.g. the config's folder for relative paths).
        """
        try:
            return self.params.model_validate(dict(params), context=dict(context or {}))
        except ValidationError as err:
            raise SpecError(issues_from_validation(err, prefix=loc)) from None

    def build(self, *args: Any, **params: Any) -> Any:
        """Validate ``params`` and call the factory: ``factory(*args, **validated_params)``."""
        validated = self.validate_params(params)
        return self.factory(*args, **params_as_kwargs(validated))


def params_as_kwargs(params: BaseModel) -> dict[str, Any]:
    """A validated params model as factory keyword arguments (nested models kept as models)."""
    return {name: getattr(params, name) for name in type(params).model_fields}


@dataclass
class Registry:
    """All registered components, by kind and name, and the plugins they came from."""

    components_by_kind: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in hookspecs.KINDS}
    )
    plugins: list[str] = field(default_factory=list)
    failed_plugins: dict[str, str] = field(default_factory=dict)
    entry_points: dict[str, str] = field(default_factory=dict)

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
        params = _checked_params_model(params, kind, name, source)
        existing = self.components_by_kind[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(kind, name, existing.source, source)
        component = Component(kind, name, factory, params, " ".join(description.split()), source)
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
            raise UnknownComponentError(kind, name, list(self.components_by_kind[kind])) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components_by_kind[kind])

    def components(self, kind: str) -> list[Component]:
        return [self.components_by_kind[kind][n] for n in self.names(kind)]

    def build(self, kind: str, name: str, *args: Any, **params: Any) -> Any:
        """Build component ``name`` of ``kind`` from raw params: ``factory(*args, **validated)``."""
        return self.get(kind, name).build(*args, **params)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable listing: kinds → components (name, description, source, params schema)."""
        return {
            "plugins": list(self.plugins),
            "failed_plugins": dict(self.failed_plugins),
            "entry_points": dict(self.entry_points),
            "components": {
                kind: [
                    {
                        "name": c.name,
                        "description": c.description,
                        "plugin": c.source,
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
    from .specs import ComponentSpec  # late: specs builds on this module

    reserved = sorted(f for f in params.model_fields if f == "name" or hasattr(ComponentSpec, f))
    if reserved:
        raise PluginDefinitionError(
            f"plugin {source!r}: params of {kind} {name!r} may not have field(s) {', '.join(map(repr, reserved))}: "
            "'name' selects the component in a spec, and the others are attributes of a component spec"
        )
    if params.model_config.get("extra") != "forbid" or params.model_config.get("allow_inf_nan", True):
        # Unknown keys in a config must be errors, never silently dropped; inf and NaN are never valid settings.
        params = type(params.__name__, (params,),
                      {"model_config": {**params.model_config, "extra": "forbid", "allow_inf_nan": False}})
    return params


# -- plugin manager ---------------------------------------------------------------------
def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _warn(message: str) -> None:
    warnings.warn(message, PluginLoadWarning, stacklevel=3)


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so 'SharedAttr_Timm' and 'sharedattr-timm' name the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _selected_entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    if allowed is None:
        return eps
    wanted = {_normalise(w.strip()) for w in allowed.split(",") if w.strip()}
    return [ep for ep in eps
            if _normalise(ep.name) in wanted or (ep.dist is not None and _normalise(ep.dist.name) in wanted)]


def _entry_point_label(ep: importlib.metadata.EntryPoint, all_eps: list[importlib.metadata.EntryPoint]) -> str:
    """The plugin's name: its distribution, plus the entry-point name if the distribution has several."""
    dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
    siblings = [e for e in all_eps if e.dist is not None and ep.dist is not None and e.dist.name == ep.dist.name]
    return dist if len(siblings) <= 1 else f"{dist}:{ep.name}"


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str, registry: Registry) -> bool:
    """Register ``plugin`` with pluggy; on a malformed or misspelled hook, warn and drop it."""
    if pm.is_registered(plugin):
        return True  # the same module, e.g. passed explicitly and also found through its entry point
    if pm.get_plugin(name) is not None:
        registry.failed_plugins[name] = "another plugin with this name is already loaded"
        _warn(f"sharedattr plugin {name} was not loaded: another plugin with this name is already loaded")
        return False
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as err:
        registry.failed_plugins[name] = str(err)
        _warn(f"sharedattr plugin {name} was not loaded: {err}")
        return False
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        pm.unregister(plugin)
        hooks = [h for h in dir(plugin) if h.startswith("register")]
        hint = ", ".join(f"{h!r}" for h in hooks if h not in hookspecs.KINDS.values())
        msg = f"{err}. Known hooks: {', '.join(hookspecs.KINDS.values())}" + (f" (check {hint})" if hint else "")
        registry.failed_plugins[name] = msg
        _warn(f"sharedattr plugin {name} was not loaded: {msg}")
        return False
    return True


def load_registry(
    *,
    default_plugins: Iterable[str] = DEFAULT_PLUGINS,
    entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> Registry:
    """Build a registry from the built-in plugins, installed entry points and ``extra_plugins``.

    A plugin that fails to import, has a misspelled hook or raises while registering is
    reported as a :class:`PluginLoadWarning` naming it; everything it registered is
    withdrawn, and all other plugins keep working. A duplicate name is an error.
    """
    registry = Registry()
    pm = make_plugin_manager()
    for module_name in default_plugins:
        module = importlib.import_module(module_name)  # a broken built-in is a bug: let it raise
        pm.register(module, name=module_name)
    pm.check_pending()
    if entry_points:
        selected = _selected_entry_points()
        for ep in selected:
            label = _entry_point_label(ep, selected)
            registry.entry_points[label] = f"{ep.name} = {ep.value}"
            try:
                plugin = ep.load()
            except Exception as err:  # noqa: BLE001 - any import failure of a third-party plugin
                registry.failed_plugins[label] = f"{type(err).__name__}: {err}"
                _warn(f"sharedattr plugin {label} failed to import and was skipped: {type(err).__name__}: {err}")
                continue
            _register_checked(pm, plugin, label, registry)
    for name, plugin in extra_plugins:
        _register_checked(pm, plugin, name, registry)

    for plugin_name, plugin in pm.list_name_plugin():
        _collect(pm, plugin_name, plugin, registry)
    return registry


def _collect(pm: pluggy.PluginManager, plugin_name: str, plugin: object, registry: Registry) -> None:
    """Call each ``register_*`` hook of one plugin; on failure, withdraw all it registered."""
    added: list[Component] = []
    try:
        for kind, hook_name in hookspecs.KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(name: str, factory: Callable[..., Any], *, params: Any = None, description: str = "",
                             _kind: str = kind) -> None:
                    added.append(registry.add(_kind, name, factory, params=params, description=description,
                                              source=plugin_name))

                impl.function(**{arg: register for arg in impl.argnames})
    except DuplicateComponentError:
        raise
    except Exception as err:  # noqa: BLE001 - isolate a faulty plugin
        for component in added:
            registry.components_by_kind[component.kind].pop(component.name, None)
        if plugin_name in DEFAULT_PLUGINS:
            raise
        registry.failed_plugins[plugin_name] = f"{type(err).__name__}: {err}"
        _warn(f"sharedattr plugin {plugin_name} failed while registering and was skipped: {type(err).__name__}: {err}")
        return
    registry.plugins.append(plugin_name)


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built-ins plus installed plugins), built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry, so the next :func:`get_registry` rediscovers plugins."""
    global _REGISTRY
    _REGISTRY = None
