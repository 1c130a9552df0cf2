"""What the commands may write: never an input, never a folder another live command writes, never a file they did not
write; a spec.json that always describes the results beside it; bounded file names and memory.

The commands run in-process (``sharedattr.cli.main``) on the tiny data set; a process is started only where one must
be alive (a lock holder, a temporary's writer).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sharedattr.cli as cli
from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.data import StimulusSet
from sharedattr.data.features import extract_features
from sharedattr.experiment.run import run_experiment
from sharedattr.experiment.stages import fit_experiment
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import FILE_NAME_CHARS, atomic_write_text
from sharedattr.runtime.memory import bytes_per_image, images_per_pass
from sharedattr.runtime.run_folder import LOCK_NAME, TEMP_SUFFIX, remove_stale_temporaries
from sharedattr.testing import TinyBackbone

pytestmark = pytest.mark.usefixtures("one_thread")


def write_config(path: Path, config: dict, **edits) -> str:
    """``config`` with top-level ``edits``, as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**config, **edits}))
    return str(path)


def one_error(capsys) -> str:
    """The one ``error:`` line the last command printed (and no traceback)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sleeper():
    """A live process (its pid names a lock holder or a temporary's writer), ended after the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


# -- fit: the output-folder check and the lock of run ---------------------------------------------------------------
def test_fit_into_its_data_folder_is_refused_and_overwrites_nothing(tiny_config, tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_data / "responses.csv", data / "scores.csv")  # responses named like fit's output
    before = (data / "scores.csv").read_bytes()
    config = dict(tiny_config, data=dict(tiny_config["data"], responses=str(data / "scores.csv")))
    path = write_config(tmp_path / "c.json", config)
    assert main(["fit", path, "--out", str(data), "--no-progress"]) == 2
    assert "contains the run's data.responses" in one_error(capsys)
    with pytest.raises(UserError, match="contains the run's data.responses"):
        fit_experiment(validate_experiment(config), data, progress=False)
    assert (data / "scores.csv").read_bytes() == before and sorted(p.name for p in data.iterdir()) == ["scores.csv"]


def test_fit_into_a_folder_a_live_run_is_writing_is_refused(tiny_config, tmp_path, capsys, sleeper, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{sleeper.pid} {socket.gethostname()}\n")  # a run in another process
    path = write_config(tmp_path / "c.json", tiny_config)
    assert main(["fit", path, "--out", str(out), "--no-progress"]) == 2
    assert f"another sharedattr run (process {sleeper.pid} " in one_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing mixed into the run's folder
    sleeper.kill()
    sleeper.wait()  # the run is gone: fit takes its lock over and holds it while it writes
    import sharedattr.experiment.stages as stages

    held = []
    write_scores = stages.write_scores
    monkeypatch.setattr(
        stages, "write_scores", lambda *a: held.append((out / LOCK_NAME).read_text().split()[0]) or write_scores(*a)
    )
    assert main(["fit", path, "--out", str(out), "--no-progress"]) == 0
    assert held == [str(os.getpid())] and not (out / LOCK_NAME).exists() and (out / "scores.csv").is_file()


# -- the config file is an input ------------------------------------------------------------------------------------
def test_a_config_inside_out_is_refused_by_every_command(tiny_config, tmp_path, capsys):
    out = tmp_path / "out"
    synthesis = [{"name": "gradient_ascent", "steps": 2}]
    inside = {
        "spec.json": write_config(out / "spec.json", tiny_config, synthesis=synthesis),  # where the run writes
        "configs/exp.json": write_config(out / "configs" / "exp.json", tiny_config, synthesis=synthesis),
    }
    before = snapshot(out)
    for name, path in inside.items():
        for command in ("run", "fit", "synthesize"):
            assert main([command, path, "--out", str(out), "--no-progress"]) == 2, (command, name)
            assert f"contains the run's config file ({out / name})" in one_error(capsys)
    assert snapshot(out) == before
    # without the config's path (the Python API), a spec.json that no run wrote is refused too
    with pytest.raises(UserError, match="holds a spec.json that is not a run spec"):
        run_experiment(validate_experiment(tiny_config), out, progress=False)
    assert snapshot(out) == before


def test_run_and_synthesize_do_not_write_into_each_others_folders(tiny_config, tmp_path, capsys):
    run_folder, synthesis_folder = tmp_path / "run", tmp_path / "synth"
    (run_folder / "model").mkdir(parents=True)
    (run_folder / "model" / "model.json").write_text("{}")
    (run_folder / "scores.csv").write_text("neuron,test_r\n")
    synthesis_folder.mkdir()
    (synthesis_folder / "evaluators.csv").write_text("evaluator,role\n")
    (synthesis_folder / "scores.csv").write_text("neuron,synthesizer\n")
    path = write_config(tmp_path / "c.json", tiny_config, synthesis=[{"name": "gradient_ascent", "steps": 2}])
    before = snapshot(tmp_path)
    assert main(["synthesize", path, "--out", str(run_folder), "--no-progress"]) == 2
    assert "holds the results of `sharedattr run` (model/model.json)" in one_error(capsys)
    for command in ("run", "fit"):
        assert main([command, path, "--out", str(synthesis_folder), "--no-progress"]) == 2
        assert "holds the results of `sharedattr synthesize` (evaluators.csv)" in one_error(capsys)
    assert snapshot(tmp_path) == before


def test_schema_output_writes_over_a_schema_only(tmp_path, capsys):
    config = tmp_path / "experiment.json"
    config.write_text('{"name": "mine"}\n')
    assert main(["schema", "--output", str(config)]) == 2
    assert "exists and is not a JSON Schema" in one_error(capsys)
    assert config.read_text() == '{"name": "mine"}\n'
    schema = tmp_path / "schema.json"
    assert main(["schema", "--output", str(schema)]) == 0
    assert main(["schema", "--output", str(schema), "--indent", "1"]) == 0  # an earlier schema: rewritten
    assert json.loads(schema.read_text())["$schema"]


# -- the demo never overwrites ----------------------------------------------------------------------------------------
@pytest.fixture
def demo(monkeypatch, capsys):
    """``sharedattr demo ARGS`` in-process, without its run (tested end to end in tests/test_cli_commands.py): returns
    the exit code, stderr and the folders the run would have written."""
    runs: list[Path] = []
    monkeypatch.setattr(cli, "_run", lambda spec, out, progress, config=None, full_summary=False: runs.append(out) or 0)

    def call(out: Path, *args: str) -> tuple[int, str, list[Path]]:
        runs.clear()
        code = main(["demo", "--out", str(out), "--n-per-category", "6", "--drivers", "1", "--no-progress", *args])
        return code, capsys.readouterr().err, list(runs)

    return call


def test_the_demo_reuses_its_own_data_and_never_overwrites_other_data(demo, tmp_path):
    out = tmp_path / "D"
    code, err, runs = demo(out)
    assert code == 0 and "written" in err and runs == [out / "results"]
    data = snapshot(out / "data")
    assert {"demo.toml", "responses.csv", "stimuli/manifest.csv"} <= data.keys()
    code, err, runs = demo(out)  # the same arguments again: the data are reused and the run resumes
    assert code == 0 and "of an earlier demo reused" in err and runs == [out / "results"]
    assert snapshot(out / "data") == data
    for args, first in [(("--n-per-category", "7"), "data/parts.csv"), (("--drivers", "2"), "data/demo.toml")]:
        code, err, runs = demo(out, *args)  # other arguments: refused, not mixed
        assert code == 2 and not runs and f"(first: {first})" in err and "choose another --out" in err
    responses = out / "data" / "responses.csv"
    responses.write_text(responses.read_text().replace("bodies_0000,", "bodies_0000,9", 1))  # the user's edit
    edited = snapshot(out / "data")
    code, err, runs = demo(out)
    assert code == 2 and not runs and "(first: data/responses.csv)" in err and str(out) in err
    assert snapshot(out / "data") == edited
    (out / "results").mkdir()
    (out / "results" / "results.csv").write_text("earlier results\n")
    (out / "data" / "stimuli" / "manifest.csv").unlink()  # data incomplete beside results: not this data's results
    responses.write_bytes(data["responses.csv"])
    code, err, runs = demo(out)
    assert code == 2 and not runs and "results holds files" in err
    assert not (out / "data" / "stimuli" / "manifest.csv").exists()
    shutil.rmtree(out / "results")  # a demo killed while writing its data: the missing files are written
    code, err, runs = demo(out)
    assert code == 0 and runs and snapshot(out / "data") == data


# -- spec.json describes the results beside it -----------------------------------------------------------------------
def test_a_failing_run_leaves_no_spec_json_describing_results_it_does_not_hold(tiny_config, tmp_path, capsys):
    config_a = write_config(tmp_path / "a.json", tiny_config)
    out = tmp_path / "run"
    assert main(["run", config_a, "--out", str(out), "--no-progress"]) == 0
    finished = snapshot(out)
    other_fit = {**tiny_config["readout"], "folds": 4}  # another model: the fit writes new scores
    bad_layer = write_config(
        tmp_path / "b.json", tiny_config, readout=other_fit, methods=["saliency", {"name": "grad_cam", "layer": "nope"}]
    )
    assert main(["run", bad_layer, "--out", str(out), "--no-progress"]) == 2
    assert "layer 'nope' is not a module" in one_error(capsys)
    assert snapshot(out) == finished  # checked on the fitted model, before anything was written
    capsys.readouterr()

    fsync = os.fsync

    def disk_full_at_the_results(fd):  # the disk fills up after the fit's files are written
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out / ".results.csv.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    config_b = write_config(tmp_path / "b.json", tiny_config, readout=other_fit, methods=["saliency"])
    os.fsync = disk_full_at_the_results
    try:
        assert main(["run", config_b, "--out", str(out), "--no-progress"]) == 2
    finally:
        os.fsync = fsync
    assert "No space left on device" in one_error(capsys)
    assert (out / "results.csv").read_bytes() == finished["results.csv"]  # A's results, B's scores: no spec vouches
    assert (out / "scores.csv").read_bytes() != finished["scores.csv"] and not (out / "spec.json").exists()
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))
    assert main(["run", config_b, "--out", str(out), "--no-progress"]) == 0  # the same run again resumes and ends
    assert (
        json.loads((out / "spec.json").read_text())["digest"]
        == validate_experiment(json.loads(Path(config_b).read_text())).digest()
    )


