"""Config files: TOML, YAML and JSON load to the same spec; parse errors name file and line."""

from __future__ import annotations

import json

import pytest
import yaml

from sharedattr.config.files import load_experiment, read_config
from sharedattr.runtime.errors import ConfigError, MissingFileError, SpecError
from toml_writer import toml_text


@pytest.fixture
def written(tiny_config, tmp_path):
    paths = {
        "toml": tmp_path / "exp.toml",
        "yaml": tmp_path / "exp.yaml",
        "yml": tmp_path / "exp.yml",
        "json": tmp_path / "exp.json",
    }
    paths["toml"].write_text(toml_text(tiny_config))
    paths["yaml"].write_text(yaml.safe_dump(tiny_config))
    paths["yml"].write_text(yaml.safe_dump(tiny_config))
    paths["json"].write_text(json.dumps(tiny_config, indent=1))
    return paths


def test_all_formats_give_the_same_spec(written):
    specs = {fmt: load_experiment(path) for fmt, path in written.items()}
    digests = {spec.digest() for spec in specs.values()}
    assert len(digests) == 1
    assert specs["toml"].methods[1].params["n_steps"] == 4


@pytest.mark.parametrize(
    ("suffix", "text", "line", "fragment"),
    [
        (".toml", 'name = "x"\nseed = 0\n[data\nstimuli = "a"\n', 3, "invalid TOML"),
        (".yaml", "name: x\ndata:\n  stimuli: [a, b\nseed: 1\n", 4, "invalid YAML"),
        (".json", '{\n  "name": "x",\n  "seed": ,\n}\n', 3, "invalid JSON"),
    ],
)
def test_malformed_file_reports_file_and_line(tmp_path, suffix, text, line, fragment):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_config(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}")
    assert fragment in str(info.value)


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(MissingFileError, match="config file not found: .*nothing.toml"):
        read_config(tmp_path / "nothing.toml")


def test_unsupported_suffix_and_empty_and_non_mapping(tmp_path):
    (tmp_path / "a.ini").write_text("[x]")
    with pytest.raises(ConfigError, match="unsupported config format '.ini'"):
        read_config(tmp_path / "a.ini")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        read_config(tmp_path / "empty.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level must be a table"):
        read_config(tmp_path / "list.json")


def test_spec_errors_name_the_file(written, tiny_config):
    tiny_config["seed"] = "zero"
    written["json"].write_text(json.dumps(tiny_config))
    with pytest.raises(SpecError) as info:
        load_experiment(written["json"])
    assert str(info.value).startswith(f"invalid spec in {written['json']}: seed: Input should be a valid integer")


def test_a_top_level_key_written_under_a_table_gets_a_hint(tiny_config, tmp_path):
    """In TOML every key after a [table] header belongs to it: `matcher = {...}` after [readout] is readout.matcher.
    The error says so when the unknown key is a top-level key of the spec, and only then."""
    config = {k: v for k, v in tiny_config.items() if k not in ("readout", "matcher")}
    text = toml_text(config) + '[readout]\nname = "ridge"\nfolds = 3\nmatcher = {name = "cosine"}\nfoldz = 2\n'
    path = tmp_path / "exp.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    issues = {issue.loc: issue.message for issue in info.value.issues}
    assert issues["readout.matcher"].startswith("unknown parameter")
    assert "`matcher` is a top-level key: move it above the first [table] of the file" in issues["readout.matcher"]
    assert "top-level key" not in issues["readout.foldz"]  # not a key of the spec: no hint
    # a fixed table (pydantic's "extra" error) gets it too, and JSON, where nesting is explicit, does not
    without_output = {k: v for k, v in tiny_config.items() if k != "output"}
    path.write_text(toml_text(without_output) + "[output]\nfigures = false\nseed = 3\n")
    with pytest.raises(SpecError, match="output.seed: .*`seed` is a top-level key: move it above the first"):
        load_experiment(path)
    json_path = tmp_path / "exp.json"
    json_path.write_text(json.dumps({**tiny_config, "output": {"figures": False, "seed": 3}}))
    with pytest.raises(SpecError) as info:
        load_experiment(json_path)
    assert "top-level key" not in str(info.value)
