"""A plugin cannot end or hang the commands: ``sys.exit`` at import or while registering, and an import that never
finishes, leave that plugin out, reported by name with the reason; Ctrl-C still interrupts."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from sharedattr.cli import main
from sharedattr.plugins.loading import (
    DEFAULT_PLUGIN_TIMEOUT,
    PLUGIN_TIMEOUT_ENV,
    PluginLoadWarning,
    load_registry,
    plugin_timeout,
)

EXITS_AT_IMPORT = """
import sys
sys.exit(0)
"""

EXITS_WHILE_REGISTERING = """
import sys
from sharedattr.plugin import hookimpl


@hookimpl
def register_matchers(register):
    register("exit_matcher", object)
    sys.exit(3)
"""

INTERRUPTED_AT_IMPORT = """
raise KeyboardInterrupt
"""

HANGS_AT_IMPORT = """
import plugin_gate
plugin_gate.OPEN.wait(600)  # blocked, as on a lock or the network (released by the test when it ends)
"""


def test_a_plugin_calling_sys_exit_is_left_out_and_named(install_plugin, tiny_config, tmp_path, capsys):
    install_plugin("sharedattr-quits", "sharedattr_quits", EXITS_AT_IMPORT)
    install_plugin("sharedattr-quits-later", "sharedattr_quits_later", EXITS_WHILE_REGISTERING)
    with pytest.warns(PluginLoadWarning) as record:
        registry = load_registry()
    assert "it called sys.exit(0) (raised at" in registry.failed_plugins["sharedattr-quits"]
    assert "it called sys.exit(3)" in registry.failed_plugins["sharedattr-quits-later"]
    assert "exit_matcher" not in registry.names("matcher") and "ridge" in registry.names("readout")
    assert any("sharedattr-quits failed to import and was skipped" in str(w.message) for w in record)
    assert main(["plugins"]) == 0  # every command goes on, and says why the plugins are missing
    out = capsys.readouterr().out
    assert "sharedattr-quits: it called sys.exit(0)" in out and "sharedattr-quits-later: it called sys.exit(3)" in out
    config = tmp_path / "c.json"
    config.write_text(__import__("json").dumps(tiny_config))
    assert main(["validate", str(config)]) == 0
    assert "valid experiment 'tiny'" in capsys.readouterr().out


def test_ctrl_c_at_a_plugins_import_still_interrupts(install_plugin):
    install_plugin("sharedattr-interrupted", "sharedattr_interrupted", INTERRUPTED_AT_IMPORT)
    with pytest.raises(KeyboardInterrupt):
        load_registry()


@pytest.fixture
def gate(monkeypatch):
    """``plugin_gate.OPEN``, an event a hanging plugin waits on: set when the test ends, so its import finishes."""
    module = types.ModuleType("plugin_gate")
    module.OPEN = threading.Event()
    monkeypatch.setitem(sys.modules, "plugin_gate", module)
    yield module.OPEN
    module.OPEN.set()


def test_a_plugin_that_hangs_at_import_is_left_out_after_the_time_limit(install_plugin, monkeypatch, capsys, gate):
    install_plugin("sharedattr-hangs", "sharedattr_hangs", HANGS_AT_IMPORT)
    monkeypatch.setenv(PLUGIN_TIMEOUT_ENV, "0.2")
    with pytest.warns(PluginLoadWarning, match=r"sharedattr-hangs was skipped: did not finish importing within 0\.2 s"):
        registry = load_registry()
    assert not gate.is_set()  # it came back while the plugin was still blocked
    assert f"set {PLUGIN_TIMEOUT_ENV} to allow more seconds" in registry.failed_plugins["sharedattr-hangs"]
    assert "timm" in registry.names("backbone")  # every other plugin loaded
    assert main(["plugins"]) == 0
    assert "sharedattr-hangs: did not finish importing within 0.2 s" in capsys.readouterr().out


def test_the_time_limit_is_read_from_the_environment(monkeypatch):
    assert plugin_timeout() == DEFAULT_PLUGIN_TIMEOUT
    monkeypatch.setenv(PLUGIN_TIMEOUT_ENV, "2.5")
    assert plugin_timeout() == 2.5
    for bad in ("soon", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(PLUGIN_TIMEOUT_ENV, bad)
        with pytest.warns(PluginLoadWarning, match="is not a positive number of seconds"):
            assert plugin_timeout() == DEFAULT_PLUGIN_TIMEOUT
