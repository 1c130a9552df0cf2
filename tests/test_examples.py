"""The example comparison runs end to end on the in-silico data, as its header says."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from sharedattr.cli import main
from sharedattr.demo import make_demo_data

ROOT = Path(__file__).resolve().parents[1]


def test_compare_example_runs_every_method_and_metric(tmp_path, capsys):
    make_demo_data(tmp_path / "sharedattr-demo" / "data", n_per_category=16, size=64)
    (tmp_path / "examples").mkdir()
    config = tmp_path / "examples" / "compare.toml"
    shutil.copy(ROOT / "examples" / "compare.toml", config)
    out = tmp_path / "runs" / "compare"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    methods = {r["method"] for r in summary}
    assert {"parallel_backprop", "parallel_backprop#2", "saliency", "grad_cam", "deep_lift", "occlusion"} <= methods
    metrics = {r["metric"] for r in summary}
    assert {"deletion", "pointing_game", "relevance_mass", "randomisation", "faithfulness_correlation"} <= metrics
    assert {r["image"] for r in summary} == {"driver", "reference"}  # baselines explain the reference too
    assert all(int(r["n"]) > 0 for r in summary)
    assert "parallel_backprop" in capsys.readouterr().out
