"""The HTML report: written by every run, self-contained, escaped, and its reading derived from the numbers."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sharedattr.cli import main
from sharedattr.experiment.tables import SUMMARY_COLUMNS
from sharedattr.experiment.run import run_experiment
from sharedattr.report import SECTIONS, build_report, write_report
from sharedattr.report.reading import Score, contests, metric_family, read_summary, versus_baseline
from sharedattr.report.selectivity import dprime, selectivity
from sharedattr.config.validation import validate_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """One small finished run (with parallel_backprop, localisation, deletion, synthesis and figures)."""
    out = tmp_path_factory.mktemp("run")
    spec = validate_experiment({
        "name": "tiny-report", "device": "cpu", "batch_size": 16, "cache": False,
        "data": {"stimuli": str(tiny_data / "stimuli" / "manifest.csv"), "responses": str(tiny_data / "responses.csv"),
                 "preferred_category": "bodies"},
        "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
        "readout": {"name": "ridge", "folds": 3}, "matcher": "cosine",
        "selection": {"top_k": 2, "drivers_per_neuron": 2},
        "methods": ["parallel_backprop", "saliency", {"name": "integrated_gradients", "n_steps": 4}],
        "metrics": ["pointing_game", "gini", {"name": "deletion", "steps": 4}],
        "synthesis": [{"name": "gradient_ascent", "steps": 3, "n_seeds": 2}],
        "output": {"figures": True, "dpi": 40},
    })
    run_experiment(spec, out, progress=False)
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, to edit."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def text_of(html: str) -> str:
    """The page's text without tags (entities kept)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- the report of a real run -------------------------------------------------------------------
def test_every_run_writes_a_self_contained_report(tiny_run):
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h2>([^<]*)</h2>", html)
    titles = [t for _, t in SECTIONS]
    assert [h for h in headings if h in titles] == titles, "every section, in order"
    assert "http://" not in html and "https://" not in html
    assert "&lt;section" not in html and "&lt;div" not in html, "markup escaped twice"
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', html)
    images = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(images) >= 2 * 2 * 2 + 2, "pair thumbnails, map overlays, fit and selectivity figures"
    for s in sources:
        assert s.startswith(("data:image/png;base64,", "#")), s[:60]
    for s in images:
        assert base64.b64decode(s.removeprefix("data:image/png;base64,"), validate=True).startswith(PNG_MAGIC)
    assert "<script" not in html and "<link" not in html


def test_report_content_follows_the_run_files(tiny_run):
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    text = text_of(html)
    pairs = read_csv(tiny_run / "pairs.csv")
    for p in pairs:
        assert p["driver"] in text and p["reference"] in text
    for neuron in {p["neuron"] for p in pairs}:
        assert f"neuron {neuron}" in text
    for method in ("parallel_backprop", "saliency", "integrated_gradients"):
        assert method in text
    assert "Median held-out r" in text and "Total run time" in text
    assert "parallel_backprop ranks" in text and "parallel_backprop vs the best single-image baseline" in text
    assert "gradient_ascent" in text  # synthesis table
    verdict = html[html.index('<div class="verdict">'):html.index("</div>", html.index('<div class="verdict">'))]
    assert "Localisation:" in verdict and "Faithfulness:" in verdict


def test_write_report_rebuilds_the_same_page(tiny_run, run_copy):
    (run_copy / "report.html").unlink()
    path = write_report(run_copy)
    assert path == run_copy / "report.html"
    assert not list(run_copy.glob(".report.html.*.tmp")), "written atomically, no temporary left"
    rebuilt = path.read_text(encoding="utf-8")
    original = (tiny_run / "report.html").read_text(encoding="utf-8")
    strip = re.compile(r'<p class="sub">.*?</p>', re.S)  # the header names the folder
    assert strip.sub("", rebuilt) == strip.sub("", original)


# -- a hand-made summary: the verdict names the winners ------------------------------------------
def summary_row(method, image, metric, mean, sem, higher=True, n=6):
    return {"method": method, "image": image, "metric": metric, "mean": mean, "sem": sem, "n": n,
            "higher_is_better": higher}


