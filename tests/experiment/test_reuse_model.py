"""`run` and `synthesize` reuse the model `sharedattr fit` saved (`--model DIR`, or `model = "DIR"` in the config):
checked against the config's data, backbone, readout and seed, loaded on every rank, never fitted, never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_cli
from sharedattr.config.files import load_experiment
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.context import RunContext
from sharedattr.experiment.run import run_experiment
from sharedattr.experiment.stages import fit_experiment, fit_for_run
from sharedattr.runtime.distributed import Ranks
from sharedattr.runtime.errors import SpecError

TABLES = ("scores.csv", "pairs.csv", "results.csv", "summary.csv")


@pytest.fixture
def small_config(tiny_config) -> dict:
    tiny_config["methods"] = ["saliency"]
    tiny_config["metrics"] = ["gini"]
    return tiny_config


@pytest.fixture
def fitted(small_config, tmp_path) -> Path:
    """The --out folder of `sharedattr fit` on ``small_config``."""
    folder = tmp_path / "fit"
    fit_experiment(validate_experiment(small_config), folder, progress=False)
    return folder


def write_config(folder: Path, config: dict, name: str = "config.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(config))
    return path


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def no_fitting(monkeypatch):
    """From here on, fitting a ridge readout fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("a readout was fitted")

    monkeypatch.setattr("sharedattr.encoding.readouts.ridge.RidgeReadout.fit", fail)
    monkeypatch.setattr("sharedattr.encoding.readouts.ridge.RidgeReadout.fit_rows", fail)


def test_run_with_model_fits_nothing_and_writes_what_a_fitting_run_writes(small_config, fitted, tmp_path, monkeypatch):
    fitting = run_experiment(validate_experiment(small_config), tmp_path / "fitting", progress=False)
    assert fitting.reused["model"] == 0
    before = snapshot(fitted)
    config = write_config(tmp_path, small_config)

    def fail(*args, **kwargs):
        raise AssertionError("a readout was fitted")

    monkeypatch.setattr("sharedattr.encoding.readouts.ridge.RidgeReadout.fit_rows", fail)
    for given in (fitted, fitted / "model"):  # the fit's --out folder, or its model folder
        out = tmp_path / f"reused-{given.name}"
        done = run_cli("run", str(config), "--out", str(out), "--model", str(given), "--no-progress")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"the model of {given.resolve()}" in done.stdout
        for name in TABLES:  # the same held-out scores, pairs, maps' scores and summary, byte for byte
            assert (out / name).read_bytes() == (tmp_path / "fitting" / name).read_bytes(), name
        assert (out / "scores.csv").read_bytes() == (fitted / "scores.csv").read_bytes()
        record = json.loads((out / "model" / "model.json").read_text())
        assert record["reused_from"] == str((fitted / "model").resolve())
        assert (out / "model" / "readout.safetensors").read_bytes() == (
            fitted / "model" / "readout.safetensors"
        ).read_bytes()
        assert json.loads((out / "spec.json").read_text())["spec"]["model"] == str(given.resolve())
        assert (out / "report.html").is_file()
    assert snapshot(fitted) == before  # read only


def test_config_model_key_is_relative_to_the_config_and_loaded_on_every_rank(
    small_config, fitted, tmp_path, no_fitting
):
    small_config["model"] = "fit"  # relative to the config file's folder, like every input path
    spec = load_experiment(write_config(tmp_path, small_config))
    assert spec.model == fitted.resolve()
    before = snapshot(fitted)
    result = run_experiment(spec, tmp_path / "run", progress=False)
    assert result.reused["model"] == 1
    assert json.loads((tmp_path / "run" / "model" / "model.json").read_text())["reused_from"] == str(
        (fitted / "model").resolve()
    )
    # a rank other than 0 of a distributed run loads the saved model itself: it writes nothing, and fits nothing
    ctx = RunContext.start(spec, ranks=Ranks(1, 2))
    experiment = fit_for_run(ctx, spec, tmp_path / "rank1", tmp_path / "rank1")
    assert (
        experiment.reused
        and experiment.fit_digest == json.loads((fitted / "model" / "model.json").read_text())["fit_digest"]
    )
    assert not (tmp_path / "rank1").exists()
    assert snapshot(fitted) == before


