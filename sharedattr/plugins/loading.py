"""Loading plugins into a :class:`~sharedattr.plugins.registry.Registry` through pluggy.

Built-in components live in the modules of :data:`DEFAULT_PLUGINS` and register through the
same ``register_*`` hooks as third-party plugins, which are discovered through the
``sharedattr`` entry-point group. Two environment variables choose which installed plugins
load (entry-point or distribution names, comma-separated; the built-ins always load):

- ``SHAREDATTR_LOAD_PLUGINS``: load only these (an empty value loads none);
- ``SHAREDATTR_BLOCK_PLUGINS``: load all but these.

A name in either that matches no installed plugin is warned about. ``SHAREDATTR_DEBUG=1``
(or ``sharedattr --debug``) prints the full traceback of every plugin that failed; without
it, the warning names the exception and the file and line that raised it.

A plugin cannot stop or hang the commands: one that calls ``sys.exit`` (or raises any exception) while it is
imported or registers is left out and reported with its name and the reason, and each plugin is imported in a
daemon thread that is waited for at most ``SHAREDATTR_PLUGIN_TIMEOUT`` seconds (default
:data:`DEFAULT_PLUGIN_TIMEOUT`); one that takes longer (blocked on a lock, the network, input) is left out and
reported the same way, and the command goes on. Ctrl-C (``KeyboardInterrupt``) still interrupts.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from sharedattr import __version__
from sharedattr.plugins import hookspecs
from sharedattr.plugins.registry import Component, Registry
from sharedattr.runtime.errors import DuplicateComponentError, closest

ENTRY_POINT_GROUP = "sharedattr"
LOAD_PLUGINS_ENV = "SHAREDATTR_LOAD_PLUGINS"
BLOCK_PLUGINS_ENV = "SHAREDATTR_BLOCK_PLUGINS"
DEBUG_ENV = "SHAREDATTR_DEBUG"
PLUGIN_TIMEOUT_ENV = "SHAREDATTR_PLUGIN_TIMEOUT"
DEFAULT_PLUGIN_TIMEOUT = 60.0
"""Seconds one installed plugin may take to import before it is left out (``$SHAREDATTR_PLUGIN_TIMEOUT`` sets
another): generous for a plugin that imports a large library on a busy machine."""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "sharedattr.encoding.backbones.torchvision_models",
    "sharedattr.encoding.backbones.insilico_cnn",
    "sharedattr.encoding.backbones.stacked_core",
    "sharedattr.encoding.readouts.ridge",
    "sharedattr.encoding.readouts.factorized",
    "sharedattr.encoding.readouts.gaussian",
    "sharedattr.encoding.readouts.attention",
    "sharedattr.selection.matchers",
    "sharedattr.attribution.captum_methods",
    "sharedattr.attribution.parallel_backprop",
    "sharedattr.attribution.colocation",
    "sharedattr.attribution.bilrp",
    "sharedattr.metrics.complexity",
    "sharedattr.metrics.localisation",
    "sharedattr.metrics.faithfulness",
    "sharedattr.metrics.randomisation",
    "sharedattr.metrics.sharing",
    "sharedattr.synthesis.energies",
    "sharedattr.synthesis.gradient_ascent",
    "sharedattr.synthesis.egg",
)
"""The built-in plugins: modules of sharedattr with ``@hookimpl`` functions, registered first."""


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded, or loaded with a problem; every other plugin keeps working."""


def debugging() -> bool:
    """Whether ``SHAREDATTR_DEBUG`` asks for full tracebacks of failed plugins."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _warn(message: str) -> None:
    warnings.warn(message, PluginLoadWarning, stacklevel=3)


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so 'SharedAttr_Timm' and 'sharedattr-timm' name the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names_in(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    return None if value is None else {_normalise(w.strip()) for w in value.split(",") if w.strip()}


def _entry_point_names(ep: importlib.metadata.EntryPoint) -> set[str]:
    return {_normalise(ep.name)} | ({_normalise(ep.dist.name)} if ep.dist is not None else set())


def _label(ep: importlib.metadata.EntryPoint, all_eps: list[importlib.metadata.EntryPoint]) -> str:
    """The plugin's name: its distribution, plus the entry-point name if the distribution has several."""
    dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
    siblings = [e for e in all_eps if e.dist is not None and ep.dist is not None and e.dist.name == ep.dist.name]
    return dist if len(siblings) <= 1 else f"{dist}:{ep.name}"


