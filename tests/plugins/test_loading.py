"""What a plugin author meets: clear names, filters that say what they filter, diagnostics that still list."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.encoding.store import load_model, save_model
from sharedattr.plugins.loading import PluginLoadWarning, load_registry
from sharedattr.runtime.errors import (
    DuplicateComponentError,
    SpecError,
    UnknownComponentError,
    UserError,
)

METHOD_PLUGIN = """
from pydantic import Field
from sharedattr.plugin import Params, hookimpl


class SignParams(Params):
    mu: float = Field(0.0, ge=0)


class GradientXSign:
    def __init__(self, model, mu=0.0):
        self.model, self.mu = model, mu

    def attribute(self, inputs, target=None):
        return inputs


@hookimpl
def register_methods(register):
    register("gradient_x_sign", GradientXSign, params=SignParams, description="test method")
"""

MATCHER_PLUGIN = """
from sharedattr.plugin import Matcher, hookimpl


class Spearman(Matcher):
    def similarity(self, a, b):
        return a @ b.transpose(-1, -2)


@hookimpl
def register_matchers(register):
    register("spearman", Spearman, description="test matcher")
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_entries_are_named_by_their_component(install_plugin, tiny_config):
    install_plugin("sharedattr-sign", "sharedattr_sign", METHOD_PLUGIN)
    registry = load_registry()
    tiny_config["methods"] = ["saliency", {"name": "gradient_x_sign", "mu": -1}]
    with pytest.raises(SpecError) as info:
        validate_experiment(tiny_config, registry=registry)
    assert [i.loc for i in info.value.issues] == ["methods[1] (gradient_x_sign).mu"]


def test_a_load_filter_naming_no_installed_plugin_warns_and_names_the_installed(install_plugin, monkeypatch):
    install_plugin("sharedattr-spearman", "sharedattr_spearman", MATCHER_PLUGIN)
    monkeypatch.setenv("SHAREDATTR_LOAD_PLUGINS", "sharedattr-spearmann")
    with pytest.warns(PluginLoadWarning) as record:
        registry = load_registry()
    message = " ".join(str(w.message) for w in record)
    assert "SHAREDATTR_LOAD_PLUGINS names 'sharedattr-spearmann', which is no installed sharedattr plugin" in message
    assert "did you mean 'sharedattr-spearman'?" in message and "installed: " in message
    assert "sharedattr-timm" in message
    with pytest.raises(UnknownComponentError) as info:
        registry.get("matcher", "spearman")
    hint = str(info.value)
    assert "Installed plugins that were not loaded, and may provide it:" in hint
    assert "sharedattr-spearman" in hint and "left out by SHAREDATTR_LOAD_PLUGINS" in hint


def test_one_plugin_can_be_blocked(install_plugin, monkeypatch, recwarn):
    install_plugin("sharedattr-spearman", "sharedattr_spearman", MATCHER_PLUGIN)
    monkeypatch.setenv("SHAREDATTR_BLOCK_PLUGINS", "sharedattr-spearman")
    registry = load_registry()
    assert "spearman" not in registry.names("matcher")
    assert "timm" in registry.names("backbone")  # every other plugin still loads
    assert registry.not_loaded == {"sharedattr-spearman": "SHAREDATTR_BLOCK_PLUGINS"}
    assert not [w for w in recwarn if w.category is PluginLoadWarning]


CLASH_PLUGIN = """
from sharedattr.plugin import hookimpl

@hookimpl
def register_matchers(register):
    register("cosine", object)
    register("unique_to_clash", object)
"""


def test_plugins_command_lists_everything_and_shows_a_clash(install_plugin, capsys):
    install_plugin("sharedattr-dup", "sharedattr_dup", CLASH_PLUGIN)
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert "unique_to_clash" in out and "ridge" in out
    assert "name clashes" in out
    assert "matcher 'cosine': registered by sharedattr.selection.matchers, sharedattr-dup" in out
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert json.loads(out)["clashes"] == [
        {"kind": "matcher", "name": "cosine", "plugins": ["sharedattr.selection.matchers", "sharedattr-dup"]}
    ]
    with pytest.raises(DuplicateComponentError, match="SHAREDATTR_BLOCK_PLUGINS"):
        load_registry()  # anything but the diagnostic refuses to guess


BROKEN_PLUGIN = """
from sharedattr.plugin import hookimpl


def helper():
    raise ValueError("the plugin's own bug")


@hookimpl
def register_metrics(register):
    helper()
"""


