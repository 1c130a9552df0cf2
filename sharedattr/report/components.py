"""What a run's methods and metrics declare: which methods are pairwise, each metric's family and direction.

The report decides nothing by a component's name. A run writes ``components.json`` with what
each method label (``name``, ``name#2`` …) and metric label declares (see
:mod:`sharedattr.plugins.contracts`). A run folder written before that file existed falls back
to the plugin registry: the method and metric specs of ``spec.json`` are resolved there (a
metric built to read its ``family`` and ``higher_is_better``, a method's pairwise flag read off
its registered class). Whatever cannot be resolved counts as family ``other`` / not pairwise,
and :meth:`Components.notes` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharedattr.plugins.contracts import METRIC_FAMILIES, is_pairwise, metric_family
from sharedattr.runtime.json_files import read_json

REFRESH = "run the same config into the same folder again (it reuses every finished item)"


@dataclass(frozen=True)
class MethodInfo:
    """A method label: whether it explains a driver and its reference together, and its plugin."""

    pairwise: bool
    plugin: str = ""


@dataclass(frozen=True)
class MetricInfo:
    """A metric label: its family (one of ``METRIC_FAMILIES``), direction (None: unknown) and plugin."""

    family: str
    higher_is_better: bool | None = None
    plugin: str = ""


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
            methods[str(label)] = MethodInfo(entry["pairwise"], describe_plugin(entry.get("plugin")))
        else:
            unresolved.append(f"method {label} (no pairwise flag in components.json)")
    for label, entry in dict(data.get("metrics") or {}).items():
        family = entry.get("family") if isinstance(entry, Mapping) else None
        if family in METRIC_FAMILIES:
            higher = entry.get("higher_is_better")
            metrics[str(label)] = MetricInfo(
                family, higher if isinstance(higher, bool) else None, describe_plugin(entry.get("plugin"))
            )
        else:
            unresolved.append(f"metric {label} (no valid family in components.json)")
    return Components(methods, metrics, "", tuple(unresolved))


def _error(err: Exception) -> str:
    """The first line of an exception's message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
            methods[label] = MethodInfo(is_pairwise(component.factory), describe_plugin(component.provenance()))
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
            return from_json(data)
        except (ValueError, TypeError, AttributeError) as err:
            fallback = f"components.json is unreadable ({_error(err)})"
    from sharedattr.plugins.loading import get_registry

    return from_registry(spec.get("methods") or [], spec.get("metrics") or [], get_registry(), fallback)
