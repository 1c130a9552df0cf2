"""`sharedattr synthesize`: the EGG paper's protocol (train / val / cross evaluators), outputs and resume."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.synthesize import synthesize_experiment
from sharedattr.runtime.errors import SpecError
from sharedattr.synthesis.evaluation import Evaluator


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def synth_config(tiny_config):
    tiny_config["synthesis"] = [
        {"name": "gradient_ascent", "steps": 4, "n_seeds": 2},
        {"name": "gradient_ascent", "steps": 2, "n_seeds": 2, "precondition": "none"},
    ]
    tiny_config["evaluators"] = [
        {"label": "val-split1", "role": "val", "split_seed": 1},
        {
            "label": "cross-layer2",
            "role": "cross",
            "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer2", "input_size": 32},
        },
    ]
    tiny_config["output"] = {"figures": True, "dpi": 40}
    return tiny_config


def test_synthesize_scores_every_neuron_method_seed_and_evaluator(synth_config, tmp_path):
    spec = validate_experiment(synth_config)
    result = synthesize_experiment(spec, tmp_path, progress=False)
    rows = read_csv(tmp_path / "scores.csv")
    assert len(rows) == 2 * 2 * 2 * 3  # neurons × synthesizers × seeds × evaluators
    assert {r["synthesizer"] for r in rows} == {"gradient_ascent", "gradient_ascent#2"}
    assert {(r["evaluator"], r["role"]) for r in rows} == {
        ("train", "train"),
        ("val-split1", "val"),
        ("cross-layer2", "cross"),
    }
    for r in rows:
        assert float(r["best_natural"]) > 0
        assert math.isclose(float(r["relative"]), float(r["response"]) / float(r["best_natural"]), rel_tol=1e-5)
        assert float(r["forward_calls"]) > 0 and float(r["wall_s"]) > 0
    images = load_file(str(tmp_path / "images.safetensors"))
    neuron = rows[0]["neuron"]
    assert images[f"gradient_ascent/{neuron}"].shape == (2, 3, 32, 32)
    assert images[f"natural/{neuron}"].shape[1:] == (3, 32, 32)
    # the train rows are the synthesizer's own responses; the val model is a different fit
    train = {(r["neuron"], r["synthesizer"], r["seed"]): float(r["response"]) for r in rows if r["role"] == "train"}
    val = {(r["neuron"], r["synthesizer"], r["seed"]): float(r["response"]) for r in rows if r["role"] == "val"}
    assert train.keys() == val.keys() and any(abs(train[k] - val[k]) > 1e-6 for k in train)
    assert [r["evaluator"] for r in read_csv(tmp_path / "evaluators.csv")] == ["train", "val-split1", "cross-layer2"]
    summary = read_csv(tmp_path / "summary.csv")
    assert len(summary) == 2 * 3 and all(int(s["n"]) == 4 for s in summary)
    for name in ("images.png", "comparison.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "fit" / "model" / "model.json").is_file()
    assert (tmp_path / "evaluators" / "cross-layer2" / "model.json").is_file()
    assert len(result.evaluators) == 3
    # two iterative synthesizers and nothing else: no comparison at equal train activation
    assert not (tmp_path / "equal_activation.csv").exists() and not result.equal_rows
    assert "at equal train activation" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_relative_activation_is_against_the_evaluators_best_natural_image(synth_config, tmp_path):
    synth_config["synthesis"] = synth_config["synthesis"][:1]
    spec = validate_experiment(synth_config)
    result = synthesize_experiment(spec, tmp_path, progress=False)
    from sharedattr.data import StimulusSet

    stimuli = StimulusSet.load(spec.data.stimuli)
    natural = stimuli.load_images((32, 32), 3)
    for evaluator in result.evaluators:
        assert isinstance(evaluator, Evaluator)
        with torch.no_grad():
            best = evaluator.model(natural).max(0).values
        torch.testing.assert_close(evaluator.best_natural, best, atol=1e-4, rtol=1e-4)


def test_a_second_synthesize_reuses_every_item_and_evaluator(synth_config, tmp_path, monkeypatch):
    spec = validate_experiment(synth_config)
    synthesize_experiment(spec, tmp_path, progress=False)
    first = (tmp_path / "scores.csv").read_text()
    from sharedattr.synthesis import gradient_ascent

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a finished synthesis item")

    monkeypatch.setattr(gradient_ascent.GradientAscent, "synthesize", fail)
    monkeypatch.setattr("sharedattr.encoding.readouts.ridge.RidgeReadout.fit", fail)
    synthesize_experiment(spec, tmp_path, progress=False)
    second = read_csv(tmp_path / "scores.csv")
    old = read_csv_text(first)
    assert [{k: v for k, v in r.items() if k != "wall_s"} for r in second] == [
        {k: v for k, v in r.items() if k != "wall_s"} for r in old
    ]
    assert [r["wall_s"] for r in second] == [r["wall_s"] for r in old]  # the recorded cost, not a new one


def read_csv_text(text):
    return list(csv.DictReader(text.splitlines()))


@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        ({"label": "v", "role": "val"}, "training model itself"),
        ({"label": "v", "role": "val", "readout": {"name": "factorized"}}, "use role = 'cross'"),
        ({"label": "c", "role": "cross", "split_seed": 3}, "needs another backbone"),
        ({"label": "train", "role": "val", "split_seed": 3}, "not 'train'"),
        ({"label": "f", "role": "floor", "split_seed": 3}, "a 'floor' evaluator needs a backbone of its own"),
    ],
)
def test_evaluator_specs_are_checked(tiny_config, evaluator, message):
    tiny_config["evaluators"] = [evaluator]
    with pytest.raises(SpecError, match=message):
        validate_experiment(tiny_config)


def test_evaluator_component_params_are_validated_with_their_path(tiny_config):
    tiny_config["evaluators"] = [{"label": "c", "role": "cross", "readout": {"name": "ridge", "folds": 0}}]
    with pytest.raises(SpecError, match=r"evaluators\[0\]\.readout\.folds"):
        validate_experiment(tiny_config)


def test_cli_synthesize_writes_outputs_and_rejects_a_config_without_synthesizers(synth_config, tmp_path, capsys):
    import json

    synth_config["synthesis"] = synth_config["synthesis"][:1]
    synth_config["evaluators"] = synth_config["evaluators"][:1]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(synth_config))
    assert main(["synthesize", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gradient_ascent" in out and "val-split1" in out
    assert (tmp_path / "out" / "scores.csv").is_file()
    synth_config.pop("synthesis")
    config.write_text(json.dumps(synth_config))
    assert main(["synthesize", str(config), "--out", str(tmp_path / "out2"), "--no-progress"]) == 2
    assert "[[synthesis]]" in capsys.readouterr().err


# -- the comparison at equal train activation ------------------------------------------------
@pytest.fixture
def ga_and_egg(tiny_config):
    tiny_config["synthesis"] = [
        {"name": "gradient_ascent", "steps": 12, "n_seeds": 2, "lr": 0.02, "neuron_batch": 2},
        {"name": "egg", "steps": 3, "n_seeds": 2, "neuron_batch": 2},
    ]
    tiny_config["evaluators"] = [
        {"label": "val-split1", "role": "val", "split_seed": 1},
        {"label": "floor-random", "role": "floor", "backbone": {"name": "insilico_cnn", "weights": None}},
    ]
    return tiny_config


def test_gradient_ascent_is_scored_at_eggs_train_activation(ga_and_egg, tmp_path):
    """Per neuron × seed, GA's iterate at the first step its train response reaches EGG's (same seed), scored on
    every evaluator; where it never does, its last iterate, counted at its full run (right-censored)."""
    spec = validate_experiment(ga_and_egg)
    result = synthesize_experiment(spec, tmp_path, progress=False)
    rows = read_csv(tmp_path / "equal_activation.csv")
    assert len(rows) == 2 * 2 * 3  # neurons × seeds × evaluators
    assert {r["role"] for r in read_csv(tmp_path / "scores.csv")} == {"train", "val", "floor"}  # a random floor
    assert {(r["synthesizer"], r["matched_to"]) for r in rows} == {("gradient_ascent", "egg")}
    images = load_file(str(tmp_path / "images.safetensors"))
    egg_train = {(r["neuron"], r["seed"]): float(r["response"]) for r in read_csv(tmp_path / "scores.csv")}
    egg_train = {
        (r["neuron"], r["seed"]): float(r["response"])
        for r in read_csv(tmp_path / "scores.csv")
        if r["synthesizer"] == "egg" and r["role"] == "train"
    }
    for r in (r for r in rows if r["role"] == "train"):
        neuron, seed, step = r["neuron"], int(r["seed"]), int(r["step"])
        history = result.histories[f"gradient_ascent/{neuron}"][:, seed]
        target = egg_train[(neuron, r["seed"])]
        assert float(r["target"]) == pytest.approx(target, rel=1e-5, abs=1e-6)
        iterate = images[f"gradient_ascent/{neuron}/at/egg"][seed]
        if r["reached"] == "True":  # the first step at or above the target; its iterate's response is that step's
            assert history[step] >= target and (step == 0 or (history[:step] < target).all())
            assert float(r["response"]) == pytest.approx(float(history[step]), rel=1e-4, abs=1e-5)
            assert float(r["passes"]) == step + 1
        else:  # never reached: the last iterate, at the full run's cost
            assert (history < target).all() and step == len(history) == float(r["passes"])
            assert torch.equal(iterate, images[f"gradient_ascent/{neuron}"][seed])
    summary = {(s["synthesizer"], s["evaluator"]): s for s in read_csv(tmp_path / "summary.csv")}
    for evaluator in ("train", "val-split1", "floor-random"):
        row = summary[("egg", evaluator)]
        mine = [float(r["relative"]) for r in rows if r["evaluator"] == evaluator]
        assert row["equal_activation_by"] == "gradient_ascent"
        assert float(row["relative_at_equal_train"]) == pytest.approx(sum(mine) / len(mine), rel=1e-4)
        train = [r for r in rows if r["role"] == "train"]
        censored = sum(r["reached"] == "False" for r in train) / len(train)
        assert float(row["censored_rate"]) == pytest.approx(censored)
        assert summary[("gradient_ascent", evaluator)]["equal_activation_by"] == ""  # only on the matched rows
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "at equal train activation: by" in page and "% censored)" in page


def test_the_iterates_at_equal_activation_are_reused_by_a_second_run(ga_and_egg, tmp_path, monkeypatch):
    spec = validate_experiment(ga_and_egg)
    synthesize_experiment(spec, tmp_path, progress=False)
    first = read_csv(tmp_path / "equal_activation.csv")
    from sharedattr.synthesis import gradient_ascent

    def fail(*args, **kwargs):
        raise AssertionError("replayed a stored iterate")

    monkeypatch.setattr(gradient_ascent.GradientAscent, "iterates_at", fail)
    synthesize_experiment(spec, tmp_path, progress=False)
    assert read_csv(tmp_path / "equal_activation.csv") == first