def test_the_verdict_names_the_metric_winners_of_a_hand_made_summary(run_copy):
    rows = []
    for image in ("driver", "reference"):
        rows += [summary_row("parallel_backprop", image, "pointing_game", 0.6, 0.05),
                 summary_row("saliency", image, "pointing_game", 0.4, 0.05),
                 summary_row("integrated_gradients", image, "pointing_game", 0.9, 0.05),
                 summary_row("parallel_backprop", image, "deletion", 0.50, 0.10, higher=False),
                 summary_row("saliency", image, "deletion", 0.30, 0.10, higher=False),
                 summary_row("integrated_gradients", image, "deletion", 0.35, 0.10, higher=False)]
    write_csv(run_copy / "summary.csv", rows, SUMMARY_COLUMNS)
    html = build_report(run_copy)
    text = text_of(html)
    assert "Localisation: integrated_gradients wins" in text
    assert "Faithfulness: saliency wins" in text
    assert "parallel_backprop ranks 3rd of 3 methods (mean rank 2.5 over 4 metric × image results)" in text
    assert "parallel_backprop is better on 0 of 4 metric × image results (0 beyond noise), worse on 4" in text
    assert ("pointing_game ↑ (driver maps): integrated_gradients is best (0.9 ± 0.05), ahead of parallel_backprop "
            "(0.6 ± 0.05) by 0.3, more than the combined sem (0.0707): a clear lead.") in text
    assert ("deletion ↓ (driver maps): saliency is best (0.3 ± 0.1), ahead of integrated_gradients (0.35 ± 0.1) by "
            "0.05, within the combined sem (0.141): the difference is within noise.") in text
    # best per column in bold: integrated_gradients on pointing_game, saliency on deletion
    table = html[html.index("<caption>driver maps</caption>"):]
    table = table[:table.index("</table>")]
    assert "<b>0.9 ± 0.05</b>" in table and "<b>0.3 ± 0.1</b>" in table and "<b>0.6 ± 0.05</b>" not in table


# -- the reading module on synthetic numbers -----------------------------------------------------
def S(method, mean, sem=0.1, metric="m", image="driver", higher=True, n=5):
    return Score(method, image, metric, mean, sem, n, higher)


def test_the_winner_and_a_clear_lead():
    (c,) = contests([S("a", 1.0), S("b", 2.0), S("c", 0.5)])
    assert [s.method for s in c.ranking] == ["b", "a", "c"]
    assert c.winner.method == "b" and c.runner_up.method == "a"
    assert c.lead() == pytest.approx(1.0)
    assert c.beyond_noise() is True  # 1.0 > sqrt(0.1² + 0.1²)
    assert c.ranks() == {"b": 1, "a": 2, "c": 3}


def test_a_lead_within_the_combined_sem_is_within_noise():
    (c,) = contests([S("a", 1.0, sem=0.3), S("b", 1.2, sem=0.4)])
    assert c.winner.method == "b" and c.lead() == pytest.approx(0.2)
    assert c.beyond_noise() is False  # 0.2 < 0.5 = sqrt(0.3² + 0.4²)
    sentence = read_summary([S("a", 1.0, sem=0.3), S("b", 1.2, sem=0.4)]).per_metric[0]
    assert "b is best" in sentence and "within noise" in sentence and "0.5" in sentence


def test_lower_is_better_ties_nan_and_undefined_sem():
    (c,) = contests([S("a", 1.0, higher=False), S("b", 0.2, higher=False), S("c", math.nan, higher=False)])
    assert [s.method for s in c.ranking] == ["b", "a"], "NaN means take no part"
    (tie,) = contests([S("a", 1.0), S("b", 1.0), S("c", 0.0)])
    assert tie.best == ["a", "b"] and tie.ranks() == {"a": 1, "b": 1, "c": 3}
    assert "a and b tie at 1" in read_summary([S("a", 1.0), S("b", 1.0), S("c", 0.0)]).per_metric[0]
    (lonely,) = contests([S("a", 1.0, sem=math.nan), S("b", 0.0, sem=math.nan)])
    assert lonely.beyond_noise() is None
    assert "cannot be told" in read_summary([S("a", 1.0, sem=math.nan), S("b", 0.0, sem=math.nan)]).per_metric[0]
    assert contests([S("a", math.nan)]) == []


