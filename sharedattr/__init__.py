"""sharedattr: explain why a neuron responds to an image.

Encoding models (backbone + readout), shared-feature attribution by parallel backprop
(Lappe et al., NeurIPS 2024) beside Captum baselines, evaluation metrics and stimulus
synthesis, all chosen by name from a pluggy registry.
"""

from __future__ import annotations

from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "get_registry",
    "load_registry",
    "load_experiment",
    "validate_experiment",
    "ExperimentSpec",
    "experiment_json_schema",
    "load_model",
    "save_model",
    "compare",
]


def __getattr__(name: str):  # lazy: `import sharedattr` stays light for plugins
    if name in ("get_registry", "load_registry"):
        from . import registry

        return getattr(registry, name)
    if name == "load_experiment":
        from .config import load_experiment

        return load_experiment
    if name in ("validate_experiment", "ExperimentSpec"):
        from . import specs

        return getattr(specs, name)
    if name in ("load_model", "save_model"):
        from . import fitting

        return getattr(fitting, name)
    if name == "compare":
        from .comparison import compare

        return compare
    if name == "experiment_json_schema":
        from .schema import experiment_json_schema

        return experiment_json_schema
    raise AttributeError(f"module 'sharedattr' has no attribute {name!r}")
