"""Determinism on the CPU: the same spec and seeds give identical results, run after run.

Two runs of one spec into two output folders, each with its own feature cache (nothing
shared), with stochastic methods (smoothgrad, gradient_shap) and a gradient_ascent
synthesizer with random jitter, must write byte-identical tables and identical tensors.
Only wall-time columns (``seconds``, ``ms_per_pair``, ``wall_s``, ...) and ``timings.json``
may differ. Changing the components' seeds must change the stochastic outputs (and only those).
"""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment

TIME_COLUMNS = {"seconds", "ms_per_pair", "wall_s", "wall_time", "time_s", "ms_per_map", "share_of_method"}
IDENTICAL_FILES = [
    "spec.json",
    "pairs.csv",
    "results.csv",
    "summary.csv",
    "scores.csv",
    "model/model.json",
    "model/readout.safetensors",
]


def _config(tiny_config: dict, seed: int = 0) -> dict:
    config = copy.deepcopy(tiny_config)
    config.update(
        selection={"top_k": 2, "drivers_per_neuron": 1},
        methods=[
            "saliency",
            {"name": "smoothgrad", "samples": 3, "seed": seed},
            {"name": "gradient_shap", "n_samples": 3, "seed": seed},
        ],
        metrics=["gini", {"name": "deletion", "steps": 4}],
        synthesis=[{"name": "gradient_ascent", "steps": 3, "jitter": 2, "n_seeds": 2, "seed": seed}],
        output={"figures": False},
    )
    return config


def _run(config: dict, out: Path, cache: Path) -> Path:
    """Run into ``out`` with its own feature cache (set by environment, so the spec itself is the same)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHAREDATTR_CACHE", str(cache))
        run_experiment(validate_experiment(config), out, progress=False)
    assert len(list(cache.glob("features-*.npy"))) == 1  # features computed here, not borrowed
    return out


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _table(path: Path) -> list[dict[str, str]]:
    """A CSV's rows without wall-time columns (``seconds``, ``ms_per_pair``, ``wall_s``, ``wall_s_per_neuron``, ...)."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows, path

    def timing(column: str) -> bool:
        return column in TIME_COLUMNS or "wall" in column or column.endswith(("_seconds", "_s"))

    return [{k: v for k, v in r.items() if not timing(k)} for r in rows]


@pytest.fixture(scope="module")
def runs(tiny_config_module, tmp_path_factory, one_thread):
    """Two runs of one spec (own folders, own caches) and a third with other component seeds."""
    base = tmp_path_factory.mktemp("determinism")
    a = _run(_config(tiny_config_module), base / "a", base / "cache-a")
    b = _run(_config(tiny_config_module), base / "b", base / "cache-b")
    c = _run(_config(tiny_config_module, seed=1), base / "c", base / "cache-c")
    return a, b, c


@pytest.fixture(scope="module")
def tiny_config_module(tiny_data) -> dict:
    """conftest's ``tiny_config``, for a module-scoped fixture."""
    return {
        "name": "tiny",
        "device": "cpu",
        "batch_size": 16,
        "seed": 0,
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "preferred_category": "bodies",
        },
        "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
        "readout": {"name": "ridge", "folds": 3},
        "matcher": "cosine",
    }


def test_tables_are_byte_identical(runs):
    a, b, _ = runs
    for name in IDENTICAL_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _table(a / "methods.csv") == _table(b / "methods.csv")
    assert _table(a / "metric_times.csv") == _table(b / "metric_times.csv")
    assert _table(a / "synthesis" / "scores.csv") == _table(b / "synthesis" / "scores.csv")
    assert _table(a / "synthesis" / "summary.csv") == _table(b / "synthesis" / "summary.csv")


def test_maps_and_synthesised_images_are_identical(runs):
    a, b, _ = runs
    for name in ("maps.safetensors", "synthesis/images.safetensors"):
        (ta, ma), (tb, mb) = _tensors(a / name), _tensors(b / name)
        assert ma == mb and ta.keys() == tb.keys() and ta, name
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{name}: {key}"


def test_other_seeds_change_the_stochastic_outputs_only(runs):
    a, _, c = runs
    assert (a / "pairs.csv").read_bytes() == (c / "pairs.csv").read_bytes()  # same model, same pairs
    (ta, _), (tc, _) = _tensors(a / "maps.safetensors"), _tensors(c / "maps.safetensors")
    for key in ta:
        same = torch.equal(ta[key], tc[key])
        assert same == key.startswith("saliency/"), key  # smoothgrad and gradient_shap draw from their seed
    (sa, _), (sc, _) = _tensors(a / "synthesis/images.safetensors"), _tensors(c / "synthesis/images.safetensors")
    changed = [k for k in sa if k.startswith("gradient_ascent/")]
    assert changed and all(not torch.equal(sa[k], sc[k]) for k in changed)
    assert all(torch.equal(sa[k], sc[k]) for k in sa if k.startswith("natural/"))


def test_the_thread_count_does_not_change_the_results(runs, tiny_config_module, tmp_path):
    """``runs`` ran on one torch thread (what each torchrun rank gets); the same spec on two threads writes the
    same bytes (tests/experiment/test_distributed.py compares 1 against 2 ranks)."""
    a = runs[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = _run(_config(tiny_config_module), tmp_path / "two-threads", tmp_path / "cache")
    finally:
        torch.set_num_threads(threads)
    for name in IDENTICAL_FILES:
        assert (a / name).read_bytes() == (two / name).read_bytes(), name
    for name in ("maps.safetensors", "synthesis/images.safetensors"):
        (ta, ma), (tb, mb) = _tensors(a / name), _tensors(two / name)
        assert ma == mb and ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
