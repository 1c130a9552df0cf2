"""`sharedattr synthesize` writes a report too, and `sharedattr report DIR` tells a run folder from a synthesize
folder by the files the run-folder schema names (issue 28)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.report import build_report
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.manifest import verify_manifest, write_manifest
from sharedattr.runtime.run_files import RUN_KIND, SYNTHESIZE_KIND, folder_kind


@pytest.fixture(scope="module")
def synth_dir(tiny_data, tmp_path_factory) -> Path:
    """One small finished `sharedattr synthesize` folder (one synthesizer, a val evaluator, figures on)."""
    out = tmp_path_factory.mktemp("synth")
    spec = validate_experiment(
        {
            "name": "tiny-synthesis",
            "device": "cpu",
            "batch_size": 16,
            "cache": False,
            "data": {
                "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
                "responses": str(tiny_data / "responses.csv"),
                "preferred_category": "bodies",
            },
            "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
            "readout": {"name": "ridge", "folds": 3},
            "selection": {"top_k": 2, "drivers_per_neuron": 2},
            "synthesis": [{"name": "gradient_ascent", "steps": 3, "n_seeds": 2}],
            "evaluators": [{"label": "val-split1", "role": "val", "split_seed": 1}],
            "output": {"figures": True, "dpi": 40},
        }
    )
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps(spec.model_dump(mode="json")))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["synthesize", str(config), "--out", str(out), "--no-progress"]) == 0
    assert f"report: {(out / 'report.html').resolve()}" in printed.getvalue(), "the command says where its report is"
    return out


def sections_of(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def test_synthesize_writes_a_self_contained_report(synth_dir):
    assert folder_kind(synth_dir) == SYNTHESIZE_KIND
    html = (synth_dir / "report.html").read_text(encoding="utf-8")
    assert sections_of(html) == ["overview", "synthesis"]
    assert "<h1>sharedattr synthesis report: tiny-synthesis</h1>" in html
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Synthesizers 1: gradient_ascent (steps=3, n_seeds=2" in text
    assert "Neurons synthesised 2" in text and "Seeds per neuron 2" in text and "Evaluator models 2" in text
    assert "(summary.csv; n = neurons × seeds)" in html, "the folder's own files, not synthesis/"
    assert "<td>val-split1</td><td>val</td>" in html, "the evaluators"
    figures = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]*)"[^>]*alt="([^"]*)"', html)
    assert {alt for _, alt in figures} == {"synthesis comparison", "synthesized images"}
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data, _ in figures)
    assert "(comparison.png)" in html and "synthesis/comparison.png" not in html
    assert "http://" not in html and "https://" not in html
    assert verify_manifest(synth_dir) == [], "the report is in the manifest the command wrote last"
    assert build_report(synth_dir) == html, "a rebuild gives the same page"


def test_cli_report_recognises_a_synthesize_folder(synth_dir, tmp_path, capsys):
    folder = Path(shutil.copytree(synth_dir, tmp_path / "synth"))
    before = (folder / "report.html").read_bytes()
    (folder / "report.html").unlink()
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "report.html")
    assert (folder / "report.html").read_bytes() == before
    assert verify_manifest(folder) == []


def test_cli_report_refuses_a_folder_of_neither_kind(tmp_path, capsys):
    folder = tmp_path / "neither"
    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps({"digest": "x", "spec": {"name": "n"}}))
    (folder / "notes.txt").write_text("not a result\n")
    write_manifest(folder)
    assert folder_kind(folder) is None
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: not the output folder of `sharedattr run` or `sharedattr synthesize`" in err
    assert "pairs.csv" in err and "evaluators.csv" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "expected the output folder of `sharedattr run` or `sharedattr synthesize`" in capsys.readouterr().err


def test_a_damaged_synthesize_table_names_the_synthesize_command(synth_dir, tmp_path):
    folder = Path(shutil.copytree(synth_dir, tmp_path / "synth"))
    (folder / "summary.csv").write_text("synthesizer,evaluator\nonly,one,too many\n")
    with pytest.raises(UserError, match=r"summary\.csv: damaged .*; run `sharedattr synthesize` again into"):
        build_report(folder)


def test_a_run_folder_is_a_run(tmp_path):
    (tmp_path / "pairs.csv").write_text("neuron\n")
    assert folder_kind(tmp_path) == RUN_KIND
    (tmp_path / "synthesis").mkdir()
    (tmp_path / "synthesis" / "evaluators.csv").write_text("evaluator\n")
    assert folder_kind(tmp_path) == RUN_KIND, "a run's synthesis/ is part of the run"
    assert folder_kind(tmp_path / "synthesis") == SYNTHESIZE_KIND
