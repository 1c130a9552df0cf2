"""What a run's methods and metrics declare: which methods are pairwise, what each method's params are and whether
it is a control, each metric's family and direction, and which metrics are pairwise-only.

The report decides nothing by a component's name. A run writes ``components.json`` with what
each method label (``name``, ``name#2`` …) and metric label declares (see
:mod:`sharedattr.plugins.contracts`). A run folder written before that file existed falls back
to the plugin registry: the method and metric specs of ``spec.json`` are resolved there (a
metric built to read its ``family``, ``higher_is_better`` and ``single_image_value``, a method's pairwise flag
and control rule read off its registered class). Whatever cannot be resolved counts as family ``other`` / not
pairwise / no control, and :meth:`Components.notes` says so.

A control controls the other instances of its own component (``controls = "same"``: ``parallel_backprop#2``, with
``variant = "own"``, controls ``parallel_backprop``) or every pairwise method of the run (``"any_pairwise"``: the
co-location control ``colocation``), as its class declares (:func:`~sharedattr.plugins.contracts.control_reach`).
A ``components.json`` written before runs recorded it has no ``controls`` key: each of its controls reads as
``"same"`` (so such a run's ``colocation`` controls no other component; rerun the config to record it).

A method is named with its params wherever the report names it (:meth:`Components.definition`):
``parallel_backprop#2 = parallel_backprop(variant="own")``, the params that differ from their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sharedattr.plugins.contracts import (
    CONTROL_REACHES,
    METRIC_FAMILIES,
    control_of,
    control_reach,
    is_pairwise,
    method_scope,
    metric_family,
    single_image_value,
)
from sharedattr.plugins.params import params_record
from sharedattr.runtime.json_files import read_json

REFRESH = "run the same config into the same folder again (it reuses every finished item)"


@dataclass(frozen=True)
class MethodInfo:
    """A method label: whether it explains a driver and its reference together, its plugin, its component's name,
    every param (``params``), the names of those that differ from their defaults (``changed``), what it is a
    control of (``control``; None: a real method), which methods it controls when it is a control (``controls``:
    ``same``, the other instances of its component; ``any_pairwise``, every pairwise method), how the report names
    it then (``control_noun``) and the scope its benchmarks established (``scope``)."""

    pairwise: bool
    plugin: str = ""
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    changed: tuple[str, ...] = ()
    control: str | None = None
    scope: str | None = None
    controls: str = "same"
    control_noun: str = "control"

    def call(self, which: Sequence[str] | None = None) -> str:
        """``name(k=v, …)`` with the params named in ``which`` (default: those that differ from their defaults),
        values as JSON: ``parallel_backprop(variant="own")``."""
        names = self.changed if which is None else which
        args = ", ".join(f"{k}={_value(self.params[k])}" for k in names if k in self.params)
        return f"{self.name}({args})"


def _value(value: Any) -> str:
    """A param value as the report shows it: JSON (strings in double quotes, lists in brackets)."""
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class MetricInfo:
    """A metric label: its family (one of ``METRIC_FAMILIES``), direction (None: unknown), plugin and the score
    every single-image method gets by construction (``single_image_value``; None for a metric that compares every
    method)."""

    family: str
    higher_is_better: bool | None = None
    plugin: str = ""
    single_image_value: float | None = None

    @property
    def pairwise_only(self) -> bool:
        """Whether the metric ranks pairwise methods only (single-image methods score a constant by construction)."""
        return self.single_image_value is not None


@dataclass(frozen=True)
class Components:
    """The declared methods and metrics of a run, where they were read from, and what could not be resolved."""

    methods: Mapping[str, MethodInfo] = field(default_factory=dict)
    metrics: Mapping[str, MetricInfo] = field(default_factory=dict)
    fallback: str = ""  # why the registry was asked instead of components.json ("" when it was not)
    unresolved: tuple[str, ...] = ()

    def is_pairwise(self, method: str) -> bool:
        """Whether method label ``method`` is declared pairwise (False when unknown)."""
        info = self.methods.get(method)
        return bool(info and info.pairwise)

    def family(self, metric: str) -> str:
        """The declared family of metric label ``metric`` (``other`` when unknown)."""
        info = self.metrics.get(metric)
        return info.family if info else "other"

    def pairwise_only(self, metric: str) -> bool:
        """Whether metric label ``metric`` declares a value every single-image method gets by construction (so it
        compares pairwise methods only); False when unknown."""
        info = self.metrics.get(metric)
        return bool(info and info.pairwise_only)

    def control(self, method: str) -> str | None:
        """What method label ``method`` is a control of (None: a real method, or unknown)."""
        info = self.methods.get(method)
        return info.control if info else None

    def controls_of(self, method: str) -> list[str]:
        """The control labels of method label ``method``, in the run's order: the labels of the same component that
        declare themselves a control, and, for a pairwise method, every control that controls any pairwise method
        (``controls = "any_pairwise"``); none for a control itself, or an unknown label."""
        info = self.methods.get(method)
        if info is None or info.control is not None:
            return []
        return [
            label
            for label, other in self.methods.items()
            if label != method
            and other.control
            and (other.name == info.name or (info.pairwise and other.controls == "any_pairwise"))
        ]

    def control_phrase(self, method: str, control: str) -> str:
        """How the verdict names ``control``, a control of ``method``: ``its own control parallel_backprop#2`` (of
        the same component), ``the co-location control colocation`` (one of every pairwise method, by its declared
        ``control_noun``)."""
        mine, other = self.methods.get(method), self.methods.get(control)
        if other is None or (mine is not None and other.name == mine.name):
            return f"its own control {control}"
        return f"the {other.control_noun} {control}"

    def definition(self, method: str) -> str:
        """How the report names a method: ``label = name(params that differ from their defaults)``, and
        ``(control: …)`` for a control: ``parallel_backprop#2 = parallel_backprop(variant="own") (control: …)``;
        the label alone when nothing is declared."""
        info = self.methods.get(method)
        if info is None or not info.name:
            return method
        text = f"{method} = {info.call()}"
        return f"{text} (control: {info.control})" if info.control else text

    def notes(self, methods: Sequence[str] = (), metrics: Sequence[str] = ()) -> list[str]:
        """What the reader should know: a fallback to the registry, and every label that could not be resolved
        (including those of ``methods``/``metrics``, e.g. from summary.csv, that nothing declares)."""
        out = []
        if self.fallback:
            out.append(
                f"{self.fallback}, so pairwise methods and metric families were read from the installed "
                f"plugins, by the names in spec.json. To write components.json, {REFRESH}."
            )
        missing = [
            *self.unresolved,
            *(f"method {m} (not declared)" for m in methods if m not in self.methods),
            *(f"metric {m} (not declared)" for m in metrics if m not in self.metrics),
        ]
        if missing:
            out.append(
                f"Could not resolve {', '.join(missing)}: such methods count as not pairwise and such "
                f"metrics as family “other” (left out of the sharing, localisation and faithfulness verdict). "
                f"To refresh, {REFRESH}."
            )
        return out


def describe_plugin(plugin: Any) -> str:
    """``module (distribution version)`` from a component's provenance dict; empty when unknown."""
    if not isinstance(plugin, Mapping):
        return ""
    dist = " ".join(str(plugin[k]) for k in ("distribution", "version") if plugin.get(k))
    source = str(plugin.get("plugin") or "")
    return f"{source} ({dist})" if source and dist else source or dist


