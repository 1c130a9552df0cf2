"""The tests' small experiment config over the ``tiny_data`` fixture's files, in one place: the ``tiny_config`` fixture
and the module-scoped runs the report and integrity tests build from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_BACKBONE = {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32}


def tiny_experiment(tiny_data: Path, **fields: Any) -> dict[str, Any]:
    """A fast experiment config (a dict, absolute paths) over ``tiny_data``; ``fields`` replace top-level keys."""
    return {
        "name": "tiny",
        "device": "cpu",
        "batch_size": 16,
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "preferred_category": "bodies",
        },
        "backbone": dict(TINY_BACKBONE),
        "readout": {"name": "ridge", "folds": 3},
        "matcher": "cosine",
        "selection": {"top_k": 2, "drivers_per_neuron": 2},
        "methods": ["saliency", {"name": "integrated_gradients", "n_steps": 4}],
        "metrics": ["gini", {"name": "deletion", "steps": 4}],
        "output": {"figures": False},
    } | fields