def test_synthesize_with_model_fits_nothing(small_config, fitted, tmp_path, no_fitting):
    small_config["synthesis"] = [{"name": "gradient_ascent", "steps": 2, "n_seeds": 1}]
    config = write_config(tmp_path, small_config)
    before = snapshot(fitted)
    out = tmp_path / "synth"
    done = run_cli("synthesize", str(config), "--out", str(out), "--model", str(fitted), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "scores.csv").is_file() and (out / "images.safetensors").is_file()
    assert (out / "fit" / "scores.csv").read_bytes() == (fitted / "scores.csv").read_bytes()
    assert json.loads((out / "fit" / "model" / "model.json").read_text())["reused_from"] == str(
        (fitted / "model").resolve()
    )
    assert snapshot(fitted) == before


def _other_split(config: dict, tmp_path: Path) -> str:
    config["data"]["split_seed"] = 3
    return "data.split_seed: 0 in the model, 3 in the config"


def _other_layer(config: dict, tmp_path: Path) -> str:
    config["backbone"]["layer"] = "layer2"
    return "backbone.layer: 'layer1' in the model, 'layer2' in the config"


def _other_readout(config: dict, tmp_path: Path) -> str:
    config["readout"]["folds"] = 4
    return "readout.folds: 3 in the model, 4 in the config"


def _other_seed(config: dict, tmp_path: Path) -> str:
    config["seed"] = 7
    return "seed: 0 in the model, 7 in the config"


@pytest.mark.parametrize(
    ("change", "kind"),
    [(_other_split, "data"), (_other_layer, "backbone"), (_other_readout, "readout"), (_other_seed, "seed")],
)
def test_a_model_of_another_fit_is_refused_with_what_differs(small_config, fitted, tmp_path, no_fitting, change, kind):
    expected = change(small_config, tmp_path)
    config = write_config(tmp_path, small_config)
    before = snapshot(fitted)
    done = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--model", str(fitted), "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr
    assert err.startswith(f"error: model: the saved model in {fitted / 'model'} was fitted with another {kind} ")
    assert expected in err
    assert "drop --model" in err and "sharedattr fit CONFIG --out DIR" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "scores.csv").exists() and snapshot(fitted) == before