def _selected_entry_points(registry: Registry) -> list[tuple[str, importlib.metadata.EntryPoint]]:
    """``(label, entry point)`` of the installed plugins the environment variables let through.

    Records the ones they leave out in ``registry.not_loaded`` and warns about names that match
    no installed plugin.
    """
    eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    labelled = [(_label(ep, eps), ep) for ep in eps]
    wanted, blocked = _names_in(LOAD_PLUGINS_ENV), _names_in(BLOCK_PLUGINS_ENV) or set()
    installed = set().union(*(_entry_point_names(ep) for ep in eps)) if eps else set()
    for variable, names in ((LOAD_PLUGINS_ENV, wanted or set()), (BLOCK_PLUGINS_ENV, blocked)):
        for name in sorted(names - installed):
            hint = closest(name, installed)
            _warn(
                f"{variable} names {name!r}, which is no installed sharedattr plugin"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; installed: {', '.join(label for label, _ in labelled) or 'none'}"
            )
    selected = []
    for label, ep in labelled:
        names = _entry_point_names(ep)
        if wanted is not None and not names & wanted:
            registry.not_loaded[label] = LOAD_PLUGINS_ENV
        elif names & blocked:
            registry.not_loaded[label] = BLOCK_PLUGINS_ENV
        else:
            selected.append((label, ep))
    return selected


def _where(err: BaseException) -> str:
    """`` (raised at FILE:LINE in FUNCTION)`` for the innermost frame of ``err``'s traceback, or ''."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (raised at {frame.filename}:{frame.lineno} in {frame.name})"


def plugin_timeout() -> float:
    """Seconds a plugin may take to import: ``$SHAREDATTR_PLUGIN_TIMEOUT`` (a positive number), else
    :data:`DEFAULT_PLUGIN_TIMEOUT` (with a warning when the variable holds something else)."""
    value = os.environ.get(PLUGIN_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_PLUGIN_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        _warn(f"{PLUGIN_TIMEOUT_ENV}={value!r} is not a positive number of seconds; using {DEFAULT_PLUGIN_TIMEOUT:g}")
        return DEFAULT_PLUGIN_TIMEOUT
    return seconds


def _import_plugin(ep: importlib.metadata.EntryPoint, timeout: float) -> tuple[bool, object, BaseException | None]:
    """Load entry point ``ep`` in a daemon thread, waiting at most ``timeout`` seconds: ``(finished, plugin,
    error)``, where ``error`` is whatever the import raised, ``SystemExit`` included.

    A plugin that has not finished is left running in its thread (a daemon: it does not keep the process alive);
    the caller leaves it out. Ctrl-C while waiting interrupts the wait, in the main thread.
    """
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["plugin"] = ep.load()
        except BaseException as err:  # noqa: BLE001 - handed to the caller, which decides what it means
            outcome["error"] = err

    thread = threading.Thread(target=load, name=f"sharedattr-plugin-{ep.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, None, None
    return True, outcome.get("plugin"), outcome.get("error")


def _reason(err: BaseException) -> str:
    """One line saying what a plugin raised, and where."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r}){_where(err)}, which would end every command"
    return f"{type(err).__name__}: {err}{_where(err)}"


def _failed(registry: Registry, label: str, what: str, err: BaseException | None, message: str) -> None:
    """Record that plugin ``label`` failed (one line, plus the traceback) and warn."""
    registry.failed_plugins[label] = message
    if err is not None:
        registry.failed_tracebacks[label] = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    detail = f"\n{registry.failed_tracebacks[label]}" if err is not None and debugging() else ""
    hint = "" if err is None or debugging() else f" (set {DEBUG_ENV}=1 for the full traceback)"
    _warn(f"sharedattr plugin {label} {what}: {message}{hint}{detail}")


