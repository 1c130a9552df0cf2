"""The plugin registry: built-ins, entry-point discovery, broken plugins, duplicates, filters."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, create_model

from sharedattr import hookimpl
from sharedattr.plugins.hookspecs import KINDS
from sharedattr.plugins.loading import DEFAULT_PLUGINS, PluginLoadWarning, load_registry
from sharedattr.plugins.registry import Registry
from sharedattr.runtime.errors import (
    DuplicateComponentError,
    PluginDefinitionError,
    SpecError,
    UnknownComponentError,
)

PLUGIN_SOURCE = """
from sharedattr.plugin import Params, hookimpl


class HalfParams(Params):
    factor: float = 0.5


class Half:
    def __init__(self, factor):
        self.factor = factor

    def similarity(self, a, b):
        return self.factor * (a @ b.transpose(-1, -2))


@hookimpl
def register_matchers(register):
    register("half_dot", Half, params=HalfParams, description="Half the dot product.")
"""


def test_builtins_cover_every_kind(registry):
    for kind in KINDS:
        assert registry.names(kind), f"no built-in {kind}"
    for module in DEFAULT_PLUGINS:
        assert module in registry.plugins
    assert registry.get("readout", "ridge").source == "sharedattr.encoding.readouts.ridge"


def test_entry_point_plugin_is_discovered(install_plugin):
    install_plugin("sharedattr-half", "sharedattr_half", PLUGIN_SOURCE)
    registry = load_registry()
    component = registry.get("matcher", "half_dot")
    assert component.source == "sharedattr-half"
    assert "sharedattr-half" in registry.plugins
    matcher = registry.build("matcher", "half_dot", factor=2.0)
    assert matcher.factor == 2.0


def test_timm_workspace_plugin_is_discovered(registry):
    assert registry.get("backbone", "timm").source == "sharedattr-timm"


def test_plugin_that_fails_to_import_warns_and_others_keep_working(install_plugin):
    install_plugin("sharedattr-broken", "sharedattr_broken", "import this_module_does_not_exist\n")
    install_plugin("sharedattr-half", "sharedattr_half", PLUGIN_SOURCE)
    with pytest.warns(PluginLoadWarning, match=r"sharedattr-broken.*failed to import.*this_module_does_not_exist"):
        registry = load_registry()
    assert "sharedattr-broken" in registry.failed_plugins
    assert registry.get("matcher", "half_dot").source == "sharedattr-half"
    assert registry.names("readout") == ["attention", "factorized", "gaussian2d", "ridge"]


def test_plugin_that_raises_while_registering_is_withdrawn(install_plugin):
    install_plugin(
        "sharedattr-faulty",
        "sharedattr_faulty",
        """
        from sharedattr import hookimpl

        @hookimpl
        def register_matchers(register):
            register("faulty_ok", object)
            raise RuntimeError("boom")
    """,
    )
    with pytest.warns(PluginLoadWarning, match=r"sharedattr-faulty failed while registering.*boom"):
        registry = load_registry()
    assert "faulty_ok" not in registry.names("matcher")
    assert "cosine" in registry.names("matcher")


def test_misspelled_hook_is_caught_by_check_pending(install_plugin):
    install_plugin(
        "sharedattr-typo",
        "sharedattr_typo",
        """
        from sharedattr import hookimpl

        @hookimpl
        def register_matcher(register):  # missing 's'
            register("never", object)
    """,
    )
    with pytest.warns(PluginLoadWarning, match=r"sharedattr-typo was not loaded.*register_matcher"):
        registry = load_registry()
    assert "sharedattr-typo" in registry.failed_plugins
    assert "never" not in registry.names("matcher")


def test_duplicate_name_names_both_sources(install_plugin):
    install_plugin(
        "sharedattr-clash",
        "sharedattr_clash",
        """
        from sharedattr import hookimpl

        @hookimpl
        def register_readouts(register):
            register("ridge", object)
    """,
    )
    with pytest.raises(DuplicateComponentError) as info:
        load_registry()
    message = str(info.value)
    assert "readout 'ridge'" in message
    assert "sharedattr.encoding.readouts.ridge" in message and "sharedattr-clash" in message


def test_same_name_in_different_kinds_is_fine():
    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register("cosine", object)  # 'cosine' is also a matcher

    registry = load_registry(extra_plugins=[("mine", Plugin())])
    assert registry.get("metric", "cosine").source == "mine"
    assert registry.get("matcher", "cosine").source == "sharedattr.selection.matchers"


def test_load_plugins_env_filters_entry_points(install_plugin, monkeypatch):
    install_plugin("sharedattr-half", "sharedattr_half", PLUGIN_SOURCE)
    monkeypatch.setenv("SHAREDATTR_LOAD_PLUGINS", "")
    registry = load_registry()
    assert "half_dot" not in registry.names("matcher")
    assert "timm" not in registry.names("backbone")
    assert "ridge" in registry.names("readout")  # built-ins always load
    monkeypatch.setenv("SHAREDATTR_LOAD_PLUGINS", "sharedattr-half")
    registry = load_registry()
    assert "half_dot" in registry.names("matcher") and "timm" not in registry.names("backbone")


def test_unknown_name_lists_choices_and_closest_match(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.get("matcher", "cosin")
    message = str(info.value)
    assert "did you mean 'cosine'?" in message
    assert "cosine, dot, euclidean, pearson" in message


def test_params_are_validated_and_extra_keys_forbidden_even_if_plugin_forgot():
    class Loose(BaseModel):  # no extra="forbid", inf and NaN allowed
        k: int = 1
        f: float = 0.5

    registry = Registry()
    registry.add("metric", "loose", lambda k, f: k, params=Loose, source="t")
    assert registry.build("metric", "loose", k="3") == 3
    with pytest.raises(SpecError, match=r"kk: unknown parameter"):
        registry.build("metric", "loose", kk=3)
    with pytest.raises(SpecError, match=r"k: Input should be a valid integer"):
        registry.build("metric", "loose", k="x")
    with pytest.raises(SpecError, match=r"f: Input should be a finite number"):
        registry.build("metric", "loose", f=float("nan"))


@pytest.mark.parametrize(
    ("name", "factory", "params", "match"),
    [
        ("Bad Name", object, None, "lower case"),
        ("ok", 42, None, "not callable"),
        ("ok", object, dict, "pydantic BaseModel"),
    ],
)
def test_malformed_registrations_are_plugin_errors(name, factory, params, match):
    with pytest.raises(PluginDefinitionError, match=match):
        Registry().add("metric", name, factory, params=params, source="t")


@pytest.mark.parametrize("field", ["name", "params", "kind", "component", "build"])
def test_params_may_not_shadow_spec_keys_or_attributes(field):
    P = create_model("P", **{field: (int, 1)})

    with pytest.raises(PluginDefinitionError, match=f"may not have field\\(s\\) '{field}'"):
        Registry().add("metric", "m", object, params=P, source="t")


def test_a_plugin_passed_twice_loads_once_without_noise(install_plugin, recwarn):
    import importlib

    install_plugin("sharedattr-half", "sharedattr_half", PLUGIN_SOURCE)
    module = importlib.import_module("sharedattr_half")
    registry = load_registry(extra_plugins=[("sharedattr-half", module)])
    assert registry.get("matcher", "half_dot").source == "sharedattr-half"
    assert not registry.failed_plugins and not [w for w in recwarn if w.category is PluginLoadWarning]


def test_load_plugins_env_normalises_names(install_plugin, monkeypatch):
    install_plugin("sharedattr-half", "sharedattr_half", PLUGIN_SOURCE)
    monkeypatch.setenv("SHAREDATTR_LOAD_PLUGINS", "SharedAttr_Half")
    assert "half_dot" in load_registry().names("matcher")


def test_describe_is_json_ready(registry):
    import json

    described = json.loads(json.dumps(registry.describe()))
    assert set(described["components"]) == set(KINDS)
    ridge = next(c for c in described["components"]["readout"] if c["name"] == "ridge")
    assert "alphas" in ridge["params"]["properties"]