def test_a_model_of_other_data_content_is_refused(small_config, tiny_data, tmp_path, monkeypatch):
    responses = tmp_path / "data" / "responses.csv"  # a copy, changed in place after the fit
    responses.parent.mkdir()
    responses.write_text((tiny_data / "responses.csv").read_text())
    small_config["data"]["responses"] = str(responses)
    fit_experiment(validate_experiment(small_config), tmp_path / "fit", progress=False)
    header, first, *rest = responses.read_text().splitlines()
    responses.write_text("\n".join([header, first.replace(",", ",9", 1), *rest]) + "\n")

    def fail(*args, **kwargs):
        raise AssertionError("a readout was fitted")

    monkeypatch.setattr("sharedattr.encoding.readouts.ridge.RidgeReadout.fit_rows", fail)
    config = write_config(tmp_path, small_config)
    done = run_cli(
        "run", str(config), "--out", str(tmp_path / "run"), "--model", str(tmp_path / "fit"), "--no-progress"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "was fitted with another data than this config's" in done.stderr
    assert "- data.responses (the content of the responses): " in done.stderr


def test_a_folder_without_a_model_or_a_missing_path_is_refused(small_config, tmp_path):
    config = write_config(tmp_path, small_config)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--model", str(empty), "--no-progress")
    assert done.returncode == 2
    assert f"model: {empty} holds no saved model: expected {empty / 'model.json'} (a model folder); " in done.stderr
    assert f"{empty / 'model' / 'model.json'} (the --out folder of `sharedattr fit`" in done.stderr
    missing = tmp_path / "nowhere"
    done = run_cli("synthesize", str(config), "--out", str(tmp_path / "s"), "--model", str(missing), "--no-progress")
    assert done.returncode == 2 and f"not found: {missing}" in done.stderr and "--model" in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists()  # refused before the folder is made
    small_config["model"] = str(missing)  # in the config: a missing input path, at its field
    with pytest.raises(SpecError, match=r"model: .*not found"):
        validate_experiment(small_config)


def test_an_out_folder_inside_the_model_folder_is_refused(small_config, fitted, tmp_path):
    config = write_config(tmp_path, small_config)
    before = snapshot(fitted)
    for out in (fitted, fitted / "again"):
        done = run_cli("run", str(config), "--out", str(out), "--model", str(fitted), "--no-progress")
        assert done.returncode == 2 and "the run's model" in done.stderr, done.stderr
    assert snapshot(fitted) == before


def rewrite_description(model_dir: Path, edit) -> None:
    """Edit a saved model's ``model.json`` and re-sign it (as a save of that description would)."""
    from sharedattr.encoding.store import CHECKSUM_FIELD, MODEL_FILE, description_checksum

    meta = json.loads((model_dir / MODEL_FILE).read_text())
    edit(meta)
    meta[CHECKSUM_FIELD] = description_checksum(meta)
    (model_dir / MODEL_FILE).write_text(json.dumps(meta))


def test_a_model_without_recorded_data_settings_is_checked_by_its_fit_digest(
    small_config, fitted, tmp_path, no_fitting
):
    rewrite_description(fitted / "model", lambda meta: [meta.pop("data"), meta.pop("seed")])
    config = write_config(tmp_path, small_config)
    done = run_cli("run", str(config), "--out", str(tmp_path / "same"), "--model", str(fitted), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]  # the same fit: reused
    small_config["data"]["test_fraction"] = 0.3
    config = write_config(tmp_path, small_config, "other.json")
    done = run_cli("run", str(config), "--out", str(tmp_path / "other"), "--model", str(fitted), "--no-progress")
    assert done.returncode == 2 and "was fitted with another data or seed than this config's" in done.stderr
    assert "(the model records no data settings to compare)" in done.stderr


def test_other_backbone_weights_or_a_damaged_readout_are_refused(small_config, fitted, tmp_path, no_fitting):
    config = write_config(tmp_path, small_config)
    description = fitted / "model" / "model.json"
    saved = description.read_bytes()
    rewrite_description(fitted / "model", lambda meta: meta.__setitem__("backbone_checksum", "0" * 64))
    done = run_cli("run", str(config), "--out", str(tmp_path / "a"), "--model", str(fitted), "--no-progress")
    assert done.returncode == 2 and "backbone: the same spec, but other weights" in done.stderr, done.stderr
    description.write_bytes(saved)
    readout = fitted / "model" / "readout.safetensors"
    readout.write_bytes(readout.read_bytes()[:-8] + b"\0" * 8)
    done = run_cli("run", str(config), "--out", str(tmp_path / "b"), "--model", str(fitted), "--no-progress")
    assert done.returncode == 2 and f"model: the saved readout {readout} is damaged" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_validate_refuses_a_model_of_another_fit_first_with_the_runs_message(small_config, fitted, tmp_path):
    """`validate` reads the saved model's model.json (no data digest, no backbone built) and refuses a model whose
    recorded settings differ, with the message `run --model` gives; an agreeing model is a passed check."""
    small_config["model"] = str(fitted)
    agreeing = run_cli("validate", str(write_config(tmp_path, small_config, "same.json")))
    assert agreeing.returncode == 0, agreeing.stderr[-2000:]
    assert f"model      {fitted / 'model'}: a saved model whose data, backbone, readout and seed settings" in (
        agreeing.stdout
    )
    expected = _other_layer(small_config, tmp_path)
    config = write_config(tmp_path, small_config, "other.json")
    validated = run_cli("validate", str(config))
    small_config.pop("model")
    ran = run_cli(
        "run",
        str(write_config(tmp_path, small_config)),
        "--out",
        str(tmp_path / "r"),
        "--model",
        str(fitted),
        "--no-progress",
    )
    assert validated.returncode == ran.returncode == 2
    assert expected in validated.stderr

    def message(stderr: str) -> list[str]:  # the error's lines, from "error: model" to its fix
        lines = stderr.splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("error: model: the saved model"))
        last = next(i for i, line in enumerate(lines) if line.startswith("drop --model"))
        return lines[first : last + 1]

    assert message(validated.stderr) == message(ran.stderr)