def test_fit_into_a_run_folder_retires_the_spec_of_another_run_only(tiny_config, tmp_path):
    spec = validate_experiment(tiny_config)
    out = tmp_path / "run"
    out.mkdir()
    saved = json.dumps({"digest": spec.digest(), "spec": {"name": "tiny"}}) + "\n"
    (out / "spec.json").write_text(saved)
    fit_experiment(spec, out, progress=False)  # the same spec: its spec.json still describes the folder
    assert (out / "spec.json").read_text() == saved
    other = validate_experiment({**tiny_config, "readout": {**tiny_config["readout"], "folds": 4}})
    fit_experiment(other, out, progress=False)  # another spec: its scores replace the run's, and so does its spec
    assert not (out / "spec.json").exists() and not list(out.glob(f".*{TEMP_SUFFIX}"))


# -- file names from ids are bounded ----------------------------------------------------------------------------------
def test_figure_names_of_long_ids_are_bounded_and_distinct(tmp_path):
    from sharedattr.report.figures import attribution_grids, neuron_figure_name
    from sharedattr.selection.matching import Pair

    long_a, long_b = "n" * 300, "n" * 299 + "m"  # the same first 299 characters
    names = {neuron_figure_name(i) for i in (long_a, long_b, "é" * 200, "a/b" * 100)}
    assert len(names) == 4 and all(len(n) <= FILE_NAME_CHARS and n.endswith(".png") for n in names)
    assert neuron_figure_name("V4-1.2") == "neuron_V4-1.2.png"  # short safe ids keep their plain name
    pairs = [Pair(0, 0, 1, 0.5, 0), Pair(1, 1, 0, 0.4, 0)]
    images = torch.rand(2, 3, 8, 8)
    maps = {"saliency": {"driver": torch.rand(2, 8, 8)}}
    paths = attribution_grids(pairs, images, images, maps, [long_a, long_b], ["s0", "s1"], tmp_path, 20)
    assert len({p.name for p in paths}) == 2 and all(p.is_file() for p in paths)
    long_file = tmp_path / ("x" * 250 + ".txt")  # a user's long file name: its temporary's name stays valid too
    atomic_write_text(long_file, "ok\n")
    assert long_file.read_text() == "ok\n"


