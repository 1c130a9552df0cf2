"""The command line: help everywhere, machine-readable listings, exit code 2 for user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sharedattr.cli import main
from sharedattr.plugins.hookspecs import KINDS
from sharedattr.runtime.errors import plural

COMMANDS = ["plugins", "schema", "validate", "fit", "run", "synthesize", "demo"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sharedattr")
    if command is None:
        for c in COMMANDS:
            assert c in out


def test_plugins_lists_every_kind_with_sources(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    for kind in KINDS:
        assert f"\n{plural(kind)}:" in f"\n{out}"
    assert "energies:" in out and "energys" not in out
    assert "[sharedattr-timm]" in out and "[sharedattr.encoding.readouts.ridge]" in out


def test_plugins_json(capsys):
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data["components"]) == set(KINDS)
    assert all(data["components"][kind] for kind in KINDS)
    timm = next(c for c in data["components"]["backbone"] if c["name"] == "timm")
    assert timm["plugin"] == "sharedattr-timm" and "stage" in timm["params"]["properties"]


def test_schema_command(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "sharedattr experiment"
    assert "readout:ridge" in {d.get("title") for d in schema["$defs"].values()}
    code, _, err = run_cli(capsys, "schema", "--output", str(tmp_path / "s.json"))
    assert code == 0 and json.loads((tmp_path / "s.json").read_text()) == schema


def _write(tmp_path, config, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_validate_ok(capsys, tmp_path, tiny_config):
    code, out, _ = run_cli(capsys, "validate", str(_write(tmp_path, tiny_config)))
    assert code == 0
    assert "valid experiment 'tiny'" in out and "methods[1]" in out and "integrated_gradients(n_steps=4" in out


def _expect_user_error(capsys, argv, *fragments):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_error_unknown_component(capsys, tmp_path, tiny_config):
    tiny_config["matcher"] = "cosin"
    path = _write(tmp_path, tiny_config)
    _expect_user_error(
        capsys,
        ["validate", str(path)],
        str(path),
        "matcher.name: unknown matcher 'cosin'",
        "did you mean 'cosine'?",
        "Available matchers: cosine, dot, euclidean, pearson",
    )


def test_error_wrong_type_and_unknown_param(capsys, tmp_path, tiny_config):
    tiny_config["methods"][1]["n_steps"] = "ten"
    tiny_config["metrics"][1]["stepz"] = 3
    err = _expect_user_error(
        capsys,
        ["validate", str(_write(tmp_path, tiny_config))],
        "2 problems",
        "methods[1] (integrated_gradients).n_steps: Input should be a valid integer",
    )
    assert "metrics[1] (deletion).stepz: unknown parameter" in err


def test_error_malformed_config(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nmethods = [\n')
    _expect_user_error(capsys, ["validate", str(path)], f"{path}, line 3", "invalid TOML")


def test_error_missing_config_file(capsys, tmp_path):
    _expect_user_error(
        capsys,
        ["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")],
        "config file not found",
        "missing.toml",
    )


def test_error_missing_data_file(capsys, tmp_path, tiny_config):
    tiny_config["data"]["stimuli"] = "nowhere/manifest.csv"
    _expect_user_error(
        capsys,
        ["validate", str(_write(tmp_path, tiny_config))],
        "data.stimuli",
        "file not found",
        "nowhere/manifest.csv",
        "resolved against the config file's folder",
    )


def test_error_bad_backbone_layer_at_run_time(capsys, tmp_path, tiny_config):
    tiny_config["backbone"]["layer"] = "layr1"
    _expect_user_error(
        capsys,
        ["run", str(_write(tmp_path, tiny_config)), "--out", str(tmp_path / "o"), "--no-progress"],
        "backbone.layer",
        "did you mean 'layer1'?",
    )


def test_error_broken_manifest_lists_every_row(capsys, tmp_path, tiny_data, tiny_config):
    manifest = tmp_path / "manifest.csv"
    lines = (tiny_data / "stimuli" / "manifest.csv").read_text().splitlines()
    images = tiny_data / "stimuli"
    rows = [lines[0]] + [
        ",".join([r.split(",")[0], str(images / r.split(",")[1]), r.split(",")[2], ""]) for r in lines[1:]
    ]
    rows[2] = rows[1]  # duplicate id
    rows[3] = "x_missing,missing.png,bodies,"
    manifest.write_text("\n".join(rows) + "\n")
    tiny_config["data"]["stimuli"] = str(manifest)
    err = _expect_user_error(
        capsys,
        ["run", str(_write(tmp_path, tiny_config)), "--out", str(tmp_path / "o"), "--no-progress"],
        "2 problem(s)",
    )
    assert "line 3: duplicate stimulus_id 'bodies_0000'" in err and "line 4: image not found" in err


def test_run_writes_results(capsys, tmp_path, tiny_config):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(_write(tmp_path, tiny_config)), "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    assert "saliency" in out and "deletion ↓" in out
    for name in ["spec.json", "scores.csv", "pairs.csv", "results.csv", "summary.csv", "maps.safetensors"]:
        assert (out_dir / name).is_file(), name


def test_real_process_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": 1,}')
    proc = subprocess.run([sys.executable, "-m", "sharedattr", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}, line 1") and "Traceback" not in proc.stderr
