"""What the report reads about a run's methods and metrics (sharedattr.report.components), and how the verdict
uses it: pairwise methods and metric families come from what the components declare, never from their names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sharedattr.plugins.loading import get_registry
from sharedattr.report.components import (
    Components,
    MethodInfo,
    MetricInfo,
    from_json,
    from_registry,
    load,
    spec_labels,
)
from sharedattr.report.reading import Score, read_summary

PLUGIN = {"name": "my_mass", "plugin": "my_plugin.metrics", "distribution": "my-plugin", "version": "1.2"}


def S(method: str, mean: float, metric: str = "m", higher: bool = True) -> Score:
    return Score(method, "driver", metric, mean, 0.1, 5, higher)


def test_components_json_is_read_as_declared():
    c = from_json(
        {
            "methods": {
                "pair_plugin": {"spec": {"name": "pair_plugin"}, "pairwise": True, "plugin": PLUGIN},
                "saliency": {"spec": {"name": "saliency"}, "pairwise": False, "plugin": {}},
                "broken": {"spec": {}},
            },
            "metrics": {
                "my_mass": {"family": "localisation", "higher_is_better": True, "plugin": PLUGIN},
                "entropy": {"family": "complexity", "higher_is_better": False},
                "odd": {"family": "vibes", "higher_is_better": True},
            },
        }
    )
    assert c.is_pairwise("pair_plugin") and not c.is_pairwise("saliency") and not c.is_pairwise("unknown")
    assert c.family("my_mass") == "localisation" and c.family("entropy") == "complexity"
    assert c.family("odd") == c.family("unknown") == "other"
    assert c.metrics["entropy"].higher_is_better is False
    assert c.methods["pair_plugin"].plugin == "my_plugin.metrics (my-plugin 1.2)"
    assert c.unresolved == (
        "method broken (no pairwise flag in components.json)",
        "metric odd (no valid family in components.json)",
    )
    (note,) = c.notes()
    assert note.startswith("Could not resolve method broken (no pairwise flag in components.json), metric odd")
    assert "run the same config into the same folder again (it reuses every finished item)" in note


def test_labels_nothing_declares_are_noted():
    c = Components(methods={"a": MethodInfo(False)}, metrics={"m": MetricInfo("other")})
    assert c.notes(["a"], ["m"]) == []
    (note,) = c.notes(["a", "b"], ["m", "x"])
    assert "method b (not declared), metric x (not declared)" in note


def test_spec_labels_number_repeats_like_the_run():
    specs = [{"name": "saliency"}, "gini", {"name": "saliency", "abs": False}, {"name": "saliency"}]
    assert [label for label, _ in spec_labels(specs)] == ["saliency", "gini", "saliency#2", "saliency#3"]
    assert spec_labels(specs)[1][1] == {"name": "gini"}


def test_the_registry_resolves_built_in_specs():
    registry = get_registry()
    c = from_registry(
        [{"name": "parallel_backprop"}, {"name": "saliency"}, {"name": "parallel_backprop"}],
        [{"name": "pointing_game"}, {"name": "deletion", "steps": 4}, {"name": "gini"}, {"name": "randomisation"}],
        registry,
    )
    assert c.is_pairwise("parallel_backprop") and c.is_pairwise("parallel_backprop#2")
    assert not c.is_pairwise("saliency")
    assert [c.family(m) for m in ("pointing_game", "deletion", "gini", "randomisation")] == [
        "localisation",
        "faithfulness",
        "complexity",
        "sanity",
    ]
    assert c.metrics["deletion"].higher_is_better is False and c.metrics["pointing_game"].higher_is_better is True
    assert c.unresolved == () and c.notes()[0].startswith("This run folder has no components.json")


@dataclass
class FakeComponent:
    factory: Any
    provenance_: dict

    def provenance(self) -> dict:
        return self.provenance_


class FakeRegistry:
    """Only what :func:`from_registry` asks of a registry: ``get`` and ``build``."""

    class Pairwise:
        pairwise = True

    class Metric:
        family = "localisation"
        higher_is_better = True

    class BadFamily:
        family = "vibes"
        higher_is_better = True

    components: ClassVar[dict] = {
        ("method", "pairs"): Pairwise,
        ("method", "function"): lambda model: None,
        ("metric", "my_mass"): Metric,
        ("metric", "bad_family"): BadFamily,
    }

    def get(self, kind: str, name: str) -> FakeComponent:
        if (kind, name) not in self.components:
            raise KeyError(f"unknown {kind} {name!r}")
        return FakeComponent(self.components[kind, name], PLUGIN)

    def build(self, kind: str, name: str, **params: Any) -> Any:
        return self.get(kind, name).factory(**params)


def test_unresolvable_components_count_as_other_and_not_pairwise():
    c = from_registry(
        [{"name": "pairs"}, {"name": "function"}, {"name": "gone"}],
        [{"name": "my_mass"}, {"name": "bad_family"}, {"name": "my_mass", "k": 1}],
        FakeRegistry(),
    )
    assert c.is_pairwise("pairs") and not c.is_pairwise("function") and not c.is_pairwise("gone")
    assert c.family("my_mass") == "localisation" and c.family("bad_family") == "other"
    assert c.family("my_mass#2") == "other", "params the metric does not take"
    assert [u.split(" (")[0] for u in c.unresolved] == [
        "method function",
        "method gone",
        "metric bad_family",
        "metric my_mass#2",
    ]
    assert "its factory is not a class" in c.unresolved[0] and "unknown method 'gone'" in c.unresolved[1]
    fallback, missing = c.notes()
    assert "read from the installed plugins, by the names in spec.json" in fallback
    assert "such metrics as family “other”" in missing and "To refresh, run the same config" in missing


def test_load_prefers_components_json_and_falls_back_on_a_damaged_one(tmp_path: Path):
    spec = {"methods": [{"name": "parallel_backprop"}], "metrics": [{"name": "gini"}]}
    path = tmp_path / "components.json"
    path.write_text(
        json.dumps(
            {"methods": {"parallel_backprop": {"pairwise": False}}, "metrics": {"gini": {"family": "localisation"}}}
        )
    )
    declared = load(path, spec)
    assert not declared.is_pairwise("parallel_backprop") and declared.family("gini") == "localisation"
    assert declared.notes() == [], "what components.json declares wins over the registry"
    path.write_text("{not json")
    damaged = load(path, spec)
    assert damaged.is_pairwise("parallel_backprop") and damaged.family("gini") == "complexity"
    assert damaged.notes()[0].startswith("components.json is unreadable (")
    path.unlink()
    assert load(path, spec).notes()[0].startswith("This run folder has no components.json")


def test_plugin_metrics_enter_the_verdict_by_their_declared_family():
    declared = Components(
        metrics={
            "my_mass": MetricInfo("localisation"),
            "entropy": MetricInfo("complexity"),
            "my_other": MetricInfo("other"),
            "deletion": MetricInfo("faithfulness"),
        }
    )
    scores = [
        S("a", 0.9, "my_mass"),
        S("b", 0.1, "my_mass"),
        S("a", 0.1, "entropy"),
        S("b", 0.9, "entropy"),
        S("a", 0.0, "my_other"),
        S("b", 1.0, "my_other"),
        S("a", 0.3, "deletion", higher=False),
        S("b", 0.1, "deletion", higher=False),
    ]
    localisation, faithfulness, _ = read_summary(scores, declared).headline
    assert localisation.startswith("Localisation: a wins (mean rank 1.0 among 2 methods over my_mass on driver maps")
    assert faithfulness.startswith("Faithfulness: b wins (mean rank 1.0 among 2 methods over deletion on driver")
    assert "entropy" not in localisation + faithfulness and "my_other" not in localisation + faithfulness
    undeclared = read_summary(scores).headline[0]
    assert undeclared == "Localisation: no localisation metric compared two or more methods in this run.", (
        "nothing decided by name: pointing at no family without a declaration"
    )


@pytest.mark.parametrize("label", ["parallel_backprop", "pair_plugin", "parallel_backprop#2"])
def test_pairwise_is_the_declaration_not_the_name(label: str):
    scores = [S(label, 0.9), S("saliency", 0.5), S("parallel_backprop_like", 0.7)]
    declared = Components(
        methods={label: MethodInfo(True), "saliency": MethodInfo(False), "parallel_backprop_like": MethodInfo(False)}
    )
    reading = read_summary(scores, declared)
    assert [p.method for p in reading.pairwise] == [label]
    assert reading.pairwise[0].comparisons[0].baseline.method == "parallel_backprop_like"