def spec_labels(specs: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, spec)`` per component spec of ``spec.json``: the name, ``name#2`` … for repeats."""
    counts: dict[str, int] = {}
    out = []
    for s in specs:
        spec = dict(s) if isinstance(s, Mapping) else {"name": str(s)}
        name = str(spec.get("name", "?"))
        counts[name] = counts.get(name, 0) + 1
        out.append((name if counts[name] == 1 else f"{name}#{counts[name]}", spec))
    return out


def from_json(data: Mapping[str, Any]) -> Components:
    """Components from the parsed ``components.json``; an entry without a valid declaration is unresolved."""
    methods, metrics, unresolved = {}, {}, []
    for label, entry in dict(data.get("methods") or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get("pairwise"), bool):
            methods[str(label)] = method_info(entry)
        else:
            unresolved.append(f"method {label} (no pairwise flag in components.json)")
    for label, entry in dict(data.get("metrics") or {}).items():
        family = entry.get("family") if isinstance(entry, Mapping) else None
        if family in METRIC_FAMILIES:
            higher, constant = entry.get("higher_is_better"), entry.get("single_image_value")
            metrics[str(label)] = MetricInfo(
                family,
                higher if isinstance(higher, bool) else None,
                describe_plugin(entry.get("plugin")),
                float(constant) if isinstance(constant, (int, float)) and not isinstance(constant, bool) else None,
            )
        else:
            unresolved.append(f"metric {label} (no valid family in components.json)")
    return Components(methods, metrics, "", tuple(unresolved))


def method_info(entry: Mapping[str, Any]) -> MethodInfo:
    """A method entry of ``components.json`` (its ``pairwise`` flag checked by the caller). Entries of runs before
    params were recorded: the spec's params, all counted as changed; no control."""
    spec = entry.get("spec") if isinstance(entry.get("spec"), Mapping) else {}
    params = entry.get("params")
    if isinstance(params, Mapping):
        changed = [str(k) for k in entry.get("changed") or [] if k in params]
    else:
        params = {k: v for k, v in spec.items() if k != "name"}
        changed = sorted(params)
    control, scope = entry.get("control"), entry.get("scope")
    controls, noun = entry.get("controls"), entry.get("control_noun")
    return MethodInfo(
        entry["pairwise"],
        describe_plugin(entry.get("plugin")),
        str(spec.get("name", "")),
        dict(params),
        tuple(changed),
        control if isinstance(control, str) and control else None,
        scope if isinstance(scope, str) and scope else None,
        controls if controls in CONTROL_REACHES else MethodInfo.controls,
        noun if isinstance(noun, str) and noun.strip() else MethodInfo.control_noun,
    )