def test_every_parallel_backprop_variant_is_compared_with_the_best_baseline():
    scores = [S("parallel_backprop", 0.9, sem=0.01), S("parallel_backprop#2", 0.55, sem=0.1),
              S("saliency", 0.5, sem=0.1), S("integrated_gradients", 0.7, sem=0.01)]
    (c,) = contests(scores)
    first, second = versus_baseline(c, "parallel_backprop"), versus_baseline(c, "parallel_backprop#2")
    assert first.baseline.method == second.baseline.method == "integrated_gradients", "never another variant"
    assert first.outcome == "better" and first.beyond_noise() is True
    assert second.outcome == "worse" and second.beyond_noise() is True  # 0.15 > sqrt(0.1² + 0.01²)
    reading = read_summary(scores)
    assert [p.method for p in reading.pairwise] == ["parallel_backprop", "parallel_backprop#2"]
    assert reading.pairwise[0].rank.startswith("parallel_backprop ranks 1st of 4 methods")
    assert reading.pairwise[1].rank.startswith("parallel_backprop#2 ranks 3rd of 4 methods")
    assert "better on 1 of 1" in reading.pairwise[0].tally
    assert "worse on 1 (1 beyond noise)" in reading.pairwise[1].tally
    assert "integrated_gradients 0.7 ± 0.01: better by 0.2, beyond noise" in reading.pairwise[0].sentences[0]


def test_headline_per_family_and_without_parallel_backprop():
    scores = [S("a", 0.9, metric="pointing_game"), S("b", 0.1, metric="pointing_game"),
              S("a", 0.3, metric="deletion", higher=False), S("b", 0.1, metric="deletion", higher=False),
              S("a", 0.5, metric="gini"), S("b", 0.6, metric="gini")]
    headline = read_summary(scores).headline
    assert headline[0].startswith("Localisation: a wins")
    assert headline[1].startswith("Faithfulness: b wins")
    assert headline[2] == "No parallel_backprop method in this run."
    only_gini = read_summary([S("a", 0.5, metric="gini"), S("parallel_backprop", 0.6, metric="gini")]).headline
    assert only_gini[0] == "Localisation: no localisation metric compared two or more methods in this run."
    assert "Against the best single-image baseline, parallel_backprop is better on 1 of 1" in only_gini[2]
    alone = read_summary([S("parallel_backprop", 0.6)])
    assert "nothing to compare" in alone.pairwise[0].tally
    # a metric only parallel_backprop scored (single-image methods without on_reference) is not ranked
    partial = read_summary([S("parallel_backprop", 0.2), S("saliency", 0.4),
                            S("parallel_backprop", 0.9, image="reference")])
    assert partial.pairwise[0].rank == ("parallel_backprop ranks 2nd of 2 methods "
                                        "(mean rank 2.0 over 1 metric × image result).")
    assert "only parallel_backprop has a score" in partial.per_metric[1]
    assert read_summary([]).headline == ["No metric produced a finite score, so there is no winner to report."]


def test_metric_families():
    assert metric_family("pointing_game") == metric_family("quantus_relevance_mass#2") == "localisation"
    assert metric_family("deletion#2") == metric_family("insertion") == "faithfulness"
    assert metric_family("gini") == "complexity" and metric_family("my_metric") == "other"


def test_score_rows_parse_summary_csv_text():
    s = Score.from_row({"method": "a", "image": "driver", "metric": "m", "mean": "nan", "sem": "", "n": "0",
                        "higher_is_better": "False"})
    assert math.isnan(s.mean) and math.isnan(s.sem) and s.n == 0 and s.higher_is_better is False


# -- selectivity ----------------------------------------------------------------------------------
def test_selectivity_means_dprime_and_preferred_category():
    values = torch.tensor([[1.0, 0.0], [3.0, 0.5], [0.0, 2.0], [1.0, 4.0], [math.nan, 3.0]])
    categories = ["bodies", "bodies", "objects", "objects", "objects"]
    sel = selectivity(values, categories, ["n0", "n1"])
    assert sel.categories == ["bodies", "objects"] and sel.preferred == ["bodies", "objects"]
    assert sel.means[0].tolist() == pytest.approx([2.0, 0.5]) and sel.counts[0].tolist() == [2, 2]
    expected = (2.0 - 0.5) / math.sqrt((2.0 + 0.5) / 2)  # sample variances 2.0 and 0.5
    assert sel.dprime[0] == pytest.approx(expected)
    assert selectivity(values, categories, ["n0", "n1"], preferred="bodies").preferred == ["bodies", "bodies"]
    assert math.isnan(dprime(torch.tensor([1.0]).numpy(), torch.tensor([1.0, 2.0]).numpy()))


