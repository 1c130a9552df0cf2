"""The base of the built-in metrics: a :class:`~sharedattr.plugins.contracts.Metric` that is a
:class:`~sharedattr.plugins.params.Configurable`, built from its validated params alone."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sharedattr.plugins.contracts import Metric
from sharedattr.plugins.params import Configurable


class ConfigurableMetric(Configurable, Metric):
    """A metric that carries its ``name``, ``params_model`` and ``description`` and keeps its validated params as
    ``self.params``: ``DeletionMetric(steps=16)`` validates the keywords against the model (whose defaults fill the
    rest), ``DeletionMetric(params)`` takes a model already validated (as the registry builds it). What it declares
    (``family``, ``requires_masks``, ...) has :class:`~sharedattr.plugins.contracts.Metric`'s defaults."""

    def __init__(self, params: BaseModel | None = None, **overrides: Any) -> None:
        self.params = self.resolve_params(params, overrides)