def test_a_failing_plugin_names_file_and_line_and_debug_prints_the_traceback(install_plugin, capsys):
    install_plugin("sharedattr-broken", "sharedattr_broken", BROKEN_PLUGIN)
    with pytest.warns(
        PluginLoadWarning,
        match=r"ValueError: the plugin's own bug \(raised at .*sharedattr_broken\.py"
        r":6 in helper\) \(set SHAREDATTR_DEBUG=1 for the full traceback\)",
    ):
        load_registry()
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0 and "sharedattr-broken: ValueError: the plugin's own bug" in out and "--debug" in out
    assert "Traceback" not in out
    code, out, _ = run_cli(capsys, "--debug", "plugins")
    assert code == 0 and "Traceback (most recent call last)" in out and "line 6, in helper" in out
    assert "SHAREDATTR_DEBUG" not in os.environ  # --debug lasts for its command only


def test_a_misspelled_hook_gets_the_nearest_hook_name(install_plugin):
    install_plugin(
        "sharedattr-typo",
        "sharedattr_typo",
        """
        from sharedattr.plugin import hookimpl

        @hookimpl
        def register_matcher(register):
            register("never", object)
    """,
    )
    with pytest.warns(
        PluginLoadWarning,
        match=r"'register_matcher' is not a sharedattr hook; did you mean "
        r"'register_matchers'\?",
    ):
        registry = load_registry()
    assert "never" not in registry.names("matcher")


def test_a_hook_argument_with_another_name_is_one_clear_line(install_plugin, capsys):
    install_plugin(
        "sharedattr-args",
        "sharedattr_args",
        """
        from sharedattr.plugin import hookimpl

        @hookimpl
        def register_matchers(reg):
            reg("never", object)
    """,
    )
    with pytest.warns(
        PluginLoadWarning,
        match=r"hook register_matchers\(reg\) must take exactly one argument "
        r"called 'register'",
    ):
        registry = load_registry()
    assert "\n" not in registry.failed_plugins["sharedattr-args"]


def test_a_plugin_that_registers_nothing_is_warned_about(install_plugin):
    install_plugin(
        "sharedattr-empty",
        "sharedattr_empty",
        """
        from sharedattr.plugin import hookimpl

        @hookimpl
        def register_metrics(register):
            pass
    """,
    )
    with pytest.warns(PluginLoadWarning, match="sharedattr-empty loaded but registered no component"):
        load_registry()


def test_unknown_names_are_punctuated(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.get("method", "xyzzy")
    assert "unknown method 'xyzzy'. Available methods: " in str(info.value)


def test_a_saved_model_names_the_plugin_it_needs(install_plugin, tmp_path):
    from sharedattr.testing import tiny_model

    install_plugin(
        "sharedattr-gabor",
        "sharedattr_gabor",
        """
        from sharedattr.plugin import hookimpl
        from sharedattr.testing import TinyBackbone

        @hookimpl
        def register_backbones(register):
            register("gabor", TinyBackbone, description="test backbone")
    """,
    )
    registry = load_registry()
    from sharedattr.plugins.specs import BackboneSpec, ReadoutSpec

    model = tiny_model()
    folder = save_model(
        model,
        BackboneSpec(name="gabor"),
        ReadoutSpec(name="ridge", folds=3),
        ["a", "b", "c"],
        tmp_path / "model",
        registry=registry,
    )
    meta = json.loads((folder / "model.json").read_text())
    assert meta["components"]["backbone"] == {
        "name": "gabor",
        "plugin": "sharedattr-gabor",
        "distribution": "sharedattr-gabor",
        "version": "0.1",
    }
    assert meta["components"]["readout"]["distribution"] == "sharedattr"
    assert load_model(folder, registry=registry).neuron_ids == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = load_registry(entry_points=False)
    with pytest.raises(UserError) as info:
        load_model(folder, registry=without)
    message = str(info.value)
    assert "backbone 'gabor' comes from the plugin 'sharedattr-gabor' (distribution sharedattr-gabor 0.1)" in message
    assert "uv pip install 'sharedattr-gabor==0.1'" in message


def test_validate_shows_the_plugin_of_each_component(capsys, tiny_config, tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(tiny_config))
    code, out, _ = run_cli(capsys, "validate", str(path))
    assert code == 0
    assert "[sharedattr.encoding.backbones.torchvision_models]" in out
    assert "integrated_gradients(n_steps=4" in out and "[sharedattr.attribution.captum_methods]" in out
