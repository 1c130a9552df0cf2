"""Experiment and component specs: validation, field paths, defaults, canonical form."""

from __future__ import annotations

import copy

import pytest

from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import validate_experiment
from sharedattr.plugins.specs import MethodSpec
from sharedattr.runtime.errors import SpecError


def test_valid_spec_fills_component_defaults(tiny_config):
    spec = validate_experiment(tiny_config)
    assert isinstance(spec, ExperimentSpec)
    assert spec.matcher.name == "cosine"
    ig = spec.methods[1]
    assert ig.params["n_steps"] == 4 and ig.params["method"] == "gausslegendre"  # default filled in
    assert spec.readout.params["folds"] == 3 and "alphas" in spec.readout.params


def test_bare_name_is_shorthand_for_a_spec():
    assert MethodSpec.model_validate("saliency") == MethodSpec(name="saliency")


def test_digest_is_stable_and_sensitive(tiny_config):
    a = validate_experiment(tiny_config).digest()
    assert a == validate_experiment(copy.deepcopy(tiny_config)).digest()
    changed = copy.deepcopy(tiny_config)
    changed["methods"][1]["n_steps"] = 5
    assert validate_experiment(changed).digest() != a
    explicit_default = copy.deepcopy(tiny_config)
    explicit_default["matcher"] = {"name": "cosine", "eps": 1e-12}
    assert validate_experiment(explicit_default).digest() == a  # same run, written differently


def _issues(config) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_experiment(config)
    return [str(i) for i in info.value.issues]


def test_unknown_component_names_field_and_suggests(tiny_config):
    tiny_config["methods"][0] = "salency"
    (issue,) = _issues(tiny_config)
    assert issue.startswith("methods[0] (salency).name: unknown method 'salency'; did you mean 'saliency'?")
    assert "integrated_gradients" in issue


def test_wrong_param_type_gives_field_path(tiny_config):
    tiny_config["methods"][1]["n_steps"] = "many"
    (issue,) = _issues(tiny_config)
    assert (
        issue.startswith("methods[1] (integrated_gradients).n_steps: Input should be a valid integer")
        and "'many'" in issue
    )


def test_unknown_param_gives_field_path(tiny_config):
    tiny_config["readout"]["alpha"] = 3
    assert _issues(tiny_config) == ["readout.alpha: unknown parameter (remove it, or check its spelling)"]


def test_unknown_top_level_and_nested_keys(tiny_config):
    tiny_config["outptu"] = {}
    tiny_config["selection"]["topk"] = 3
    issues = _issues(tiny_config)
    assert "outptu: unknown parameter (remove it, or check its spelling)" in issues
    assert "selection.topk: unknown parameter (remove it, or check its spelling)" in issues


def test_every_problem_is_reported_at_once(tiny_config):
    tiny_config["matcher"] = "cosinus"
    tiny_config["metrics"] = [{"name": "deletion", "steps": 0}]
    tiny_config["backbone"]["model"] = "resnet19"
    issues = _issues(tiny_config)
    assert len(issues) == 3
    assert any(i.startswith("matcher.name: unknown matcher 'cosinus'") for i in issues)
    assert any(i.startswith("metrics[0] (deletion).steps: Input should be greater than or equal to 2") for i in issues)
    assert any("backbone.model" in i and "did you mean 'resnet18'" in i for i in issues)


def test_missing_data_file_is_reported_with_path(tiny_config, tmp_path):
    tiny_config["data"]["responses"] = str(tmp_path / "nope.csv")
    (issue,) = _issues(tiny_config)
    assert issue.startswith("data.responses: Value error, file not found:") and "nope.csv" in issue


def test_relative_paths_resolve_against_base_dir(tiny_data, tiny_config):
    tiny_config["data"] = {"stimuli": "stimuli/manifest.csv", "responses": "responses.csv"}
    spec = validate_experiment(tiny_config, base_dir=tiny_data)
    assert spec.data.stimuli == tiny_data / "stimuli" / "manifest.csv"


def test_selection_rules_are_exclusive(tiny_config):
    tiny_config["selection"] = {"neurons": ["body_limbs"], "top_k": 2}
    (issue,) = _issues(tiny_config)
    assert issue.startswith("selection: Value error, give either explicit 'neurons'")


def test_component_spec_needs_a_name(tiny_config):
    tiny_config["readout"] = {"folds": 3}
    (issue,) = _issues(tiny_config)
    assert issue.startswith("readout.name: Field required")


def test_not_a_mapping():
    with pytest.raises(SpecError, match="an experiment spec is a table of settings"):
        validate_experiment(["a", "list"])  # type: ignore[arg-type]


def test_names_in_a_config_are_never_imported(tiny_config):
    import sys

    tiny_config["backbone"] = {"name": "sharedattr_never_imported.Backbone"}
    tiny_config["matcher"] = "os.system"
    issues = _issues(tiny_config)
    assert any(i.startswith("backbone.name: unknown backbone 'sharedattr_never_imported.Backbone'") for i in issues)
    assert any(i.startswith("matcher.name: unknown matcher 'os.system'") for i in issues)
    assert "sharedattr_never_imported" not in sys.modules


def test_component_errors_are_reported_with_structural_ones(tiny_config):
    tiny_config["seed"] = "zero"  # structural
    tiny_config["matcher"] = "cosinus"  # component
    tiny_config["methods"][1]["n_steps"] = -1  # component param
    issues = _issues(tiny_config)
    assert any(i.startswith("seed: Input should be a valid integer") for i in issues)
    assert any(i.startswith("matcher.name: unknown matcher 'cosinus'") for i in issues)
    assert any(
        i.startswith("methods[1] (integrated_gradients).n_steps: Input should be greater than or equal to 1")
        for i in issues
    )


def test_schema_key_is_ignored(tiny_config):
    tiny_config["$schema"] = "./experiment.schema.json"
    assert validate_experiment(tiny_config).name == "tiny"


def test_responses_are_required(tiny_config):
    del tiny_config["data"]["responses"]
    assert _issues(tiny_config) == ["data.responses: Field required"]
