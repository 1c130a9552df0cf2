"""End to end: the run pipeline and the offline demo on tiny data."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors.torch import load_file

from sharedattr.cli import main
from sharedattr.errors import UserError
from sharedattr.pipeline import run_experiment
from sharedattr.specs import validate_experiment


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_produces_a_tidy_table_per_pair_method_metric(tiny_config, tmp_path):
    tiny_config["synthesis"] = [{"name": "gradient_ascent", "steps": 5, "n_seeds": 2}]
    tiny_config["output"] = {"figures": True, "dpi": 40}
    spec = validate_experiment(tiny_config)
    result = run_experiment(spec, tmp_path, progress=False)

    pairs = read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == len(result.pairs) == 2 * 2  # top_k neurons × drivers
    assert all(p["driver_category"] != "bodies" for p in pairs)  # drivers are out of category
    assert all(p["reference"].startswith("bodies_") for p in pairs)  # references from the preferred category
    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == len(pairs) * 2 * 2  # × methods × metrics
    assert {r["method"] for r in rows} == {"saliency", "integrated_gradients"}
    assert all(r["value"] not in ("", "nan") for r in rows)
    summary = read_csv(tmp_path / "summary.csv")
    assert len(summary) == 4 and all(int(s["n"]) == len(pairs) for s in summary)

    maps = load_file(str(tmp_path / "maps.safetensors"))
    assert maps["saliency"].shape == (len(pairs), 32, 32)
    saved = json.loads((tmp_path / "spec.json").read_text())
    assert saved["digest"] == spec.digest()
    scores = read_csv(tmp_path / "scores.csv")
    assert [s["neuron"] for s in scores] == ["body_limbs", "body_head", "body_all", "object_shape"]
    synthesis = read_csv(tmp_path / "synthesis" / "scores.csv")
    assert len(synthesis) == 2 * 2 and {"forward_calls", "wall_s"} <= set(synthesis[0])
    for name in ["figures/fit.png", "synthesis/images.png"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "figures").glob("neuron_*.png"))) == 2


def test_explicit_neurons_and_unknown_ids(tiny_config, tmp_path):
    tiny_config["selection"] = {"neurons": ["body_head"], "drivers_per_neuron": 1}
    result = run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    assert [result.neuron_ids[n] for n in result.selected] == ["body_head"]
    tiny_config["selection"] = {"neurons": ["V4_unit_9"]}
    with pytest.raises(UserError, match=r"selection.neurons: unknown neuron id\(s\) \['V4_unit_9'\]"):
        run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)


def test_demo_command_runs_end_to_end(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--n-per-category", "10", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "integrated_gradients" in out and "driver/reference pairs" in out
    assert (tmp_path / "results" / "summary.csv").is_file()
    assert (tmp_path / "data" / "demo.toml").is_file()
