"""sharedattr: explain why a neuron responds to an image.

Encoding models (backbone + readout), shared-feature attribution by parallel backprop
(Lappe et al., NeurIPS 2024) beside Captum baselines, evaluation metrics and stimulus
synthesis, all chosen by name from a pluggy registry.

The package is laid out in pipeline order: ``plugins`` (hooks, registry, params, contracts)
→ ``config`` → ``data`` → ``encoding`` → ``selection`` → ``attribution`` → ``metrics`` →
``synthesis`` → ``report`` → ``experiment`` (the commands), on a small ``runtime``. A module
imports only from the packages before it. Plugin authors use :mod:`sharedattr.plugin`.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

from sharedattr import _deprecated  # noqa: E402 - old import paths keep working, with a warning
from sharedattr.plugins.hookspecs import hookimpl  # noqa: E402

_PUBLIC = {
    "load_stimuli": "sharedattr.data.loaders",
    "load_responses": "sharedattr.data.loaders",
    "StimulusSet": "sharedattr.data.stimuli",
    "Responses": "sharedattr.data.trials",
    "get_registry": "sharedattr.plugins.loading",
    "load_registry": "sharedattr.plugins.loading",
    "load_experiment": "sharedattr.config.files",
    "validate_experiment": "sharedattr.config.validation",
    "ExperimentSpec": "sharedattr.config.spec",
    "experiment_json_schema": "sharedattr.config.schema",
    "load_model": "sharedattr.encoding.store",
    "save_model": "sharedattr.encoding.store",
    "fit_experiment": "sharedattr.experiment.stages",
    "run_experiment": "sharedattr.experiment.run",
    "synthesize_experiment": "sharedattr.experiment.synthesize",
    "compare": "sharedattr.experiment.compare",
    "Comparison": "sharedattr.experiment.compare",
    "PredictedDriversWarning": "sharedattr.experiment.compare",
}
"""Each public name, and the module it lives in (imported on first use)."""
_SUBMODULES = ("plot", "plugin", "testing")
"""The public modules: ``sharedattr.plot`` (figures of a comparison), ``sharedattr.plugin`` (the plugin API) and
``sharedattr.testing`` (conformance checks); each imported on first use."""

__all__ = ["__version__", "hookimpl", *_PUBLIC]

_deprecated.install()


def __getattr__(name: str):  # lazy: `import sharedattr` stays light for plugins
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    if name in _SUBMODULES:
        return import_module(f"sharedattr.{name}")
    raise AttributeError(f"module 'sharedattr' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (``dir(sharedattr)``, and tab completion), the lazy ones among them."""
    return sorted({*__all__, *_SUBMODULES})
