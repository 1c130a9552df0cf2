"""The docs stay true: hook reference complete, example plugin runs, example configs match the schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

from sharedattr.config.files import read_config, tomllib
from sharedattr.config.schema import experiment_json_schema
from sharedattr.config.spec import ExperimentSpec, Strict
from sharedattr.config.validation import validate_experiment
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import KINDS
from sharedattr.plugins.loading import load_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def marked_block(path: Path, marker: str) -> str:
    """The fenced code block right after ``<!-- test: marker -->`` in ``path``."""
    text = path.read_text()
    m = re.search(rf"<!-- test: {re.escape(marker)} -->\s*```[a-z]*\n(.*?)\n```", text, re.S)
    assert m, f"{path.name}: no code block marked {marker!r}"
    return m.group(1)


# -- plugins.md ------------------------------------------------------------------------
def test_every_hook_is_documented():
    text = (DOCS / "plugins.md").read_text()
    for hook in KINDS.values():
        assert re.search(rf"^### {hook}\(register\)", text, re.M), f"hook {hook} is missing from docs/plugins.md"
    documented = set(re.findall(r"^### (register_\w+)\(", text, re.M))
    assert documented == set(KINDS.values()), f"docs name hooks that do not exist: {documented - set(KINDS.values())}"


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    source = marked_block(DOCS / "plugins.md", "example-plugin")
    path = tmp_path / "sharedattr_example.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sharedattr_example", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sharedattr_example", module)
    spec.loader.exec_module(module)
    return module


def test_example_plugin_registers_and_works(example_plugin):
    registry = load_registry(extra_plugins=[("sharedattr-example", example_plugin)])
    added = {(c.kind, c.name) for kind in KINDS for c in registry.components(kind) if c.source == "sharedattr-example"}
    kinds = {kind for kind, _ in added}
    assert {"matcher", "metric"} <= kinds, added
    for kind, name in added:
        component = registry.build(kind, name)
        if kind == "matcher":
            a, b = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
            assert component.similarity(a, b).shape == (2, 3, 5)
            b_same = a[:, :1].expand(-1, 5, -1).clone()
            b_same[:, 2] = a[:, 0] * 3
            sims = component.similarity(a[:, :1], b_same)
            assert torch.all(sims[..., 0] >= sims[..., 2])  # identical vector is at least as similar
        elif kind == "metric":
            batch = AttributionBatch(
                torch.nn.Identity(),
                torch.rand(4, 1, 6, 6),
                torch.randn(4, 6, 6),
                torch.zeros(4, dtype=torch.long),
                torch.rand(4, 6, 6) > 0.5,
            )
            scores = component(batch)
            assert scores.shape == (4,) and torch.isfinite(scores).all()
            assert isinstance(component.higher_is_better, bool)


def test_example_pyproject_declares_the_entry_point():
    pyproject = tomllib.loads(marked_block(DOCS / "plugins.md", "example-pyproject"))
    entry_points = pyproject["project"]["entry-points"]["sharedattr"]
    assert "sharedattr_example" in entry_points.values()


# -- config.md and examples ------------------------------------------------------------
def _schema_field_paths() -> set[str]:
    paths = set(ExperimentSpec.model_fields)
    for prefix, info in ExperimentSpec.model_fields.items():  # every nested table: data, selection, …
        annotation = info.annotation
        if typing.get_origin(annotation) is list:  # a list of tables: evaluators
            (annotation,) = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, Strict):
            paths |= {f"{prefix}.{f}" for f in annotation.model_fields}
    assert {"data.stimuli", "selection.top_k", "attribution.reduce", "output.dpi", "evaluators.role"} <= paths
    return paths


def test_config_reference_lists_exactly_the_real_fields():
    text = (DOCS / "config.md").read_text()
    documented = set(re.findall(r"^\|\s*`([a-z_][a-z_.]*)`\s*\|", text, re.M))
    real = _schema_field_paths()
    assert real - documented == set(), f"fields missing from docs/config.md: {sorted(real - documented)}"
    unknown = {d for d in documented if d.split(".")[0] in ExperimentSpec.model_fields} - real
    assert unknown == set(), f"docs/config.md documents fields that do not exist: {sorted(unknown)}"


def _doc_configs() -> dict[str, dict]:
    loaders = {"config-toml": tomllib.loads, "config-yaml": yaml.safe_load, "config-json": json.loads}
    return {m: load(marked_block(DOCS / "config.md", m)) for m, load in loaders.items()}


@pytest.fixture(scope="module")
def schema_validator():
    return jsonschema.Draft202012Validator(experiment_json_schema(load_registry()))


def test_config_examples_validate_and_agree(schema_validator):
    configs = _doc_configs()
    digests = set()
    for marker, data in configs.items():
        errors = [e.message for e in schema_validator.iter_errors(data)]
        assert not errors, f"{marker}: does not match the exported JSON Schema: {errors}"
        digests.add(validate_experiment(data, check_files=False, base_dir=Path("/project")).digest())
    assert len(digests) == 1, "the TOML, YAML and JSON examples in docs/config.md describe different experiments"


def _experiment_toml(doc: Path) -> str:
    """The first TOML block of ``doc`` that is an experiment config (has a [data] table)."""
    blocks = [b for b in re.findall(r"```toml\n(.*?)\n```", doc.read_text(), re.S) if "[data]" in b]
    assert blocks, f"{doc.name} has no experiment config example"
    return blocks[0]


@pytest.mark.parametrize(
    "source",
    ["README.md", "docs/fitting.md", *sorted(f"examples/{p.name}" for p in (ROOT / "examples").glob("*.toml"))],
)
def test_readme_and_example_configs_validate(schema_validator, source, tmp_path):
    if source.endswith(".md"):
        path = tmp_path / "doc.toml"
        path.write_text(_experiment_toml(ROOT / source))
    else:
        path = ROOT / source
    data = read_config(path)
    assert not [e.message for e in schema_validator.iter_errors(data)]
    validate_experiment(data, check_files=False, base_dir=path.parent)


def test_every_built_in_component_is_documented():
    from sharedattr.plugins.loading import DEFAULT_PLUGINS

    text = (DOCS / "config.md").read_text()
    section = text[text.index("## Built-in components") :]
    registry = load_registry(entry_points=False)
    for kind in KINDS:
        for component in registry.components(kind):
            assert component.source in DEFAULT_PLUGINS
            assert f"**`{component.name}`**" in section, f"built-in {kind} {component.name!r} is not in docs/config.md"
    plugins_doc = (DOCS / "plugins.md").read_text()
    for module in DEFAULT_PLUGINS:
        assert f"`{module}`" in plugins_doc, f"{module} is missing from the DEFAULT_PLUGINS list in docs/plugins.md"


# -- the public plugin API ---------------------------------------------------------------------
def test_the_public_plugin_module_exports_exactly_the_documented_names():
    import sharedattr.plugin as plugin

    table = marked_block_table(DOCS / "plugins.md", "public-plugin-api")
    assert table == list(plugin.__all__), "docs/plugins.md's table and sharedattr.plugin.__all__ differ"
    for name in table:
        assert getattr(plugin, name, None) is not None, f"sharedattr.plugin.{name} is documented but missing"


def marked_block_table(path: Path, marker: str) -> list[str]:
    """The first column (backticked names) of the markdown table right after ``<!-- test: marker -->``."""
    text = path.read_text()
    m = re.search(rf"<!-- test: {re.escape(marker)} -->\n((?:\|.*\n)+)", text)
    assert m, f"{path.name}: no table marked {marker!r}"
    return re.findall(r"^\| `([^`]+)` \|", m.group(1), re.M)


def test_docs_and_shipped_plugins_import_only_the_public_plugin_module():
    """Plugin code (the docs' example, the workspace plugins) uses sharedattr.plugin, never internal modules."""
    sources = {"docs/plugins.md example": marked_block(DOCS / "plugins.md", "example-plugin")}
    for path in sorted((ROOT / "plugins").glob("*/src/**/*.py")):
        sources[str(path.relative_to(ROOT))] = path.read_text()
    for where, source in sources.items():
        internal = [
            m
            for m in re.findall(r"^\s*(?:from|import) (sharedattr[\w.]*)", source, re.M)
            if m not in ("sharedattr.plugin", "sharedattr.testing")
        ]
        assert not internal, f"{where} imports sharedattr internals: {internal}"


def test_every_command_in_the_plugin_guide_runs_through_uv():
    text = (DOCS / "plugins.md").read_text()
    commands = re.findall(r"^\$ (.*)$", text, re.M)
    assert commands
    for command in commands:
        words = command.split("#")[0].split()
        words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value prefixes
        assert words[0] not in ("sharedattr", "pip", "python", "pytest", "torchrun"), (
            f"docs/plugins.md: write `uv run ...` / `uv pip ...`: {command}"
        )


def test_the_readme_documents_every_compare_parameter():
    import inspect

    from sharedattr.experiment.compare import compare
    from sharedattr.experiment.stages import PairSettings

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("`sharedattr.compare(model, stimuli, ...)`") :]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    named = [p.name for p in inspect.signature(compare).parameters.values() if p.kind != p.VAR_KEYWORD]
    assert documented == named + [f.name for f in dataclasses.fields(PairSettings)]  # **setting: its fields