# -- the feature cache ------------------------------------------------------------------------------------------------
def test_a_read_only_cache_folder_is_named_with_the_fix(tiny_config, tmp_path, capsys, monkeypatch):
    import builtins

    import sharedattr.data.features as features

    cache = tmp_path / "read-only-cache"
    cache.mkdir()

    def read_only(path, mode="r", *args, **kwargs):  # root ignores chmod: a read-only folder, simulated
        if "w" in mode and Path(path).parent == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(features, "open", read_only, raising=False)
    path = write_config(tmp_path / "c.json", tiny_config, cache_dir=str(cache))
    assert main(["fit", path, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    line = one_error(capsys)
    assert f"cannot write the feature cache folder {cache}: Permission denied" in line
    assert "cache_dir (or $SHAREDATTR_CACHE)" in line and TEMP_SUFFIX not in line


def test_out_is_never_the_cache_and_a_live_writers_temporary_is_kept(tiny_config, tmp_path, capsys, sleeper):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = write_config(tmp_path / "c.json", tiny_config, cache_dir=str(cache))
    assert main(["run", path, "--out", str(cache), "--no-progress"]) == 2
    assert f"output folder {cache} is the feature cache folder" in one_error(capsys)
    host, gone = socket.gethostname(), dead_pid()
    live = {  # a feature extraction and an atomic write of other processes, still running
        cache / f".features-abc.npy.{host}.{sleeper.pid}{TEMP_SUFFIX}",
        tmp_path / f".results.csv.{host}.{sleeper.pid}-k2x9_a1b{TEMP_SUFFIX}",
        tmp_path / f".scores.csv.other-host.{gone}-k2x9_a1b{TEMP_SUFFIX}",  # another host's: cannot be checked
    }
    stale = {
        cache / f".features-abc.npy.{host}.{gone}{TEMP_SUFFIX}",
        tmp_path / f".results.csv.{host}.{gone}-k2x9_a1b{TEMP_SUFFIX}",
        tmp_path / f".pairs.csv.x1y2ab{TEMP_SUFFIX}",  # an earlier version's, naming no writer
    }
    for file in live | stale:
        file.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == len(stale)
    assert all(f.exists() for f in live) and not any(f.exists() for f in stale)


def test_the_atomic_writers_temporaries_name_their_process(tmp_path, monkeypatch):
    seen = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: seen.append(Path(src).name) or replace(src, dst))
    atomic_write_text(tmp_path / "results.csv", "a\n")
    (name,) = seen
    assert name.startswith(f".results.csv.{socket.gethostname()}.{os.getpid()}-") and name.endswith(TEMP_SUFFIX)


# -- feature extraction fits the memory budget ------------------------------------------------------------------------
class WideBackbone(TinyBackbone):
    """The tiny backbone on 384 px images: a few MiB per image, so that a budget of some MiB bounds a pass."""

    input_size = (384, 384)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (6, 96, 96)


def test_feature_extraction_holds_no_more_images_per_pass_than_the_budget_allows(tiny_data):
    stimuli = StimulusSet.load(tiny_data / "stimuli" / "manifest.csv")
    backbone = WideBackbone()
    allowed = images_per_pass(16, bytes_per_image(backbone, backbone.input_size, 3))
    assert 1 < allowed < 8
    largest = [0]
    handle = backbone.register_forward_pre_hook(lambda _m, args: largest.__setitem__(0, max(largest[0], len(args[0]))))
    try:
        bounded, _ = extract_features(backbone, stimuli, batch_size=8, progress=False, memory_mb=16)
        assert largest[0] == allowed
        largest[0] = 0
        unbounded, _ = extract_features(backbone, stimuli, batch_size=8, progress=False)
        assert largest[0] == 8
    finally:
        handle.remove()
    torch.testing.assert_close(bounded, unbounded)


def test_an_image_larger_than_the_budget_is_one_line_before_the_first_batch(tiny_config, tmp_path, capsys):
    backbone = {**tiny_config["backbone"], "input_size": 256}  # ResNet-18 to layer1: about 26 MiB an image
    path = write_config(tmp_path / "c.json", tiny_config, backbone=backbone, attribution={"memory_mb": 16})
    assert main(["fit", path, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    line = one_error(capsys)
    assert "backbone.input_size: one 256×256 image costs about" in line and "attribution.memory_mb = 16 MiB" in line
