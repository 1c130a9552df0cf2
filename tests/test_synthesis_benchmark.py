"""benchmarks/synthesis.py's protocol: λ chosen on validation neurons, reported on disjoint held-out neurons."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sharedattr.data.insilico import neuron_population

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports benchmarks/record.py
    spec = importlib.util.spec_from_file_location("synthesis_benchmark", BENCHMARKS / "synthesis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_and_held_out_neurons_are_disjoint_and_cover_every_kind(bench):
    neurons = neuron_population(4, seed=0)
    validation, held_out = bench.split_neurons(neurons, 4, 1)
    assert len(validation) == 5 and len(held_out) == 15
    assert not {n.name for n in validation} & {n.name for n in held_out}
    kinds = {n.name.rsplit("_", 1)[0] for n in neurons}
    assert {n.name.rsplit("_", 1)[0] for n in validation} == kinds == {n.name.rsplit("_", 1)[0] for n in held_out}


def _summary(label, train, val):
    return [
        {
            "synthesizer": label,
            "evaluator": "train",
            "role": "train",
            "mean_relative": train,
            "sem_relative": 0.1,
            "n": 4,
        },
        {
            "synthesizer": label,
            "evaluator": "val-split1",
            "role": "val",
            "mean_relative": val,
            "sem_relative": 0.1,
            "n": 4,
        },
    ]


def test_lambda_is_the_one_with_the_highest_val_activation_on_the_validation_neurons(bench):
    """The rule is the val evaluators' activation, not the train model's: here the train-best run loses."""
    summary = [*_summary("egg", 0.9, 0.5), *_summary("egg#2", 1.4, 0.6), *_summary("egg#3", 1.0, 0.7)]
    chosen, text = bench.choose_lambda(
        SimpleNamespace(summary=summary), ["egg", "egg#2", "egg#3"], ["ddpm:2", "ddpm:5", "ddim:5"]
    )
    assert chosen == "ddim:5" and "ddim:5 ← chosen" in text and text.count("chosen") == 1
    summary[-1]["mean_relative"] = math.nan  # a run without a finite val activation is never chosen
    assert (
        bench.choose_lambda(
            SimpleNamespace(summary=summary), ["egg", "egg#2", "egg#3"], ["ddpm:2", "ddpm:5", "ddim:5"]
        )[0]
        == "ddpm:5"
    )


def test_several_lambdas_without_held_out_neurons_is_refused_in_one_line(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["synthesis.py", "--per-kind", "1", "--egg", "ddpm:2", "ddpm:5"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert "--val-per-kind in [1, --per-kind)" in capsys.readouterr().err


def test_the_core_protocol_has_val_seeds_task_driven_cross_models_and_a_random_floor(bench, tiny_data):
    """--train-model core: the data-driven core + attention is the train model; val evaluators are the same
    architecture with other seeds (the core's and the split's), cross ones both task-driven networks, and a floor."""
    args = SimpleNamespace(train_model="core", size=32, core_epochs=3, device="cpu", weights="insilico-v1")
    spec = bench.spec_for(tiny_data, args, [{"name": "gradient_ascent", "steps": 2}], ["body"])
    assert spec.backbone.name == "stacked_core" and spec.readout.name == "attention"
    roles = [(e.role, (e.backbone or spec.backbone).name) for e in spec.evaluators]
    assert roles == [
        ("val", "stacked_core"),
        ("val", "stacked_core"),
        ("cross", "insilico_cnn"),
        ("cross", "insilico_cnn"),
        ("floor", "insilico_cnn"),
    ]
    seeds = {e.backbone.params["seed"] for e in spec.evaluators if e.role == "val"}
    assert seeds == {1, 2} and spec.backbone.params["seed"] == 0
    assert spec.evaluators[-1].backbone.params["weights"] is None  # random features