# -- python.md --------------------------------------------------------------------------
def test_the_python_guide_runs(tmp_path, monkeypatch):
    """docs/python.md's code blocks, in order, in one namespace (a notebook session): the lab formats are made,
    loaded, fitted, compared and plotted, with no warning that the model ranked the drivers."""
    import warnings

    import matplotlib

    import sharedattr

    matplotlib.use("Agg")
    blocks = re.findall(r"^```python\n(.*?)^```", (DOCS / "python.md").read_text(), re.S | re.M)
    assert len(blocks) == 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", sharedattr.PredictedDriversWarning)
        for block in blocks:
            exec(compile(block, str(DOCS / "python.md"), "exec"), namespace)
    result, stimuli = namespace["result"], namespace["stimuli"]
    assert len(stimuli) == 24 and stimuli.category_names == ["bodies", "objects"]
    from_csv = sharedattr.load_responses(tmp_path / "lab" / "insilico" / "responses.csv", stimuli=stimuli)
    torch.testing.assert_close(namespace["recorded"].values, from_csv.values)  # the assembly holds the same responses
    assert set(result.table["neuron"]) == {"limbs", "head"}
    assert set(result.table["pair"]) == set(range(len(result.pairs)))
    assert (tmp_path / "pair.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "saliency.png").exists()
    assert "load_stimuli(category_column=...)" in (DOCS / "python.md").read_text()


def test_the_readme_links_the_python_guide():
    assert "(docs/python.md)" in (ROOT / "README.md").read_text()
