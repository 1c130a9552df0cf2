"""Shared fixtures: fresh registries, fake installed plugins, tiny stimulus sets and configs."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny_configs import tiny_experiment

from sharedattr.plugins.loading import load_registry, reset_registry
from sharedattr.plugins.registry import Registry


@pytest.fixture(autouse=True)
def _fresh_global_registry(monkeypatch, tmp_path):
    """Each test sees a freshly discovered registry, no plugin filter or debug switch, and its own feature cache."""
    for variable in ("SHAREDATTR_LOAD_PLUGINS", "SHAREDATTR_BLOCK_PLUGINS", "SHAREDATTR_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SHAREDATTR_CACHE", str(tmp_path / "feature-cache"))
    reset_registry()
    torch.manual_seed(0)
    yield
    reset_registry()


@pytest.fixture
def registry() -> Registry:
    return load_registry()


@pytest.fixture
def install_plugin(tmp_path, monkeypatch) -> Callable[..., str]:
    """Install a fake distribution with a ``sharedattr`` entry point into a temporary sys.path entry.

    ``install_plugin(dist, module, source)`` writes ``<module>.py`` with ``source`` and a
    ``<dist>.dist-info`` whose entry point ``<dist> = <module>`` importlib.metadata discovers,
    exactly as for a pip-installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(dist: str, module: str, source: str) -> str:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[sharedattr]\n{dist} = {module}\n")
        added.append(module)
        return dist

    yield install
    for module in added:
        sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small in-silico stimulus set (12 per category, 32 px) with responses and a demo config."""
    from sharedattr.experiment.demo import make_demo_data

    folder = tmp_path_factory.mktemp("tiny")
    make_demo_data(folder, n_per_category=12, size=32, seed=1)
    return folder


@pytest.fixture
def tiny_config(tiny_data) -> dict:
    """A fast experiment config (as a dict) over ``tiny_data``; paths are absolute (:func:`tiny_experiment`)."""
    return tiny_experiment(tiny_data)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny networks: faster, and a busy shared CPU makes more threads spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
