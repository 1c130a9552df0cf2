"""Experiment configs: the spec tree, reading TOML/YAML/JSON files, validation and the JSON Schema."""

from sharedattr.config.files import load_experiment, read_config
from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import validate_experiment

__all__ = ["ExperimentSpec", "load_experiment", "read_config", "validate_experiment"]


def __getattr__(name: str):
    """``sharedattr.config`` was the config-file module: its other names now live in :mod:`sharedattr.config.files`
    (deprecated there, see :mod:`sharedattr._deprecated`)."""
    from sharedattr._deprecated import moved_attribute

    return moved_attribute(__name__, name)