def _hook_problems(plugin: object) -> list[str]:
    """One line per malformed hook of ``plugin``: a hook-like name that is no hook, or an argument not called
    ``register``."""
    known = list(hookspecs.KINDS.values())
    problems = []
    for attr in dir(plugin):
        function = getattr(plugin, attr, None)
        if not callable(function) or not hasattr(function, f"{hookspecs.PROJECT_NAME}_impl"):
            continue
        if attr not in known:
            hint = closest(attr, known)
            problems.append(
                f"{attr!r} is not a sharedattr hook"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f" (the hooks: {', '.join(known)})"
            )
            continue
        try:
            args = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):  # no signature to read: leave it to pluggy
            continue
        if args != ["register"]:
            problems.append(f"hook {attr}({', '.join(args)}) must take exactly one argument called 'register'")
    return problems


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str, registry: Registry) -> bool:
    """Register ``plugin`` with pluggy; on a malformed or misspelled hook, warn and drop it."""
    if pm.is_registered(plugin):
        return True  # the same module, e.g. passed explicitly and also found through its entry point
    if pm.get_plugin(name) is not None:
        _failed(registry, name, "was not loaded", None, "another plugin with this name is already loaded")
        return False
    problems = _hook_problems(plugin)
    if problems:
        _failed(registry, name, "was not loaded", None, "; ".join(problems))
        return False
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except (pluggy.PluginValidationError, ValueError) as err:  # what _hook_problems did not foresee
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        _failed(registry, name, "was not loaded", None, " ".join(str(err).split()))
        return False
    return True


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(
    *,
    default_plugins: Iterable[str] = DEFAULT_PLUGINS,
    entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    on_clash: str = "raise",
) -> Registry:
    """Build a registry from the built-in plugins, installed entry points and ``extra_plugins``.

    A plugin that fails to import, has a misspelled hook or raises while registering is
    reported as a :class:`PluginLoadWarning` naming it (and the file and line that raised);
    everything it registered is withdrawn, and all other plugins keep working; a plugin that
    registers nothing is warned about. A name registered by two plugins raises
    :class:`~sharedattr.runtime.errors.DuplicateComponentError`; with ``on_clash="record"`` it
    is recorded in ``registry.clashes`` instead (the first registration is kept, and a warning
    names both), so that ``sharedattr plugins`` can still list everything.

    Example::

        import my_plugin  # a module with @sharedattr.hookimpl register_* functions

        registry = sharedattr.load_registry(extra_plugins=[("my-plugin", my_plugin)])
        table = sharedattr.compare(model, stimuli, methods=["my_method"], registry=registry)
    """
    if on_clash not in ("raise", "record"):
        raise ValueError(f"on_clash must be 'raise' or 'record', got {on_clash!r}")
    registry = Registry()
    pm = make_plugin_manager()
    for module_name in default_plugins:
        module = importlib.import_module(module_name)  # a broken built-in is a bug: let it raise
        pm.register(module, name=module_name)
    pm.check_pending()
    provenance: dict[str, tuple[str | None, str | None]] = {m: ("sharedattr", __version__) for m in default_plugins}
    if entry_points:
        timeout = plugin_timeout()
        for label, ep in _selected_entry_points(registry):
            registry.entry_points[label] = f"{ep.name} = {ep.value}"
            provenance[label] = (ep.dist.name, ep.dist.version) if ep.dist is not None else (None, None)
            finished, plugin, err = _import_plugin(ep, timeout)
            if not finished:
                _failed(
                    registry,
                    label,
                    "was skipped",
                    None,
                    f"did not finish importing within {timeout:g} s ({ep.value}: waiting on a lock, the network or "
                    f"input?); set {PLUGIN_TIMEOUT_ENV} to allow more seconds, or leave it out with "
                    f"{BLOCK_PLUGINS_ENV}",
                )
                continue
            if isinstance(err, KeyboardInterrupt):  # Ctrl-C reaches the main thread; a plugin raising it means stop
                raise err
            if err is not None:  # any exception, and SystemExit: a plugin may not end the command
                _failed(registry, label, "failed to import and was skipped", err, _reason(err))
                continue
            _register_checked(pm, plugin, label, registry)
    for name, plugin in extra_plugins:
        _register_checked(pm, plugin, name, registry)

    for plugin_name, plugin in pm.list_name_plugin():
        _collect(pm, plugin_name, plugin, registry, provenance.get(plugin_name, (None, None)), on_clash)
    return registry


def _collect(
    pm: pluggy.PluginManager,
    plugin_name: str,
    plugin: object,
    registry: Registry,
    provenance: tuple[str | None, str | None],
    on_clash: str,
) -> None:
    """Call each ``register_*`` hook of one plugin; on failure, withdraw all it registered."""
    added: list[Component] = []
    clashed = 0
    try:
        for kind, hook_name in hookspecs.KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(
                    name: str,
                    factory: Callable[..., Any],
                    *,
                    params: Any = None,
                    description: str = "",
                    _kind: str = kind,
                ) -> None:
                    nonlocal clashed
                    try:
                        added.append(
                            registry.add(
                                _kind,
                                name,
                                factory,
                                params=params,
                                description=description,
                                source=plugin_name,
                                distribution=provenance[0],
                                version=provenance[1],
                            )
                        )
                    except DuplicateComponentError as err:
                        if on_clash == "raise":
                            raise
                        registry.clashes.setdefault((_kind, name), [err.sources[0]]).append(plugin_name)
                        clashed += 1
                        _warn(str(err))

                impl.function(**{arg: register for arg in impl.argnames})
    except DuplicateComponentError:
        raise
    except (Exception, SystemExit) as err:  # isolate a faulty plugin (KeyboardInterrupt still interrupts)
        for component in added:
            registry.components_by_kind[component.kind].pop(component.name, None)
        if plugin_name in DEFAULT_PLUGINS:
            raise
        _failed(registry, plugin_name, "failed while registering and was skipped", err, _reason(err))
        return
    if not added and not clashed:
        _warn(
            f"sharedattr plugin {plugin_name} loaded but registered no component: are its hook functions "
            "decorated with @sharedattr.plugin.hookimpl, and do they call register(...)?"
        )
    registry.plugins.append(plugin_name)


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built-ins plus installed plugins), built on first use.

    Example::

        registry = sharedattr.get_registry()
        registry.names("method")                       # ['deconvolution', 'deep_lift', ..., 'parallel_backprop', ...]
        matcher = registry.build("matcher", "cosine")  # any component, by name and params
    """
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry, so the next :func:`get_registry` rediscovers plugins."""
    global _REGISTRY
    _REGISTRY = None
