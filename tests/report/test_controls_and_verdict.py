"""Issue 28: a method is named with its params and marked as a control by what its class declares; a pairwise-only
metric (0 by construction for single-image methods) never makes a pairwise method "tie" single-image ones; the
verdict says what the headline method wins and loses on, with its declared scope, and no overall rank."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from sharedattr.attribution.colocation import Colocation, ColocationParams
from sharedattr.attribution.engine import NamedMethod, NamedMetric
from sharedattr.attribution.parallel_backprop import ParallelBackprop, ParallelBackpropParams
from sharedattr.experiment.tables import summarise_results, write_components
from sharedattr.metrics.sharing import ReferenceSensitivityMetric
from sharedattr.plugins.contracts import (
    AttributionMethod,
    Metric,
    control_of,
    control_reach,
    method_scope,
    single_image_value,
)
from sharedattr.plugins.loading import get_registry
from sharedattr.report.components import Components, MethodInfo, MetricInfo, from_json, from_registry
from sharedattr.report.html import environment
from sharedattr.report.reading import BASELINE, Score, comparisons_on, contests, read_summary, versus_baseline
from sharedattr.report.sections.reading import comparison_row
from sharedattr.report.sections.reading import reading as reading_section
from sharedattr.report.stats import pair_values

OWN = "parallel_backprop without sharing (s = w: the neuron's own map on the same path)"


# -- what the classes declare ---------------------------------------------------------------------------
def test_the_control_is_a_class_level_rule_on_the_params():
    assert control_of(ParallelBackprop, ParallelBackpropParams(variant="own")) == OWN
    for variant in ("product", "positive", "min", "mask"):
        assert control_of(ParallelBackprop, ParallelBackpropParams(variant=variant)) is None
    assert control_of(AttributionMethod, None) is None, "the default: no control"

    class Plain:  # a plugin's method that subclasses nothing declares nothing
        pairwise = True

    assert control_of(Plain, None) is None and method_scope(Plain) is None

    class Broken:
        @classmethod
        def control_of(cls, params: Any) -> Any:
            return 3

    with pytest.raises(TypeError, match="control_of returned 3"):
        control_of(Broken, None)
    scope = method_scope(ParallelBackprop)  # the README's claim, as narrow as the evidence (docs/benchmarks.md)
    assert "more than its own control" in scope and "no variant beats every single-image baseline" in scope


def test_pairwise_only_metrics_declare_their_single_image_value():
    assert single_image_value(ReferenceSensitivityMetric) == 0.0
    assert single_image_value(Metric) is None
    registry = get_registry()
    for name in ("shared_part_selectivity", "deletion", "pointing_game", "gini"):
        assert single_image_value(registry.get("metric", name).factory) is None, name

    class Bad(Metric):
        higher_is_better: ClassVar[bool] = True
        single_image_value: ClassVar[Any] = "zero"

    with pytest.raises(TypeError, match="single_image_value"):
        single_image_value(Bad)


# -- components.json: params, changed params, control, scope ------------------------------------------------
def named(label: str, **params: Any) -> NamedMethod:
    validated = ParallelBackpropParams(**params)
    return NamedMethod(
        label, {"name": "parallel_backprop", **params}, lambda model: None, {}, validated, ParallelBackprop
    )


def test_the_run_records_params_and_controls_and_the_report_names_methods_with_them(tmp_path):
    methods = [named("parallel_backprop"), named("parallel_backprop#2", variant="own", path="layer")]
    metrics = [NamedMetric("reference_sensitivity", {"name": "reference_sensitivity"}, ReferenceSensitivityMetric())]
    write_components(tmp_path, methods, metrics, {"parallel_backprop": True, "parallel_backprop#2": True})
    data = json.loads((tmp_path / "components.json").read_text())
    own = data["methods"]["parallel_backprop#2"]
    assert own["control"] == OWN and data["methods"]["parallel_backprop"]["control"] is None
    assert own["changed"] == ["variant"], "path = layer is its default"
    assert own["params"]["path"] == "layer" and own["params"]["n_steps"] == 16, "every param, as validated"
    assert own["scope"] and data["metrics"]["reference_sensitivity"]["single_image_value"] == 0.0
    comps = from_json(data)
    assert (
        comps.definition("parallel_backprop#2") == f'parallel_backprop#2 = parallel_backprop(variant="own") '
        f"(control: {OWN})"
    )
    assert comps.definition("parallel_backprop") == "parallel_backprop = parallel_backprop()"
    assert comps.controls_of("parallel_backprop") == ["parallel_backprop#2"]
    assert comps.controls_of("parallel_backprop#2") == [], "a control has no control"
    assert comps.pairwise_only("reference_sensitivity")
    assert (
        comps.methods["parallel_backprop#2"].call(["variant", "path"])
        == 'parallel_backprop(variant="own", path="layer")'
    )
    # the registry resolves the same from spec.json alone (a folder written before components.json)
    registry = from_registry(
        [{"name": "parallel_backprop"}, {"name": "parallel_backprop", "variant": "own"}],
        [{"name": "reference_sensitivity"}],
        get_registry(),
    )
    assert registry.definition("parallel_backprop#2") == comps.definition("parallel_backprop#2")
    assert registry.pairwise_only("reference_sensitivity")


def test_a_components_json_of_an_older_run_shows_the_spec_params():
    comps = from_json(
        {
            "methods": {
                "integrated_gradients": {"spec": {"name": "integrated_gradients", "n_steps": 4}, "pairwise": False}
            }
        }
    )
    assert comps.definition("integrated_gradients") == "integrated_gradients = integrated_gradients(n_steps=4)"
    assert comps.control("integrated_gradients") is None


# -- the verdict ------------------------------------------------------------------------------------------------
E = [0.01 * k for k in range(-6, 6)]

DEMO = Components(
    methods={
        "parallel_backprop": MethodInfo(True, name="parallel_backprop", scope="on constructed pairs only."),
        "parallel_backprop#2": MethodInfo(True, name="parallel_backprop", control=OWN),
        "saliency": MethodInfo(False, name="saliency"),
        "occlusion": MethodInfo(False, name="occlusion"),
    },
    metrics={
        "reference_sensitivity": MetricInfo("sharing", True, single_image_value=0.0),
        "shared_part_selectivity": MetricInfo("sharing", True),
        "deletion": MetricInfo("faithfulness", False),
    },
)


def scored(per_metric: dict[str, dict[str, list[float]]], higher: dict[str, bool]) -> tuple[list[Score], Any]:
    rows = [
        {
            "neuron": "n",
            "driver": f"d{i}",
            "reference": "r",
            "rank": "0",
            "method": m,
            "image": "driver",
            "metric": metric,
            "value": v,
            "higher_is_better": higher[metric],
        }
        for metric, per_method in per_metric.items()
        for m, vs in per_method.items()
        for i, v in enumerate(vs)
    ]
    scores = [Score.from_row({k: str(v) for k, v in r.items()}) for r in summarise_results(rows)]
    return scores, pair_values({k: str(v) for k, v in r.items()} for r in rows)


def demo_like() -> tuple[list[Score], Any]:
    """parallel_backprop: best on reference_sensitivity (single-image methods 0), level with occlusion on
    shared_part_selectivity, worst on deletion."""
    return scored(
        {
            "reference_sensitivity": {
                "parallel_backprop": [0.3 + e for e in E],
                "parallel_backprop#2": [0.0] * 12,
                "saliency": [0.0] * 12,
                "occlusion": [0.0] * 12,
            },
            "shared_part_selectivity": {
                "parallel_backprop": [0.6 + e for e in E],
                "parallel_backprop#2": [0.5 + e for e in E],
                "saliency": [0.4 + e for e in E],
                "occlusion": [0.6 + e for e in reversed(E)],
            },
            "deletion": {
                "parallel_backprop": [0.5 + e for e in E],
                "parallel_backprop#2": [0.45 + e for e in E],
                "saliency": [0.2 + e for e in E],
                "occlusion": [0.3 + e for e in E],
            },
        },
        {"reference_sensitivity": True, "shared_part_selectivity": True, "deletion": False},
    )


def test_a_pairwise_only_metric_ranks_pairwise_methods_and_compares_with_the_control():
    scores, values = demo_like()
    cs = {c.metric: c for c in contests(scores, values, DEMO)}
    ref = cs["reference_sensitivity"]
    assert ref.pairwise_only and [s.method for s in ref.ranking] == ["parallel_backprop", "parallel_backprop#2"]
    assert len(cs["shared_part_selectivity"].ranking) == 4, "an ordinary metric ranks every method"
    (cmp,) = comparisons_on(ref, "parallel_backprop", DEMO, values)
    assert cmp.control and cmp.baseline.method == "parallel_backprop#2" and cmp.outcome == "better"
    assert cmp.against == "its own control parallel_backprop#2"
    assert versus_baseline(ref, "parallel_backprop", DEMO, values) is None, "no single-image method on it"
    assert comparisons_on(ref, "parallel_backprop#2", DEMO, values) == [], "the control has no control"
    sps = versus_baseline(cs["shared_part_selectivity"], "parallel_backprop", DEMO, values)
    assert sps.baseline.method == "occlusion" and sps.against == BASELINE and not sps.control


def test_the_verdict_says_what_the_method_wins_and_loses_on_without_a_misleading_tie_or_rank():
    scores, values = demo_like()
    reading = read_summary(scores, DEMO, values)
    sharing, faithfulness = reading.headline[0], reading.headline[2]
    assert sharing.startswith(
        "Sharing: parallel_backprop and occlusion tie (mean rank 1.0 among 4 methods over "
        "shared_part_selectivity on driver maps"
    )
    assert (
        "reference_sensitivity is left out: every single-image method scores a constant on it by construction"
        in sharing
    )
    assert faithfulness.startswith("Faithfulness: saliency wins")
    method = reading.headline[3]
    assert "ranks" not in method and "of 4 methods" not in method, "no overall rank in the verdict"
    assert method.startswith(
        "Against the best single-image baseline, parallel_backprop is better on 0 of 2 metric × image results"
    )
    assert "it loses on deletion (driver beyond noise)" in method
    assert "it draws on shared_part_selectivity (driver)" in method
    assert (
        "Against its own control parallel_backprop#2, parallel_backprop is better on 2 of 2 metric × image results "
        "(2 beyond noise)" in method
    ), "issue 26: on every sharing metric, not only the pairwise-only one"
    assert "it wins on reference_sensitivity (driver beyond noise) and shared_part_selectivity (driver beyond" in method
    assert method.endswith("Scope: on constructed pairs only.")
    control = reading.headline[4]
    assert (
        control == f"parallel_backprop#2 is the control of parallel_backprop ({OWN}): compare with it, do not "
        "rank it as a method."
    )
    assert any(
        s.startswith(
            "reference_sensitivity ↑ (driver maps) (pairwise methods only: every single-image method scores 0 "
            "by construction): parallel_backprop is best"
        )
        for s in reading.per_metric
    )
    # the detailed reading keeps the overall rank, over the metrics that rank every method
    assert reading.pairwise[0].rank.startswith("parallel_backprop ranks ")
    assert "over 2 metric × image results, every metric family" in reading.pairwise[0].rank


def test_without_the_declaration_single_image_zeros_would_count():
    """The same numbers with reference_sensitivity declared as an ordinary metric: single-image methods are ranked
    on it (what issue 28 found); the declaration on the metric's class is what changes it, not its name."""
    scores, values = demo_like()
    plain = Components(
        methods=DEMO.methods, metrics={**DEMO.metrics, "reference_sensitivity": MetricInfo("sharing", True)}
    )
    ref = next(c for c in contests(scores, values, plain) if c.metric == "reference_sensitivity")
    assert len(ref.ranking) == 4 and not ref.pairwise_only


