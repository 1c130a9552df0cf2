"""Errors of the environment and of damaged files: one line on stderr, exit code 2, no traceback, nothing half-written.

Each case runs the ``sharedattr`` command as a user would, in this process (:func:`cli_runner.run_cli`: the same
``main``, its exit code and what it prints), without the seconds of imports a fresh process costs.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from cli_runner import run_cli
from sharedattr.cli import main

SHIPPED = Path(__file__).parents[2] / "sharedattr" / "assets" / "insilico_cnn.safetensors"
WEIGHTS_KEY = "sharedattr_insilico_cnn"


def run_all(cases: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """``sharedattr *args`` for every case, each as the command runs (in this process: :func:`cli_runner.run_cli`),
    with a feature cache of its own in ``cwd``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHAREDATTR_CACHE", str(cwd / "cache"))
        return {name: run_cli(*args, cwd=cwd) for name, args in cases.items()}


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def config(tiny_config: dict, path: Path, **edits) -> str:
    conf = json.loads(json.dumps(tiny_config))
    for dotted, value in edits.items():
        node = conf
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(json.dumps(conf))
    return str(path)


def hostile_weights(path: Path, **architecture) -> Path:
    with safe_open(str(SHIPPED), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = json.loads(f.metadata()[WEIGHTS_KEY])
    meta["architecture"] = {**meta["architecture"], **architecture}
    save_file(tensors, str(path), metadata={WEIGHTS_KEY: json.dumps(meta)})
    return path


def test_output_folders_that_cannot_be_written(tiny_config, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    base = config(tiny_config, tmp_path / "base.json")
    cases = {
        "out is a file": ["run", base, "--out", str(a_file)],
        "out cannot be made": ["run", base, "--out", "/dev/null/run"],
        "out under an unknown user": ["run", base, "--out", "~nosuchuser-sa/run"],
        "demo with a negative count": ["demo", "--n-per-category", "-5", "--out", "o4"],
    }
    results = run_all(cases, tmp_path)
    assert_one_line(results["out is a file"], str(a_file), "is an existing file, not a folder")
    assert_one_line(results["out cannot be made"], "/dev/null/run", "Not a directory")
    assert_one_line(results["out under an unknown user"], "~nosuchuser-sa", "no user")
    demo = results["demo with a negative count"]  # argparse's own one-line usage error
    assert demo.returncode == 2 and "Traceback" not in demo.stderr and "must be at least 6" in demo.stderr
    assert a_file.read_text() == "mine\n"  # nothing was written over it
    assert not (tmp_path / "o4").exists()


def test_bad_paths_in_a_config(tiny_config, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    cases = {
        "cache_dir with NUL": [
            "run",
            config(tiny_config, tmp_path / "nul.json", cache_dir="cache\u0000x"),
            "--out",
            "o1",
        ],
        "cache_dir is a file": ["run", config(tiny_config, tmp_path / "cf.json", cache_dir=str(a_file)), "--out", "o2"],
        "input under an unknown user": [
            "run",
            config(tiny_config, tmp_path / "tilde.json", data__responses="~nosuchuser-sa/r.csv"),
            "--out",
            "o3",
        ],
    }
    results = run_all(cases, tmp_path)
    assert_one_line(results["cache_dir with NUL"], "nul.json", "cache_dir", "NUL byte")
    assert_one_line(results["cache_dir is a file"], "cf.json", "cache_dir", "is an existing file")
    assert_one_line(results["input under an unknown user"], "tilde.json", "data.responses", "no user")
    assert a_file.read_text() == "mine\n"
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def test_hostile_weights_metadata_is_refused_before_anything_is_allocated(tiny_config, tmp_path):
    backbone = {"name": "insilico_cnn", "input_size": 32}
    huge = hostile_weights(tmp_path / "huge.safetensors", channels=[32, 64, 128, 2_000_000])
    many = hostile_weights(tmp_path / "many.safetensors", channels=[4096, 4096, 4096, 4096], convs=[16, 16, 16, 16])
    typed = hostile_weights(tmp_path / "typed.safetensors", channels=["x", 64, 128, 128])
    cases = {
        name: ["run", config(tiny_config, tmp_path / f"{name}.json", backbone={**backbone, "weights_file": str(p)})]
        + ["--out", f"out-{name}", "--no-progress"]
        for name, p in {"huge": huge, "many": many, "typed": typed}.items()
    }
    results = run_all(cases, tmp_path)
    assert_one_line(results["huge"], "huge.safetensors", "architecture.channels", "between 1 and 4096")
    assert_one_line(results["many"], "many.safetensors", "parameters, more than")
    assert_one_line(results["typed"], "typed.safetensors", "architecture.channels.0")


def fake_run_folder(folder: Path, tiny_config: dict) -> Path:
    """A `run` folder in outline: its spec and an empty pairs table (the files that say which command wrote it)."""
    from sharedattr.runtime.run_files import PAIRS

    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps({"digest": "x", "spec": tiny_config}))
    (folder / PAIRS.name).write_text(",".join(PAIRS.header) + "\n")
    return folder


def vouched_for(folder: Path) -> Path:
    """``folder`` with a manifest listing its files as they are: `sharedattr report` then reads them."""
    from sharedattr.runtime.manifest import write_manifest

    write_manifest(folder)
    return folder


def test_report_on_a_damaged_run_folder(tiny_config, tmp_path):
    damage = {
        "results.csv": b"\x00\xffgarbage\n",
        "summary.csv": b'method,metric\n"open quote,1\n',
        "timings.json": b"{not json",
        "maps.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
    }
    cases = {}
    for name, data in damage.items():
        folder = fake_run_folder(tmp_path / name.replace(".", "-"), tiny_config)
        (folder / name).write_bytes(data)
        cases[name] = ["report", str(vouched_for(folder))]
    wrong_columns = fake_run_folder(tmp_path / "columns", tiny_config)
    (wrong_columns / "summary.csv").write_text("a,b\n1,2\n")
    cases["columns"] = ["report", str(vouched_for(wrong_columns))]
    results = run_all(cases, tmp_path)
    for name in damage:
        assert_one_line(results[name], name)
    assert_one_line(
        results["columns"], str(wrong_columns / "summary.csv"), "lacks the column(s) method, image, metric, mean"
    )


def test_a_full_disk_is_one_line_and_leaves_the_folder_as_it_was(tiny_config, tmp_path, capsys, monkeypatch):
    """In-process (a full disk cannot be made here): every fsync fails with ENOSPC after a finished run."""
    path = config(tiny_config, tmp_path / "c.json", output={"figures": False})
    out = tmp_path / "run"
    assert main(["run", path, "--out", str(out), "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    other = config(tiny_config, tmp_path / "c.json", output={"figures": False}, methods=["saliency"])

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["run", other, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No space left on device" in err and "free some space" in err, err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # spec.json and every result as they were; no temporary left
