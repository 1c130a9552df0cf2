"""Every CLI command, run as a user runs it: its exit code, what it prints and the files it writes.

The entry point itself (``python -m sharedattr``) and the demo run in a fresh process, as a user starts them; the
other commands run in this process (:func:`cli_runner.run_cli`: the same ``main``, without seconds of imports
each). One tiny data set and config serve every command (a random ResNet-18 cut at layer1, 32 px, two cheap
methods).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_cli
from toml_writer import toml_text


def sharedattr(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m sharedattr ARGS``: the finished process (exit code, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "sharedattr", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def config(tiny_data, tmp_path_factory) -> Path:
    """A TOML config over the tiny data set, with a synthesizer and an evaluator for `synthesize`."""
    folder = tmp_path_factory.mktemp("cli")
    spec = {
        "name": "cli",
        "device": "cpu",
        "batch_size": 16,
        "cache_dir": str(folder / "cache"),
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "neuron_parts": str(tiny_data / "neuron_parts.json"),
            "preferred_category": "bodies",
        },
        "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
        "readout": {"name": "ridge", "folds": 3},
        "selection": {"top_k": 2, "drivers_per_neuron": 2},
        "methods": ["parallel_backprop", {"name": "integrated_gradients", "n_steps": 4}],
        "metrics": ["gini", "relevance_mass", {"name": "deletion", "steps": 4}],
        "synthesis": [{"name": "gradient_ascent", "steps": 5, "n_seeds": 1}],
        "evaluators": [{"label": "val-split1", "role": "val", "split_seed": 1}],
    }
    path = folder / "cli.toml"
    path.write_text(toml_text(spec))
    return path


def test_version_and_help():
    done = sharedattr("--version")
    assert done.returncode == 0 and done.stdout.startswith("sharedattr ")
    done = sharedattr("--help")
    assert done.returncode == 0 and "COMMAND" in done.stdout


def test_plugins_lists_and_describes_as_json():
    done = run_cli("plugins")
    assert done.returncode == 0
    assert "backbones:" in done.stdout and "parallel_backprop" in done.stdout
    done = run_cli("plugins", "--json")
    assert done.returncode == 0 and "ridge" in {c["name"] for c in json.loads(done.stdout)["components"]["readout"]}


def test_schema_writes_the_json_schema(tmp_path):
    done = run_cli("schema", "--output", str(tmp_path / "schema.json"))
    assert done.returncode == 0 and "wrote" in done.stderr
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["title"] == "sharedattr experiment" and "methods" in schema["properties"]


def test_validate_shows_the_components_and_refuses_a_bad_config(config, tmp_path):
    done = run_cli("validate", str(config))
    assert done.returncode == 0 and "valid experiment 'cli'" in done.stdout
    assert "methods[1]" in done.stdout and "[sharedattr.attribution.captum_methods]" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('"n_steps" = 4', '"n_steps" = 0'))
    done = run_cli("validate", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "methods[1] (integrated_gradients).n_steps: Input should be greater than or equal to 1" in done.stderr


def test_fit_writes_the_model_scores_and_figure(config, tmp_path):
    done = run_cli("fit", str(config), "--out", str(tmp_path / "fit"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out Pearson r" in done.stdout
    for name in ("model/model.json", "model/readout.safetensors", "scores.csv", "figures/fit.png"):
        assert (tmp_path / "fit" / name).is_file(), name


@pytest.mark.parametrize("lower", [0.0, 10.0])
def test_fit_explains_a_negative_fev_beside_a_positive_r(config, tmp_path, monkeypatch, lower):
    """The summary's footnote appears exactly when scores.csv holds a neuron with FEV < 0 and r > 0: as fitted, and
    with every FEV lowered by 10 (predictions off in scale or offset)."""
    import sharedattr.encoding.fit as fitting

    real = fitting.fraction_explainable_variance_explained
    monkeypatch.setattr(fitting, "fraction_explainable_variance_explained", lambda p, t: real(p, t) - lower)
    done = run_cli("fit", str(config), "--out", str(tmp_path / "fit"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "fit" / "scores.csv").open()))
    both = [r["neuron"] for r in rows if r["fev"] and float(r["fev"]) < 0 and float(r["test_r"]) > 0]
    assert bool(both) == ("beside r > 0" in done.stdout), done.stdout
    if lower:
        assert both and f"{both[0]}: r " in done.stdout and "scale or offset" in done.stdout


def test_run_then_report(config, tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "driver/reference pairs" in done.stdout and "parallel_backprop" in done.stdout
    for name in (
        "spec.json",
        "pairs.csv",
        "results.csv",
        "summary.csv",
        "methods.csv",
        "metric_times.csv",
        "components.json",
        "maps.safetensors",
        "timings.json",
        "report.html",
        "synthesis/scores.csv",
    ):
        assert (out / name).is_file(), name
    timed = list(csv.DictReader((out / "metric_times.csv").open()))
    summary = {(r["metric"], r["method"]) for r in csv.DictReader((out / "summary.csv").open())}
    assert {(r["metric"], r["method"]) for r in timed} == summary  # every scored metric × method, timed
    assert all(float(r["seconds"]) > 0 and int(r["maps"]) > 0 for r in timed)
    components = json.loads((out / "components.json").read_text())
    assert components["methods"]["parallel_backprop"]["pairwise"] is True
    assert components["metrics"]["relevance_mass"]["family"] == "localisation"
    (out / "report.html").unlink()
    done = run_cli("report", str(out))
    assert done.returncode == 0 and done.stdout.strip().endswith("report.html")
    assert (out / "report.html").is_file()


def test_synthesize_prints_its_summary_and_writes_the_scores(config, tmp_path):
    out = tmp_path / "synthesis"
    done = run_cli("synthesize", str(config), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 neurons × 1 synthesizers scored on 2 models" in done.stdout
    for name in ("scores.csv", "summary.csv", "evaluators.csv", "images.safetensors", "images.png"):
        assert (out / name).is_file(), name


def test_demo_runs_end_to_end(tmp_path):
    done = sharedattr("demo", "--out", str(tmp_path), "--n-per-category", "6", "--drivers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 neurons, 4 driver/reference pairs" in done.stdout
    assert f"report: {(tmp_path / 'results' / 'report.html').resolve()}" in done.stdout
    assert (tmp_path / "results" / "synthesis" / "scores.csv").is_file()
    assert (tmp_path / "data" / "demo.toml").is_file() and (tmp_path / "data" / "neuron_parts.json").is_file()
    with open(tmp_path / "results" / "results.csv", newline="") as f:
        mass = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "relevance_mass"]
    assert mass and sum(math.isfinite(v) for v in mass) > len(mass) / 2  # scored on the parts each pair shares
    done = sharedattr("demo", "--out", str(tmp_path / "x"), "--n-per-category", "2")
    assert done.returncode == 2 and "must be at least 6" in done.stderr and not (tmp_path / "x").exists()