def test_an_older_components_json_is_completed_from_the_installed_plugins(tmp_path):
    """A run folder written before components.json recorded params and controls (e.g. the demo of issue 28): what it
    recorded stays, and the params, control and pairwise-only value come from the registered classes."""
    from sharedattr.report.components import load

    spec = {
        "methods": [{"name": "parallel_backprop"}, {"name": "parallel_backprop", "variant": "own"}],
        "metrics": [{"name": "reference_sensitivity"}],
    }
    older = {
        "methods": {
            "parallel_backprop": {"spec": {"name": "parallel_backprop"}, "pairwise": True, "plugin": {}},
            "parallel_backprop#2": {
                "spec": {"name": "parallel_backprop", "variant": "own"},
                "pairwise": True,
                "plugin": {},
            },
        },
        "metrics": {"reference_sensitivity": {"spec": {}, "family": "sharing", "higher_is_better": True}},
    }
    (tmp_path / "components.json").write_text(json.dumps(older))
    comps = load(tmp_path / "components.json", spec)
    assert comps.control("parallel_backprop#2") == OWN and comps.control("parallel_backprop") is None
    assert comps.methods["parallel_backprop#2"].changed == ("variant",)
    assert comps.pairwise_only("reference_sensitivity") and comps.family("reference_sensitivity") == "sharing"
    assert not comps.fallback, "components.json was read; only what it lacks came from the registry"


