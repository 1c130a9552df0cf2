"""Work items side by side: any number of workers gives the bits of one.

Each worker computes its items on one thread and on its own replica of the model and metrics, so hook-based
methods (guided backprop, Grad-CAM's tap on an FX-traced torchvision network), seeded stochastic methods (their
draws from torch's global generator are taken alone), pairwise methods and metrics with caches (deletion) or their
own randomised models (randomisation) must come out exactly as with one worker.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

import sharedattr
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.runtime.numerics import replicate

METHODS = [
    "saliency",
    "guided_backprop",
    {"name": "grad_cam", "layer": "layer1"},
    {"name": "smoothgrad", "samples": 2, "seed": 3},
    {"name": "gradient_shap", "n_samples": 2, "seed": 4},
    {"name": "integrated_gradients", "n_steps": 3},
    "parallel_backprop",
]
METRICS = ["gini", {"name": "deletion", "steps": 3}, {"name": "randomisation", "seed": 1}]


@pytest.fixture(scope="module")
def model(tiny_data, tmp_path_factory):
    config = {
        "name": "tiny",
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "preferred_category": "bodies",
        },
        "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
        "readout": {"name": "ridge", "folds": 3},
        "methods": ["saliency"],
        "metrics": ["gini"],
        "output": {"figures": False},
    }
    out = tmp_path_factory.mktemp("workers")
    run_experiment(validate_experiment(config), out, progress=False)
    return sharedattr.load_model(out / "model")


def test_a_replica_computes_what_its_model_computes(model):
    replica = replicate(model)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), replica(x))
    assert all(a.training == b.training for a, b in zip(model.modules(), replica.modules()))


def test_any_number_of_workers_gives_the_tables_and_maps_of_one(model, tiny_data, monkeypatch):
    results = {}
    for workers in ("1", "3"):
        monkeypatch.setenv("SHAREDATTR_WORKERS", workers)
        table, maps = sharedattr.compare(
            model,
            tiny_data / "stimuli" / "manifest.csv",
            methods=METHODS,
            metrics=METRICS,
            drivers_per_neuron=2,
            batch_size=2,  # several blocks: several items per method
            return_maps=True,
        )
        results[workers] = (table, maps)
    (one, maps_one), (three, maps_three) = results["1"], results["3"]
    timing = [c for c in one.columns if "second" in c or c.startswith("ms_")]
    assert one.drop(columns=timing).equals(three.drop(columns=timing))
    assert maps_one.keys() == maps_three.keys()
    for label in maps_one:
        for which in maps_one[label]:
            assert torch.equal(maps_one[label][which], maps_three[label][which]), (label, which)


class _Probe:
    """A metric that records how many of its calls overlap in time (and returns the map's mean). With ``meet``, its
    first two calls wait for each other (a barrier): they can pass only if they run side by side."""

    higher_is_better = True
    running = most = 0
    met: bool | None = None
    lock = threading.Lock()
    barrier: threading.Barrier | None = None

    def __call__(self, batch):
        with _Probe.lock:
            _Probe.running += 1
            _Probe.most = max(_Probe.most, _Probe.running)
            meet = _Probe.barrier is not None and _Probe.met is None
        if meet:
            try:
                _Probe.barrier.wait()
                _Probe.met = True
            except threading.BrokenBarrierError:
                _Probe.met = False
        time.sleep(0.02)
        with _Probe.lock:
            _Probe.running -= 1
        return batch.maps.flatten(1).mean(1)


@pytest.mark.parametrize("declared", [False, True])
def test_a_component_that_does_not_declare_thread_safe_runs_alone(model, tiny_data, monkeypatch, declared):
    """A plugin metric without ``thread_safe = True`` may change process-wide state (Quantus redirects stdout):
    its items run one at a time, while a declared one's run side by side (two of its calls meet at a barrier)."""
    from sharedattr.plugins.loading import load_registry

    probe = type("Probe", (_Probe,), {"thread_safe": True} if declared else {})
    _Probe.most, _Probe.met = 0, None
    _Probe.barrier = threading.Barrier(2, timeout=60) if declared else None
    registry = load_registry()
    registry.add("metric", "probe", probe, description="overlap probe")
    monkeypatch.setenv("SHAREDATTR_WORKERS", "3")
    sharedattr.compare(
        model,
        tiny_data / "stimuli" / "manifest.csv",
        methods=["saliency", "input_x_gradient", "guided_backprop"],
        metrics=["probe"],
        drivers_per_neuron=2,
        batch_size=1,
        registry=registry,
    )
    if declared:
        assert _Probe.met is True
    else:
        assert _Probe.most == 1
