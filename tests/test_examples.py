"""Every example runs end to end as its header says: the configs through the ``sharedattr`` command (run in this
process by :func:`cli_runner.run_cli`, the same ``main``), the script in a fresh Python process.

The examples read the demo's data from ``../sharedattr-demo`` (relative to ``examples/``), so each
test writes a small demo data set there first, copies the example next to it and runs the command
the example's header gives, checking the exit code, what it prints and the files it writes.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_cli
from sharedattr.experiment.demo import make_demo_data

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A folder with ``sharedattr-demo/data`` (16 stimuli per category) and an empty ``examples/``."""
    root = tmp_path_factory.mktemp("examples")
    make_demo_data(root / "sharedattr-demo" / "data", n_per_category=16, size=64)
    (root / "examples").mkdir()
    return root


def copy_example(root: Path, name: str) -> Path:
    target = root / "examples" / name
    shutil.copy(ROOT / "examples" / name, target)
    return target


def test_compare_config_runs_every_method_and_metric(demo_root):
    config = copy_example(demo_root, "compare.toml")
    done = run_cli("run", str(config), "--out", "runs/compare", "--no-progress", cwd=demo_root)
    assert done.returncode == 0, done.stderr[-2000:]
    out = demo_root / "runs" / "compare"
    summary = read_csv(out / "summary.csv")
    methods = {r["method"] for r in summary}
    assert {"parallel_backprop", "parallel_backprop#2", "saliency", "grad_cam", "deep_lift", "occlusion"} <= methods
    metrics = {r["metric"] for r in summary}
    assert {"deletion", "pointing_game", "relevance_mass", "randomisation", "faithfulness_correlation"} <= metrics
    assert {"shared_part_selectivity", "reference_sensitivity"} <= metrics
    assert {r["image"] for r in summary} == {"driver", "reference"}  # baselines explain the reference too
    # a driver matched to a reference that shows all its driving parts has none that is not shared: there its
    # shared-part selectivity is undefined (the run warns why); every other score is defined
    assert all(int(r["n"]) > 0 for r in summary if (r["metric"], r["image"]) != ("shared_part_selectivity", "driver"))
    assert any(int(r["n"]) > 0 for r in summary if r["metric"] == "shared_part_selectivity")
    assert "parallel_backprop" in done.stdout and "driver/reference pairs" in done.stdout
    assert (out / "report.html").is_file()


def test_synthesis_config_prints_its_summary_and_writes_every_output(demo_root):
    config = copy_example(demo_root, "synthesis.toml")
    done = run_cli("synthesize", str(config), "--out", "runs/synthesis", "--no-progress", cwd=demo_root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    out = demo_root / "runs" / "synthesis"
    for name in (
        "scores.csv",
        "summary.csv",
        "evaluators.csv",
        "images.safetensors",
        "images.png",
        "comparison.png",
        "prior_samples.png",
    ):
        assert (out / name).is_file(), name
    scores = read_csv(out / "scores.csv")
    neurons, synthesizers = {r["neuron"] for r in scores}, {r["synthesizer"] for r in scores}
    assert neurons == {"limbs", "head", "body", "head_and_limbs"}
    assert synthesizers == {"gradient_ascent", "egg", "egg#2"}
    assert f"{len(neurons)} neurons × {len(synthesizers)} synthesizers scored on 5 models" in done.stdout


def test_compare_script_prints_the_comparison_and_writes_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compare_methods.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = read_csv(tmp_path / "comparison.csv")
    assert {r["neuron"] for r in table} == {"limbs", "head"}
    methods = {"parallel_backprop", "parallel_backprop#2", "saliency", "integrated_gradients", "grad_cam"}
    assert {r["method"] for r in table} == methods
    assert {"shared_part_selectivity", "reference_sensitivity"} <= {r["metric"] for r in table}
    assert f"{len(table)} rows" in done.stdout


def test_the_lab_config_validates_once_its_data_files_exist(tmp_path):
    """examples/experiment.toml (a torchvision ResNet-50 with ImageNet weights on recorded data) validates as its
    header says; validating the spec alone (--no-data) reads no weights and no data, so empty data files stand in for
    the lab's."""
    config = tmp_path / "examples" / "experiment.toml"
    config.parent.mkdir()
    shutil.copy(ROOT / "examples" / "experiment.toml", config)
    (tmp_path / "examples" / "data" / "stimuli").mkdir(parents=True)
    for name in ("stimuli/manifest.csv", "responses.csv"):
        (tmp_path / "examples" / "data" / name).touch()
    done = run_cli("validate", "--no-data", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid experiment 'body-patch'" in done.stdout and "resnet50" in done.stdout
    done = run_cli("validate", str(config), cwd=tmp_path)  # with the data checks, the empty manifest is refused
    assert done.returncode == 2 and "manifest.csv" in done.stderr and "missing column(s)" in done.stderr