# -- issue 26: each control, the co-location control of every pairwise method ------------------------------------
def test_a_control_declares_what_it_controls_and_the_run_records_it(tmp_path):
    assert control_reach(ParallelBackprop) == ("same", "control")
    assert control_reach(Colocation) == ("any_pairwise", "co-location control")

    class Odd(AttributionMethod):
        controls: ClassVar[Any] = "everything"

    with pytest.raises(TypeError, match="Odd.controls is 'everything'"):
        control_reach(Odd)
    methods = [
        named("parallel_backprop"),
        named("parallel_backprop#2", variant="own"),
        NamedMethod("colocation", {"name": "colocation"}, lambda model: None, {}, ColocationParams(), Colocation),
    ]
    write_components(tmp_path, methods, [], {m.label: True for m in methods})
    data = json.loads((tmp_path / "components.json").read_text())
    assert data["methods"]["colocation"]["controls"] == "any_pairwise"
    assert data["methods"]["colocation"]["control_noun"] == "co-location control"
    assert data["methods"]["parallel_backprop#2"]["controls"] == "same"
    comps = from_json(data)
    assert comps.controls_of("parallel_backprop") == ["parallel_backprop#2", "colocation"]
    assert comps.controls_of("colocation") == comps.controls_of("parallel_backprop#2") == [], "a control has none"
    assert comps.control_phrase("parallel_backprop", "colocation") == "the co-location control colocation"
    assert comps.control_phrase("parallel_backprop", "parallel_backprop#2") == "its own control parallel_backprop#2"
    registry = from_registry(
        [{"name": "parallel_backprop"}, {"name": "parallel_backprop", "variant": "own"}, {"name": "colocation"}],
        [],
        get_registry(),
    )
    assert registry.controls_of("parallel_backprop") == ["parallel_backprop#2", "colocation"], "spec.json alone"