# -- escaping and missing files -------------------------------------------------------------------
def rename_neuron(run: Path, tiny_data: Path, old: str, new: str) -> None:
    """Give neuron ``old`` the id ``new`` everywhere the report reads it (responses, scores, pairs, maps)."""
    responses = run / "responses.csv"
    lines = (tiny_data / "responses.csv").read_text().splitlines()
    lines[0] = ",".join(new if h == old else h for h in lines[0].split(","))
    responses.write_text("\n".join(lines) + "\n")
    saved = json.loads((run / "spec.json").read_text())
    saved["spec"]["data"]["responses"] = str(responses)
    saved["spec"]["name"] = '<script>alert("x")</script>'
    (run / "spec.json").write_text(json.dumps(saved))
    for name in ("scores.csv", "pairs.csv"):
        rows = read_csv(run / name)
        for r in rows:
            r["neuron"] = new if r["neuron"] == old else r["neuron"]
        write_csv(run / name, rows, list(rows[0]))
    maps = load_file(str(run / "maps.safetensors"))
    pairs = ";".join(f"{p['neuron']}|{p['driver']}|{p['reference']}" for p in read_csv(run / "pairs.csv"))
    save_file(maps, str(run / "maps.safetensors"), metadata={"pairs": pairs})


def test_user_strings_are_escaped(run_copy, tiny_data):
    neuron = read_csv(run_copy / "pairs.csv")[0]["neuron"]
    rename_neuron(run_copy, tiny_data, neuron, "<b>x</b>")
    html = build_report(run_copy)
    assert "<b>x</b>" not in html and "<script>" not in html
    assert "neuron &lt;b&gt;x&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "does not match pairs.csv" not in html, "the renamed run is still consistent"
    assert html.count("<h3>neuron &lt;b&gt;x&lt;/b&gt;</h3>") == 2  # pairs and attribution maps
    assert html.count("<td>&lt;b&gt;x&lt;/b&gt;</td>") == 2  # fit and selectivity tables


def test_missing_optional_files_leave_notes(run_copy):
    for name in ("synthesis", "figures"):
        shutil.rmtree(run_copy / name)
    for name in ("maps.safetensors", "timings.json", "summary.csv", "methods.csv"):
        (run_copy / name).unlink(missing_ok=True)
    saved = json.loads((run_copy / "spec.json").read_text())
    saved["spec"]["data"]["stimuli"] = str(run_copy / "moved" / "manifest.csv")
    (run_copy / "spec.json").write_text(json.dumps(saved))
    html = write_report(run_copy).read_text(encoding="utf-8")
    text = text_of(html)
    assert "<h2>Synthesis</h2>" not in html
    assert "maps.safetensors was not written" in text and "timings.json is missing" in text
    assert "summary.csv is missing" in text and "stimulus set not found" in text
    assert "Selectivity unavailable" in text


def test_stale_maps_are_not_drawn(run_copy):
    maps = load_file(str(run_copy / "maps.safetensors"))
    save_file(maps, str(run_copy / "maps.safetensors"), metadata={"pairs": "a|b|c"})
    assert "does not match pairs.csv" in build_report(run_copy)


# -- the command line -------------------------------------------------------------------------------
def test_cli_report_rebuilds_and_prints_the_path(run_copy, capsys):
    (run_copy / "report.html").unlink()
    assert main(["report", str(run_copy)]) == 0
    assert capsys.readouterr().out.strip() == str(run_copy / "report.html")
    assert (run_copy / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_report_user_errors_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    assert f"run folder not found: {missing}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert f"run spec not found: {tmp_path / 'empty' / 'spec.json'}" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "spec.json").write_text("{not json")
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "spec.json: not a run spec" in capsys.readouterr().err


def test_cli_report_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0 and "RUN_DIR" in capsys.readouterr().out
