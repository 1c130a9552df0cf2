"""Experiment configs: the spec tree, reading TOML/YAML/JSON files, validation and the JSON Schema."""

from sharedattr.config.files import load_experiment, read_config
from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import validate_experiment

__all__ = ["ExperimentSpec", "load_experiment", "read_config", "validate_experiment"]


def __getattr__(name: str):
    """``sharedattr.config`` was the config-file module: its other names now live in :mod:`sharedattr.config.files`."""
    import warnings

    from sharedattr.config import files

    if name.startswith("__") or not hasattr(files, name):
        raise AttributeError(f"module 'sharedattr.config' has no attribute {name!r}")
    warnings.warn(
        f"sharedattr.config.{name} is deprecated: import it from sharedattr.config.files",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(files, name)