def test_an_older_components_json_without_the_key_reads_every_control_as_of_its_own_component():
    """Documented in sharedattr.report.components: without ``controls``, colocation controls no other component."""
    older = {
        "methods": {
            "parallel_backprop": {"spec": {"name": "parallel_backprop"}, "pairwise": True, "params": {}},
            "parallel_backprop#2": {
                "spec": {"name": "parallel_backprop", "variant": "own"},
                "pairwise": True,
                "params": {"variant": "own"},
                "control": OWN,
            },
            "colocation": {"spec": {"name": "colocation"}, "pairwise": True, "params": {}, "control": COLOC},
        }
    }
    comps = from_json(older)
    assert comps.methods["colocation"].controls == "same"
    assert comps.controls_of("parallel_backprop") == ["parallel_backprop#2"]


COLOC = "co-location of the two images' own maps on the same path (no feature compared)"
WITH_COLOCATION = Components(
    methods={
        "parallel_backprop": MethodInfo(True, name="parallel_backprop"),
        "parallel_backprop#2": MethodInfo(True, name="parallel_backprop", control=OWN),
        "colocation": MethodInfo(
            True, name="colocation", control=COLOC, controls="any_pairwise", control_noun="co-location control"
        ),
        "saliency": MethodInfo(False, name="saliency"),
    },
    metrics={
        "reference_sensitivity": MetricInfo("sharing", True, single_image_value=0.0),
        "shared_part_selectivity": MetricInfo("sharing", True),
        "deletion": MetricInfo("faithfulness", False),
    },
)


def with_colocation() -> tuple[list[Score], Any]:
    """parallel_backprop: beats its own control on both sharing metrics, loses to colocation on
    shared_part_selectivity and is level with it on reference_sensitivity (the same values), beats saliency on
    shared_part_selectivity and loses to it on deletion (lower is better)."""
    return scored(
        {
            "reference_sensitivity": {
                "parallel_backprop": [0.3 + e for e in E],
                "parallel_backprop#2": [0.0] * 12,
                "colocation": [0.3 + e for e in E],
                "saliency": [0.0] * 12,
            },
            "shared_part_selectivity": {
                "parallel_backprop": [0.6 + e for e in E],
                "parallel_backprop#2": [0.5 + e for e in E],
                "colocation": [0.7 + e for e in E],
                "saliency": [0.4 + e for e in E],
            },
            "deletion": {
                "parallel_backprop": [0.3 + e for e in E],
                "parallel_backprop#2": [0.3 + e for e in E],
                "colocation": [0.3 + e for e in E],
                "saliency": [0.2 + e for e in E],
            },
        },
        {"reference_sensitivity": True, "shared_part_selectivity": True, "deletion": False},
    )


