"""Determinism on the CPU: the same spec and seeds give identical results, run after run.

Two runs of one spec into two output folders, each with its own feature cache (nothing
shared), with stochastic methods (smoothgrad, gradient_shap) and a gradient_ascent
synthesizer with random jitter, must write byte-identical tables and identical tensors.
Only wall-time columns (``seconds``, ``ms_per_pair``, ``wall_s``, ...) and ``timings.json``
may differ. Changing the components' seeds must change the stochastic outputs (and only those).

The config is one whose bits torch's own threading would change (the shipped ``insilico_cnn`` backbone in work
blocks of 3 pairs: oneDNN's input gradient of a batch of 3 differs between 1 and 2 threads on an AMD EPYC), so
the thread-count test checks the policy of :mod:`sharedattr.runtime.numerics`, not a lucky shape. Other SIMD paths
(``ATEN_CPU_CAPABILITY=default``, MKL's compatible branch) are run in subprocesses: the same decisions, and numbers
within the tolerance docs/reliability.md states.
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
        "batch_size": 3,
        "seed": 0,
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "preferred_category": "bodies",
        },
        "backbone": {"name": "insilico_cnn", "layer": "block3"},
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


OTHER_SIMD_PATHS = {
    "no-vectors": {"ATEN_CPU_CAPABILITY": "default"},  # torch's kernels without SIMD (as on a CPU without AVX2)
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},  # MKL's generic branch instead of this CPU's
}
"""Other CPUs, emulated: the paths that differ most from this machine's (measured in docs/reliability.md)."""
CROSS_PATH_TOLERANCE = 1e-2
"""Absolute and relative tolerance of every number of the tables across SIMD paths (measured: at most 1.1e-3
absolute in results.csv); docs/reliability.md states it."""

MAP_TOLERANCE = 1e-5
"""Maps across SIMD paths: every pixel within this fraction of the map's maximum (measured: at most 2.6e-7, for
saliency and gradient_shap)..."""
NOISY_METHODS = {"smoothgrad"}
NOISY_MAP_TOLERANCE = 5e-2
"""... except for methods that add Gaussian noise to the images: a draw that differs in its last bits flips ReLU
gates, so the gradient moves where it does (measured: 1.05e-2 of the maximum, 6 % of a smoothgrad map's pixels
beyond 1e-4)."""

RUN_IN_SUBPROCESS = """
import json, sys
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
run_experiment(validate_experiment(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def _numbers(path: Path) -> tuple[list[list[str]], torch.Tensor]:
    """A CSV's text cells (ids, categories) and its numeric cells, without wall-time columns."""
    texts, numbers = [], []
    for row in _table(path):
        texts.append([])
        for value in row.values():
            try:
                numbers.append(float(value))
            except ValueError:
                texts[-1].append(value)
    return texts, torch.tensor(numbers, dtype=torch.float64)


def test_other_simd_paths_make_the_same_decisions_within_the_stated_tolerance(runs, tiny_config_module, tmp_path):
    """Torch without SIMD kernels and MKL's generic branch round differently from this CPU: the same neurons, pairs,
    references and penalties, and every number within :data:`CROSS_PATH_TOLERANCE`."""
    import json
    import os
    import subprocess
    import sys

    a = runs[0]
    config = json.dumps(_config(tiny_config_module))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", RUN_IN_SUBPROCESS, config, str(tmp_path / name)],
            env={**os.environ, **variables, "SHAREDATTR_CACHE": str(tmp_path / f"cache-{name}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, variables in OTHER_SIMD_PATHS.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        other = tmp_path / name
        for table in ("pairs.csv", "scores.csv", "results.csv", "summary.csv", "synthesis/scores.csv"):
            (texts_a, numbers_a), (texts_b, numbers_b) = _numbers(a / table), _numbers(other / table)
            assert texts_a == texts_b, f"{name}: {table} made other decisions"
            torch.testing.assert_close(
                numbers_b,
                numbers_a,
                atol=CROSS_PATH_TOLERANCE,
                rtol=CROSS_PATH_TOLERANCE,
                equal_nan=True,
                msg=lambda m, name=name, table=table: f"{name}: {table}: {m}",
            )
        (ta, _), (tb, _) = _tensors(a / "model/readout.safetensors"), _tensors(other / "model/readout.safetensors")
        assert torch.equal(ta["alpha"], tb["alpha"]), f"{name}: other penalties"
        (ma, _), (mb, _) = _tensors(a / "maps.safetensors"), _tensors(other / "maps.safetensors")
        for key in ma:
            off = (mb[key] - ma[key]).abs() / ma[key].abs().amax().clamp(min=1e-12)  # per map, in units of its max
            noisy = key.split("/")[0] in NOISY_METHODS
            assert off.max() <= (NOISY_MAP_TOLERANCE if noisy else MAP_TOLERANCE), (name, key, off.max().item())
