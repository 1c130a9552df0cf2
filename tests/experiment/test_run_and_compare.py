"""End to end: the run pipeline and the offline demo on tiny data."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import sharedattr
from sharedattr.attribution.parallel_backprop import ParallelBackprop
from sharedattr.config.validation import validate_experiment
from sharedattr.encoding.readouts.factorized import FactorizedReadout
from sharedattr.experiment.run import STAGES, run_experiment
from sharedattr.experiment.tables import RESULT_COLUMNS
from sharedattr.metrics.complexity import GiniMetric
from sharedattr.runtime.errors import SpecError, UserError


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_produces_a_tidy_table_per_pair_method_metric(tiny_config, tmp_path):
    tiny_config["synthesis"] = [{"name": "gradient_ascent", "steps": 5, "n_seeds": 2}]
    tiny_config["output"] = {"figures": True, "dpi": 40}
    tiny_config["methods"].append({"name": "parallel_backprop"})
    tiny_config["metrics"].append("pointing_game")
    spec = validate_experiment(tiny_config)
    result = run_experiment(spec, tmp_path, progress=False)

    pairs = read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == len(result.pairs) == 2 * 2  # top_k neurons × drivers
    assert all(p["driver_category"] != "bodies" for p in pairs)  # drivers are out of category
    assert all(p["reference"].startswith("bodies_") for p in pairs)  # references from the preferred category
    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == len(pairs) * 3 * 2 * 3  # × methods × images (driver, reference) × metrics
    assert {r["method"] for r in rows} == {"saliency", "integrated_gradients", "parallel_backprop"}
    assert {r["image"] for r in rows} == {"driver", "reference"}
    assert all(r["value"] not in ("", "nan") for r in rows if r["metric"] != "pointing_game")
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == len(rows) and list(table.columns) == RESULT_COLUMNS
    summary = read_csv(tmp_path / "summary.csv")
    assert len(summary) == 3 * 2 * 3
    assert all(int(s["n"]) == len(pairs) for s in summary if s["metric"] != "pointing_game")

    maps = load_file(str(tmp_path / "maps.safetensors"))
    assert set(maps) == {
        f"{m}/{i}" for m in ("saliency", "integrated_gradients", "parallel_backprop") for i in ("driver", "reference")
    }
    assert maps["saliency/driver"].shape == (len(pairs), 32, 32)
    saved = json.loads((tmp_path / "spec.json").read_text())
    assert saved["digest"] == spec.digest()
    scores = read_csv(tmp_path / "scores.csv")
    assert [s["neuron"] for s in scores] == ["limbs", "head", "body", "head_and_limbs", "shape"]
    synthesis = read_csv(tmp_path / "synthesis" / "scores.csv")
    assert len(synthesis) == 2 * 2 and {"forward_calls", "wall_s"} <= set(synthesis[0])
    for name in ["figures/fit.png", "synthesis/images.png"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "figures").glob("neuron_*.png"))) == 2
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert list(timings) == list(STAGES) and result.timings == {s: t["seconds"] for s, t in timings.items()}
    for record in timings.values():  # wall time and peak resident memory per stage
        assert set(record) == {"seconds", "peak_rss_mb", "peak_of"} and record["seconds"] >= 0
        assert record["peak_rss_mb"] > 50 and record["peak_of"] in ("stage", "process")  # torch alone is more


def test_a_second_run_reuses_the_model_maps_and_scores(tiny_config, tmp_path, monkeypatch):
    tiny_config["readout"] = {"name": "factorized", "max_epochs": 3}
    tiny_config["methods"] = ["parallel_backprop", "saliency"]
    spec = validate_experiment(tiny_config)
    first = run_experiment(spec, tmp_path, progress=False)
    assert first.reused == {
        "model": 0,
        "work_items_reused": 0,
        "work_items_computed": 2 + 2 * 2 * 2,
        "work_items_computed_by_rank": [10],
    }
    results = (tmp_path / "results.csv").read_bytes()
    from sharedattr.runtime.manifest import verify_manifest

    listed = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert {"results.csv", "spec.json", "report.html", "model/model.json"} <= listed.keys()
    assert verify_manifest(tmp_path) == []

    calls = []
    monkeypatch.setattr(ParallelBackprop, "attribute", lambda *a, **k: calls.append("attribute"))
    monkeypatch.setattr(FactorizedReadout, "fit", lambda *a, **k: calls.append("fit"))
    monkeypatch.setattr(GiniMetric, "__call__", lambda *a, **k: calls.append("gini"))
    second = run_experiment(spec, tmp_path, progress=False)
    assert calls == []  # nothing recomputed: no readout fit, no attribution, no metric
    assert second.reused == {
        "model": 1,
        "work_items_reused": 10,
        "work_items_computed": 0,
        "work_items_computed_by_rank": [0],
    }
    assert (tmp_path / "results.csv").read_bytes() == results

    tiny_config["metrics"].append("insertion")  # a new metric: only its scores are computed
    monkeypatch.undo()
    third = run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    assert third.reused == {
        "model": 1,
        "work_items_reused": 10,
        "work_items_computed": 4,
        "work_items_computed_by_rank": [4],
    }


def test_a_damaged_work_item_is_recomputed(tiny_config, tmp_path):
    spec = validate_experiment(tiny_config)
    run_experiment(spec, tmp_path, progress=False)
    results = (tmp_path / "results.csv").read_bytes()
    for item in (tmp_path / "work").glob("maps-*.safetensors"):
        item.write_bytes(item.read_bytes()[:40])  # truncated, as by a crash of another tool
    with pytest.warns(UserWarning, match="is damaged"):
        again = run_experiment(spec, tmp_path, progress=False)
    assert again.reused["work_items_computed"] == 2
    assert (tmp_path / "results.csv").read_bytes() == results


def test_compare_returns_the_tidy_table_for_a_fitted_model(tiny_config, tiny_data, tmp_path):
    run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    model = sharedattr.load_model(tmp_path / "model")
    table = sharedattr.compare(
        model,
        tiny_data / "stimuli" / "manifest.csv",
        neurons=["limbs", 2],
        methods=["parallel_backprop", {"name": "saliency", "abs": False}],
        metrics=["gini", {"name": "deletion", "steps": 4}, "relevance_mass"],
        preferred_category="bodies",
        drivers_per_neuron=2,
    )
    assert list(table.columns) == ["pair", *RESULT_COLUMNS]
    assert len(table) == 2 * 2 * 2 * 2 * 3  # neurons × drivers × methods × images × metrics
    assert set(table["neuron"]) == {"limbs", "body"}
    assert (table["driver_category"] == "objects").all() and table["reference"].str.startswith("bodies_").all()
    with pytest.raises(SpecError, match=r"methods\[1\] \(integrated_gradients\).n_steps"):
        sharedattr.compare(
            model,
            tiny_data / "stimuli" / "manifest.csv",
            methods=["saliency", {"name": "integrated_gradients", "n_steps": 0}],
        )
    with pytest.raises(UserError, match="unknown neuron"):
        sharedattr.compare(model, tiny_data / "stimuli" / "manifest.csv", neurons=["V4_unit_9"])


def test_compare_explains_the_pairs_it_is_given_with_their_similarity(tiny_config, tiny_data, tmp_path):
    run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    model = sharedattr.load_model(tmp_path / "model")
    manifest = tiny_data / "stimuli" / "manifest.csv"
    matched = sharedattr.compare(
        model,
        manifest,
        neurons=["head"],
        methods=["saliency"],
        metrics=["gini"],
        drivers_per_neuron=2,
        on_reference=False,
    )
    first = matched.iloc[0]
    given = [("head", first["driver"], first["reference"]), (1, "objects_0000", "bodies_0003")]
    table = sharedattr.compare(model, manifest, methods=["saliency"], metrics=["gini"], pairs=given, on_reference=False)
    assert list(zip(table["neuron"], table["driver"], table["reference"])) == [
        ("head", first["driver"], first["reference"]),
        (model.neuron_ids[1], "objects_0000", "bodies_0003"),
    ]
    assert table["similarity"].iloc[0] == pytest.approx(first["similarity"], rel=1e-5)  # the matcher's own score
    assert table["value"].iloc[0] == pytest.approx(first["value"])  # the same map
    with pytest.raises(UserError, match=r"pairs\[0\]: unknown stimulus id\(s\) nope.*pairs\[1\]: unknown neuron 'V9'"):
        sharedattr.compare(
            model, manifest, pairs=[("head", "nope", "bodies_003"), ("V9", "objects_0000", "bodies_0003")]
        )
    with pytest.raises(UserError, match="either neurons=... or pairs=..."):
        sharedattr.compare(model, manifest, neurons=["head"], pairs=given)


def test_explicit_neurons_and_unknown_ids(tiny_config, tmp_path):
    tiny_config["selection"] = {"neurons": ["head"], "drivers_per_neuron": 1}
    result = run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    assert [result.neuron_ids[n] for n in result.selected] == ["head"]
    tiny_config["selection"] = {"neurons": ["V4_unit_9"]}
    with pytest.raises(UserError, match=r"selection.neurons: unknown neuron id\(s\) \['V4_unit_9'\]"):
        run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)


def test_grey_stimuli_are_explained_as_one_channel_images(tiny_config, tiny_data):
    """The in-silico stimuli are grey and the ResNet takes RGB: saliency is |∂r/∂x| of the image's one channel
    (the backbone repeats it), not the sum over three identical copies of |∂r/∂x_c|."""
    from sharedattr.data import StimulusSet
    from sharedattr.experiment.stages import fit_experiment

    spec = validate_experiment(tiny_config)
    model = fit_experiment(spec, tiny_data.parent / "grey-fit", progress=False).fit.model
    stimuli = StimulusSet.load(spec.data.stimuli)
    assert model.in_channels == 3 and stimuli.channels_for(3) == 1
    table, maps = sharedattr.compare(
        model,
        stimuli,
        neurons=["head"],
        methods=["saliency"],
        metrics=["gini"],
        drivers_per_neuron=1,
        on_reference=False,
        return_maps=True,
    )
    driver = stimuli.ids.index(table["driver"][0])
    x = stimuli.load_images(model.input_size, 1, [driver]).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, model.neuron_ids.index("head")], x)
    scale = float(grad.abs().max())
    assert scale > 0
    torch.testing.assert_close(maps["saliency"]["driver"][0] / scale, grad.abs()[0, 0] / scale, atol=1e-5, rtol=1e-4)
    x3 = stimuli.load_images(model.input_size, 3, [driver]).requires_grad_(True)
    (grad3,) = torch.autograd.grad(model(x3)[0, model.neuron_ids.index("head")], x3)
    three_copies = grad3.abs().sum(1)[0] / scale  # what reading the grey image as RGB would give
    assert (three_copies - maps["saliency"]["driver"][0] / scale).abs().max() > 1e-2
