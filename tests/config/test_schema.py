"""JSON Schema export: every registered component's params, including third-party ones."""

from __future__ import annotations

import json

import jsonschema
import pytest

from sharedattr import hookimpl
from sharedattr.config.schema import experiment_json_schema
from sharedattr.plugins.hookspecs import KINDS
from sharedattr.plugins.loading import load_registry
from sharedattr.plugins.params import Params


def by_title(schema: dict) -> dict:
    """Component definitions keyed by their title, ``kind:name``."""
    return {d.get("title"): d for d in schema["$defs"].values()}


def test_schema_has_every_registered_component(registry):
    schema = experiment_json_schema(registry)
    defs = by_title(schema)
    for kind in KINDS:
        for name in registry.names(kind):
            assert f"{kind}:{name}" in defs, f"{kind}:{name} missing from schema"
    ridge = defs["readout:ridge"]
    assert ridge["properties"]["name"]["const"] == "ridge"
    assert ridge["additionalProperties"] is False
    assert {"alphas", "folds", "pooling"} <= set(ridge["properties"])
    json.dumps(schema)  # serialisable


def test_schema_includes_plugin_params():
    class Params1(Params):
        temperature: float = 1.0

    class Plugin:
        @hookimpl
        def register_readouts(self, register):
            register("softmax_pool", object, params=Params1, description="A plugin readout.")

    schema = experiment_json_schema(load_registry(extra_plugins=[("p", Plugin())]))
    assert by_title(schema)["readout:softmax_pool"]["properties"]["temperature"]["default"] == 1.0


@pytest.fixture
def validator(registry):
    return jsonschema.Draft202012Validator(experiment_json_schema(registry))


def test_schema_accepts_valid_configs(validator, tiny_config):
    validator.validate(tiny_config)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["methods"].append({"name": "saliency", "abs": "yes"}),
        lambda c: c["readout"].update(alpha=1.0),
        lambda c: c.update(matcher="cosinus"),
        lambda c: c.pop("backbone"),
    ],
)
def test_schema_rejects_what_validation_rejects(validator, tiny_config, mutate):
    mutate(tiny_config)
    assert list(validator.iter_errors(tiny_config))
