"""A run folder owns only what it writes: no inputs inside it, one run at a time, only its own temporaries swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_cli
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.run_folder import LOCK_NAME, check_out_folder, run_lock


def test_an_output_folder_may_not_be_contain_or_lie_inside_an_input(tmp_path):
    data = tmp_path / "data"
    (data / "stimuli" / "bodies").mkdir(parents=True)
    (data / "scores.csv").write_text("stimulus_id,n1\n")
    inputs = {"data.responses": data / "scores.csv", "data.stimuli": data / "stimuli"}
    with pytest.raises(UserError, match=r"output folder .*data contains the run's data.responses .*scores.csv"):
        check_out_folder(data, inputs)
    with pytest.raises(UserError, match=r"output folder .*stimuli is the run's data.stimuli"):
        check_out_folder(data / "stimuli", inputs)
    with pytest.raises(UserError, match=r"output folder .*runs lies inside the run's data.stimuli"):
        check_out_folder(data / "stimuli" / "runs", inputs)
    check_out_folder(tmp_path / "runs", inputs)  # beside the data: fine
    check_out_folder(data / "runs", {"data.responses": data / "scores.csv"})  # a file's folder is not an input


def test_a_live_run_holds_the_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(UserError, match=rf"another sharedattr run \(process {os.getpid()} .*choose another --out"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / LOCK_NAME).write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")  # what a SIGKILL leaves
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with run_lock(tmp_path, enabled=False):  # ranks other than 0 take no lock
        assert not (tmp_path / LOCK_NAME).exists()


def _sharedattr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)


def test_a_run_into_its_data_folder_is_refused_and_a_failed_run_keeps_the_folders_spec(
    tiny_config, tiny_data, tmp_path
):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(tiny_config))
    responses = (tiny_data / "responses.csv").read_bytes()
    done = _sharedattr("run", str(config), "--out", str(tiny_data), "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "output folder" in done.stderr and "contains the run's data.stimuli" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tiny_data / "responses.csv").read_bytes() == responses and not (tiny_data / LOCK_NAME).exists()

    out = tmp_path / "out"
    out.mkdir()
    (out / "spec.json").write_text('{"digest": "a finished run"}\n')
    (out / ".notes.tmp").write_text("a user's file")
    broken = dict(tiny_config, data=dict(tiny_config["data"], responses=str(tmp_path / "empty.csv")))
    (tmp_path / "empty.csv").write_text("stimulus_id,n1\n")
    config.write_text(json.dumps(broken))
    done = _sharedattr("run", str(config), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (out / "spec.json").read_text() == '{"digest": "a finished run"}\n'  # the data failed: spec untouched
    assert (out / ".notes.tmp").read_text() == "a user's file" and not (out / LOCK_NAME).exists()


def test_the_manifest_lists_what_the_folder_holds_and_finds_changes(tmp_path):
    from sharedattr.runtime.manifest import MANIFEST_NAME, verify_manifest, write_manifest
    from sharedattr.runtime.run_folder import TEMP_SUFFIX

    (tmp_path / "work").mkdir()
    (tmp_path / "results.csv").write_text("a\n1\n")
    (tmp_path / "work" / "maps-x.safetensors").write_bytes(b"1234")
    (tmp_path / LOCK_NAME).write_text("{}")
    (tmp_path / f".results.csv.abc{TEMP_SUFFIX}").write_text("partial")
    write_manifest(tmp_path)
    files = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    assert sorted(files) == ["results.csv", "work/maps-x.safetensors"]
    assert files["work/maps-x.safetensors"]["bytes"] == 4
    assert verify_manifest(tmp_path) == []
    (tmp_path / "results.csv").write_text("a\n2\n")
    (tmp_path / "work" / "maps-x.safetensors").unlink()
    assert verify_manifest(tmp_path) == ["results.csv: changed", "work/maps-x.safetensors: missing"]
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(UserError, match="no readable manifest"):
        verify_manifest(tmp_path)