def test_a_pairwise_method_is_compared_with_each_of_its_controls_on_the_sharing_metrics():
    scores, values = with_colocation()
    cs = {c.metric: c for c in contests(scores, values, WITH_COLOCATION)}
    ref = comparisons_on(cs["reference_sensitivity"], "parallel_backprop", WITH_COLOCATION, values)
    assert [(c.baseline.method, c.against, c.outcome) for c in ref] == [
        ("parallel_backprop#2", "its own control parallel_backprop#2", "better"),
        ("colocation", "the co-location control colocation", "level"),
    ], "pairwise-only: each control, never the single-image method"
    assert ref[0].beyond_noise() and ref[1].test.status == "level", "each with its own paired test"
    sps = comparisons_on(cs["shared_part_selectivity"], "parallel_backprop", WITH_COLOCATION, values)
    assert [(c.baseline.method, c.control, c.outcome, c.beyond_noise()) for c in sps] == [
        ("saliency", False, "better", True),
        ("parallel_backprop#2", True, "better", True),
        ("colocation", True, "worse", True),
    ], "a sharing metric: the best single-image baseline as well"
    deletion = comparisons_on(cs["deletion"], "parallel_backprop", WITH_COLOCATION, values)
    assert [c.baseline.method for c in deletion] == ["saliency"], "no control outside the sharing metrics"
    for control in ("colocation", "parallel_backprop#2"):
        for c in cs.values():
            assert all(not cmp.control for cmp in comparisons_on(c, control, WITH_COLOCATION, values))
    of_colocation = [cmp for c in cs.values() for cmp in comparisons_on(c, "colocation", WITH_COLOCATION, values)]
    assert [c.baseline.method for c in of_colocation] == ["saliency", "saliency"], "never with itself"

    reading = read_summary(scores, WITH_COLOCATION, values)
    (method,) = [line for line in reading.headline if line.startswith("Against the best single-image baseline, pa")]
    assert (
        "Against the best single-image baseline, parallel_backprop is better on 1 of 2 metric × image results "
        "(1 beyond noise), worse on 1 (1 beyond noise)." in method
    )
    assert "wins on shared_part_selectivity (driver beyond noise); it loses on deletion (driver beyond noise)" in method
    assert "reference_sensitivity" not in method.split("Against its own control")[0], "no single-image 0 counted"
    assert (
        "Against its own control parallel_backprop#2, parallel_backprop is better on 2 of 2 metric × image results "
        "(2 beyond noise), worse on 0 (0 beyond noise)." in method
    )
    assert (
        "Against the co-location control colocation, parallel_backprop is better on 0 of 2 metric × image results "
        "(0 beyond noise), worse on 1 (1 beyond noise) and level on 1. By metric (and image), it loses on "
        "shared_part_selectivity (driver beyond noise); it draws on reference_sensitivity (driver)." in method
    )
    assert "has no control" not in method
    assert (
        f"colocation is the control of parallel_backprop ({COLOC}): compare with it, do not rank it as a method."
        in reading.headline
    )
    (mine,) = [p for p in reading.pairwise if p.method == "parallel_backprop"]
    rows = [comparison_row(c)["baseline"] for c in mine.comparisons]
    assert rows.count("the co-location control colocation") == 2 and rows.count("saliency") == 2
    assert any("vs the co-location control colocation 0.695 ± 0.0104: worse by 0.1" in s for s in mine.sentences)
    section = reading_section(SimpleNamespace(reading=reading))
    html = environment().get_template(section.template_name).render(section=section, v=section.view)
    assert "parallel_backprop vs the best single-image baseline and its controls" in html
    assert "<td>the co-location control colocation</td>" in html
    assert "<td>its own control parallel_backprop#2</td>" in html


def test_a_method_without_a_control_in_the_run_says_so():
    scores, values = with_colocation()
    alone = Components(
        methods={m: WITH_COLOCATION.methods[m] for m in ("parallel_backprop", "saliency")},
        metrics=WITH_COLOCATION.metrics,
    )
    kept = [s for s in scores if s.method in alone.methods]
    reading = read_summary(kept, alone, values)
    (method,) = [line for line in reading.headline if "parallel_backprop is better" in line]
    assert method.endswith("parallel_backprop has no control in this run.")
    assert "Against its own control" not in method and "co-location" not in method
    only = [s for s in scores if s.method == "parallel_backprop"]
    (reading,) = read_summary(only, alone, values).pairwise
    assert reading.tally == (
        "Neither a single-image baseline nor a control of it was scored, so there is nothing to compare it with. "
        "parallel_backprop has no control in this run."
    )