def _error(err: Exception) -> str:
    """The first line of an exception's message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def registered_method(component: Any, spec: Mapping[str, Any]) -> MethodInfo:
    """A method label resolved through its registered class: pairwise flag, plugin, scope and what a control of it
    controls (:func:`~sharedattr.plugins.contracts.control_reach`) off the class; params,
    the changed ones and the control rule from the spec's params validated by the component (when they no longer
    validate, or it cannot validate: the spec's params, all counted as changed, and no control)."""
    given = {k: v for k, v in spec.items() if k != "name"}
    cls = component.factory
    try:
        validated = component.validate_params(given)
        params, changed = params_record(validated)
        control = control_of(cls, validated)
        reach = control_reach(cls)
    except Exception:  # noqa: BLE001 - changed params or a registry without validation: the spec as written
        params, changed, control = given, tuple(sorted(given)), None
        reach = (MethodInfo.controls, MethodInfo.control_noun)
    return MethodInfo(
        is_pairwise(cls),
        describe_plugin(component.provenance()),
        str(spec["name"]),
        params,
        changed,
        control,
        method_scope(cls),
        *reach,
    )


def from_registry(
    method_specs: Sequence[Any],
    metric_specs: Sequence[Any],
    registry: Any,
    fallback: str = "This run folder has no components.json",
) -> Components:
    """Components resolved through ``registry`` from the method and metric specs of ``spec.json``."""
    methods, metrics, unresolved = {}, {}, []
    for label, spec in spec_labels(method_specs):
        try:
            component = registry.get("method", spec["name"])
        except Exception as err:  # noqa: BLE001 - an unknown or broken plugin: reported, not fatal
            unresolved.append(f"method {label} ({_error(err)})")
            continue
        if isinstance(component.factory, type):
            methods[label] = registered_method(component, spec)
        else:
            unresolved.append(
                f"method {label} (its factory is not a class: only a built method tells whether it is pairwise)"
            )
    for label, spec in spec_labels(metric_specs):
        params = {k: v for k, v in spec.items() if k != "name"}
        try:
            metric = registry.build("metric", spec["name"], **params)
            metrics[label] = MetricInfo(
                metric_family(metric),
                bool(metric.higher_is_better),
                describe_plugin(registry.get("metric", spec["name"]).provenance()),
                single_image_value(metric),
            )
        except Exception as err:  # noqa: BLE001 - unknown plugin, changed params, a bad family: reported
            unresolved.append(f"metric {label} ({_error(err)})")
    return Components(methods, metrics, fallback, tuple(unresolved))


def load(path: Path, spec: Mapping[str, Any]) -> Components:
    """The run's components: from ``path`` (``components.json``) when readable, else from the registry."""
    fallback = "This run folder has no components.json (it was written before runs wrote one)"
    if path.is_file():
        try:
            data = read_json(path)  # bounded: a damaged or hostile file is unreadable (DamagedJSON), not a crash
            if not isinstance(data, Mapping):
                raise TypeError("not a JSON object")
            return completed(from_json(data), data, spec)
        except (ValueError, TypeError, AttributeError) as err:
            fallback = f"components.json is unreadable ({_error(err)})"
    from sharedattr.plugins.loading import get_registry

    return from_registry(spec.get("methods") or [], spec.get("metrics") or [], get_registry(), fallback)


def completed(components: Components, data: Mapping[str, Any], spec: Mapping[str, Any]) -> Components:
    """``components`` read from a ``components.json`` written before runs recorded every param, controls and
    pairwise-only metrics, completed from the installed plugins (the spec's method and metric specs resolved there):
    each method entry without ``params`` gets its params, changed params, control and scope from its registered
    class, each metric without ``single_image_value`` that value; what the file recorded (pairwise, family,
    direction, plugin) stays. Unchanged when the file records them all."""
    methods_data = dict(data.get("methods") or {})
    metrics_data = dict(data.get("metrics") or {})
    old_methods = [m for m in components.methods if not isinstance(methods_data.get(m, {}).get("params"), Mapping)]
    old_metrics = [m for m in components.metrics if "single_image_value" not in metrics_data.get(m, {})]
    if not old_methods and not old_metrics:
        return components
    from sharedattr.plugins.loading import get_registry

    resolved = from_registry(spec.get("methods") or [], spec.get("metrics") or [], get_registry())
    methods = dict(components.methods)
    for label in old_methods:
        if (info := resolved.methods.get(label)) is not None and info.name == methods[label].name:
            methods[label] = replace(
                methods[label], params=info.params, changed=info.changed, control=info.control, scope=info.scope
            )
    metrics = dict(components.metrics)
    for label in old_metrics:
        if (info := resolved.metrics.get(label)) is not None:
            metrics[label] = replace(metrics[label], single_image_value=info.single_image_value)
    return replace(components, methods=methods, metrics=metrics)
