"""The HTML report: written by every run, self-contained, escaped, and its reading derived from the numbers."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.stats import wilcoxon
from tiny_configs import tiny_experiment

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.experiment.tables import RESULT_COLUMNS, SUMMARY_COLUMNS, summarise_results
from sharedattr.report import SECTIONS, build_report, write_report
from sharedattr.report.components import Components, MethodInfo, MetricInfo
from sharedattr.report.html import environment, render
from sharedattr.report.reading import (
    NO_PAIRWISE,
    Score,
    contests,
    read_summary,
    versus_baseline,
)
from sharedattr.report.sections import Section
from sharedattr.report.selectivity import dprime, selectivity
from sharedattr.report.stats import pair_values
from sharedattr.runtime.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """One small finished run (with parallel_backprop, localisation, deletion, synthesis and figures)."""
    out = tmp_path_factory.mktemp("run")
    spec = validate_experiment(
        tiny_experiment(
            tiny_data,
            name="tiny-report",
            cache=False,
            methods=["parallel_backprop", "saliency", {"name": "integrated_gradients", "n_steps": 4}],
            metrics=["pointing_game", "gini", {"name": "deletion", "steps": 4}],
            synthesis=[{"name": "gradient_ascent", "steps": 3, "n_seeds": 2}],
            output={"figures": True, "dpi": 40},
        )
    )
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
    """The page's text without tags, scripts and styles (entities kept)."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def inline_json(html: str, element_id: str):
    """The inline JSON document of ``<script type="application/json" id="element_id">``."""
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, flags=re.S)
    assert m, f"no inline JSON {element_id}"
    return json.loads(m.group(1))


def is_png(b64: str) -> bool:
    return base64.b64decode(b64, validate=True).startswith(PNG_MAGIC)


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
    assert len(images) >= 2, "fit and selectivity figures"
    for s in sources:
        assert s.startswith(("data:image/png;base64,", "#")), s[:60]
    for s in images:
        assert is_png(s.removeprefix("data:image/png;base64,"))
    assert "<link" not in html
    # the only scripts: the inline data of the pairs and the explorer, and the explorer's code, inline
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="application/json" id="sa-stimuli">',
        '<script type="application/json" id="sa-explorer">',
        "<script>",
    ]
    code = (resources.files("sharedattr.report") / "templates" / "explorer.js").read_text(encoding="utf-8")
    assert f"<script>\n{code}</script>" in html, "the explorer's code, unchanged"
    pairs = read_csv(tiny_run / "pairs.csv")
    stimuli = inline_json(html, "sa-stimuli")
    assert set(stimuli) == {p[k] for p in pairs for k in ("driver", "reference")}, "each stimulus once"
    assert all(is_png(b) for b in stimuli.values())
    data = inline_json(html, "sa-explorer")
    assert [m["label"] for m in data["methods"]] == ["parallel_backprop", "saliency", "integrated_gradients"]
    assert len(data["pairs"]) == len(pairs)
    maps = [b for p in data["pairs"] for per_method in p["maps"] for b in per_method]
    assert len(maps) == len(pairs) * 3 * 2 and all(is_png(b) for b in maps), "every map once, as a PNG"


def test_report_content_follows_the_run_files(tiny_run):
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    text = text_of(html)
    pairs = read_csv(tiny_run / "pairs.csv")
    for p in pairs:
        assert p["driver"] in text and p["reference"] in text
    data = inline_json(html, "sa-explorer")
    assert [n["id"] for n in data["neurons"]] == list(dict.fromkeys(p["neuron"] for p in pairs))
    for i, n in enumerate(data["neurons"]):
        assert f'<option value="{i}">{n["id"]} (2 pairs)</option>' in html, "the explorer's neuron choice"
        assert [(data["pairs"][j]["driver"], data["pairs"][j]["reference"]) for j in n["pairs"]] == [
            (p["driver"], p["reference"]) for p in pairs if p["neuron"] == n["id"]
        ]
    for method in ("parallel_backprop", "saliency", "integrated_gradients"):
        assert method in text
    assert "Median held-out r" in text and "Total run time" in text
    assert "parallel_backprop ranks" in text and "parallel_backprop vs the best single-image baseline" in text
    assert "gradient_ascent" in text  # synthesis table
    assert "too few pairs to test: 4 nonzero differences on the 4 driver/reference pairs both methods scored" in text
    assert "Wilcoxon signed-rank test" in text and "a two-sided Wilcoxon signed-rank test needs 6" in text
    verdict = html[html.index('<div class="verdict">') : html.index("</div>", html.index('<div class="verdict">'))]
    assert "Localisation:" in verdict and "Faithfulness:" in verdict


def test_write_report_rebuilds_the_same_page(tiny_run, run_copy):
    (run_copy / "report.html").unlink()
    path = write_report(run_copy)
    assert path == run_copy / "report.html"
    assert not list(run_copy.glob(".report.html.*.tmp")), "written atomically, no temporary left"
    assert path.read_bytes() == (tiny_run / "report.html").read_bytes()  # no folder path, no time on the page


# -- hand-made per-pair values: the verdict names the winners and tests them in pairs ---------------------
N_PAIRS = 12
E = [(i - 5.5) / 100 for i in range(N_PAIRS)]  # small per-pair wiggles, -0.055 … 0.055


def result_rows(method, metric, values, higher=True, images=("driver", "reference")):
    """Tidy results.csv rows of one method and metric: ``values[i]`` on hand-made pair ``i``."""
    return [
        {
            "neuron": "n0",
            "driver": f"d{i}",
            "driver_category": "objects",
            "reference": f"r{i}",
            "rank": 0,
            "similarity": 0.5,
            "method": method,
            "image": image,
            "metric": metric,
            "value": v,
            "higher_is_better": higher,
        }
        for image in images
        for i, v in enumerate(values)
    ]


def write_results(run: Path, rows: list[dict]) -> None:
    """``rows`` as results.csv and their summary (mean ± sem, as the run computes it) as summary.csv."""
    write_csv(run / "results.csv", rows, RESULT_COLUMNS)
    write_csv(run / "summary.csv", summarise_results(rows), SUMMARY_COLUMNS)


def hand_made_results() -> list[dict]:
    """integrated_gradients wins pointing_game clearly; saliency leads deletion within noise (one NaN pair)."""
    deletion_sal = [math.nan] + [0.30 + e for e in E[1:]]
    return (
        result_rows("parallel_backprop", "pointing_game", [0.6 + e / 2 for e in E])
        + result_rows("saliency", "pointing_game", [0.4 + e for e in E])
        + result_rows("integrated_gradients", "pointing_game", [0.9 + e for e in E])
        + result_rows("parallel_backprop", "deletion", [0.5 + e for e in E], higher=False)
        + result_rows("saliency", "deletion", deletion_sal, higher=False)
        + result_rows(
            "integrated_gradients",
            "deletion",
            [0.30 + e + (0.25 if i % 2 == 0 else -0.15) for i, e in enumerate(E)],
            higher=False,
        )
    )


def test_the_verdict_names_the_metric_winners_and_tests_them_in_pairs(run_copy):
    write_results(run_copy, hand_made_results())
    html = build_report(run_copy)
    text = text_of(html)
    assert "Localisation: integrated_gradients wins" in text
    assert "Faithfulness: saliency wins" in text
    assert (
        "parallel_backprop ranks 3rd of 3 methods (mean rank 2.5 over 4 metric × image results, every metric family)"
        in text
    )
    assert (
        "parallel_backprop is better on 0 of 4 metric × image results (0 beyond noise), worse on 4 "
        "(4 beyond noise)" in text
    )
    assert (
        "pointing_game ↑ (driver maps): integrated_gradients is best (0.9 ± 0.0104), ahead of parallel_backprop "
        "(0.6 ± 0.0052) by 0.3: beyond noise (paired difference 0.3, 95% CI 0.289 to 0.311; Wilcoxon signed-rank "
        "test on the 12 driver/reference pairs both methods scored; p &lt; 0.001)."
    ) in text  # exact p = 2/4096
    assert (
        "deletion ↓ (driver maps): saliency is best (0.305 ± 0.01), ahead of integrated_gradients (0.35 ± "
        "0.0597) by 0.045: within noise (paired difference 0.0318, 95% CI -0.109 to 0.172"
    ) in text
    deletion = {
        m: [r["value"] for r in hand_made_results() if r["method"] == m and r["metric"] == "deletion"]
        for m in ("integrated_gradients", "saliency")
    }
    diffs = np.subtract(deletion["integrated_gradients"], deletion["saliency"])[1:N_PAIRS]  # pair 0: saliency's NaN
    p = wilcoxon(diffs, zero_method="wilcox").pvalue
    assert (
        f"; Wilcoxon signed-rank test on the 11 driver/reference pairs both methods scored (1 more left out: a "
        f"value is missing or not finite); p = {p:.2g})"
    ) in text
    # best per column in bold: integrated_gradients on pointing_game, saliency on deletion
    table = html[html.index("<caption>driver maps</caption>") :]
    table = table[: table.index("</table>")]
    assert "<b>0.9 ± 0.0104</b>" in table and '<b>0.305 ± 0.01 <span class="n">n=11</span></b>' in table
    assert "<b>0.6 ± " not in table


def test_the_comparison_table_reports_the_paired_test(run_copy):
    write_results(run_copy, hand_made_results())
    html = build_report(run_copy)
    section = html[html.index('<section id="reading">') :]
    section = section[: section.index("</section>")]
    assert "<h3>parallel_backprop vs the best single-image baseline</h3>" in section
    rows = re.findall(r"<tr><td>(pointing_game ↑|deletion ↓)</td><td>(driver|reference)</td>(.*?)</tr>", section)
    assert len(rows) == 4
    for metric, _, cells in rows:
        values = re.findall(r"<td[^>]*>(.*?)</td>", cells)
        baseline, pairs, p, reading = values[1], values[5], values[6], values[7]
        assert baseline == ("integrated_gradients" if metric.startswith("pointing") else "saliency")
        assert pairs == ("12" if metric.startswith("pointing") else "11"), "the NaN pair is left out"
        assert p == "&lt; 0.001" and reading == '<span class="loss">worse, beyond noise</span>'
    assert "Wilcoxon signed-rank test" in section and "too few pairs to test" in section


def test_too_few_pairs_and_a_missing_results_csv(run_copy):
    rows = [r for r in hand_made_results() if int(r["driver"][1:]) < 4]  # 4 pairs: the test cannot reach 0.05
    write_results(run_copy, rows)
    text = text_of(build_report(run_copy))
    assert (
        "ahead of parallel_backprop (0.58 ± 0.00323) by 0.28: too few pairs to test: 4 nonzero differences on "
        "the 4 driver/reference pairs both methods scored, and a two-sided Wilcoxon signed-rank test needs 6 to "
        "reach p &lt; 0.05 (paired difference 0.28, 95% CI 0.27 to 0.29)."
    ) in text
    assert "within noise" not in text.split("Who won")[-1].split("Synthesis")[0]
    (run_copy / "results.csv").unlink()
    text = text_of(build_report(run_copy))
    assert "noise cannot be judged: results.csv, with the per-pair values, is missing" in text


# -- the reading module on synthetic numbers -----------------------------------------------------
def S(method, mean, sem=0.1, metric="m", image="driver", higher=True, n=5):
    return Score(method, image, metric, mean, sem, n, higher)


def scored(per_method: dict[str, list[float]], metric="m", image="driver", higher=True):
    """Scores (mean ± sem over the finite values) and per-pair values of hand-made per-pair values."""
    rows = [
        {
            "neuron": "n",
            "driver": f"d{i}",
            "reference": "r",
            "rank": "0",
            "method": m,
            "image": image,
            "metric": metric,
            "value": v,
            "higher_is_better": higher,
        }
        for m, vs in per_method.items()
        for i, v in enumerate(vs)
    ]
    scores = [Score.from_row({k: str(v) for k, v in r.items()}) for r in summarise_results(rows)]
    return scores, pair_values({k: str(v) for k, v in r.items()} for r in rows)


PAIRWISE = Components(
    methods={
        "parallel_backprop": MethodInfo(True),
        "parallel_backprop#2": MethodInfo(True),
        "saliency": MethodInfo(False),
        "integrated_gradients": MethodInfo(False),
    }
)
FAMILIES = Components(
    metrics={
        "pointing_game": MetricInfo("localisation"),
        "deletion": MetricInfo("faithfulness"),
        "gini": MetricInfo("complexity"),
    },
    methods={"parallel_backprop": MethodInfo(True)},
)


def test_the_winner_and_a_clear_lead():
    scores, values = scored({"a": [1.0 + e for e in E], "b": [2.0 + e / 2 for e in E], "c": [0.5] * N_PAIRS})
    (c,) = contests(scores, values)
    assert [s.method for s in c.ranking] == ["b", "a", "c"]
    assert c.winner.method == "b" and c.runner_up.method == "a"
    assert c.lead() == pytest.approx(1.0)
    assert c.test.n == 12 and c.test.mean_diff == pytest.approx(1.0) and c.test.p < 0.001
    assert c.beyond_noise() is True
    assert c.ranks() == {"b": 1, "a": 2, "c": 3}


def test_a_lead_of_mixed_signs_is_within_noise():
    wiggle = [0.3 if i % 2 else -0.25 for i in range(N_PAIRS)]
    scores, values = scored({"a": [1.0] * N_PAIRS, "b": [1.0 + w for w in wiggle]})
    (c,) = contests(scores, values)
    assert c.winner.method == "b" and c.lead() == pytest.approx(0.025)
    assert c.beyond_noise() is False
    sentence = read_summary(scores, Components(), values).per_metric[0]
    assert "b is best" in sentence and "within noise" in sentence
    assert "Wilcoxon signed-rank test on the 12 driver/reference pairs both methods scored; p = " in sentence


def test_lower_is_better_ties_nan_and_no_per_pair_values():
    (c,) = contests([S("a", 1.0, higher=False), S("b", 0.2, higher=False), S("c", math.nan, higher=False)])
    assert [s.method for s in c.ranking] == ["b", "a"], "NaN means take no part"
    (tie,) = contests([S("a", 1.0), S("b", 1.0), S("c", 0.0)])
    assert tie.best == ["a", "b"] and tie.ranks() == {"a": 1, "b": 1, "c": 3}
    assert "a and b tie at 1" in read_summary([S("a", 1.0), S("b", 1.0), S("c", 0.0)]).per_metric[0]
    (untested,) = contests([S("a", 1.0, sem=math.nan), S("b", 0.0, sem=math.nan)])
    assert untested.test is None and untested.beyond_noise() is None, "without results.csv"
    assert "noise cannot be judged" in read_summary([S("a", 1.0), S("b", 0.0)]).per_metric[0]
    unpaired = read_summary([S("a", 1.0), S("b", 0.0)], values={}).per_metric[0]
    assert "no driver/reference pair has a finite value from both methods" in unpaired
    assert contests([S("a", math.nan)]) == []


def test_every_pairwise_method_is_compared_with_the_best_baseline():
    scores, values = scored(
        {
            "parallel_backprop": [0.9 + e / 2 for e in E],
            "parallel_backprop#2": [0.55 + e for e in E],
            "saliency": [0.5 + e for e in E],
            "integrated_gradients": [0.7 + e for e in E],
        }
    )
    (c,) = contests(scores, values)
    first = versus_baseline(c, "parallel_backprop", PAIRWISE, values)
    second = versus_baseline(c, "parallel_backprop#2", PAIRWISE, values)
    assert first.baseline.method == second.baseline.method == "integrated_gradients", "never another pairwise one"
    assert first.outcome == "better" and first.beyond_noise() is True
    assert second.outcome == "worse" and second.beyond_noise() is True and second.test.mean_diff < 0
    reading = read_summary(scores, PAIRWISE, values)
    assert [p.method for p in reading.pairwise] == ["parallel_backprop", "parallel_backprop#2"]
    assert reading.pairwise[0].rank.startswith("parallel_backprop ranks 1st of 4 methods")
    assert reading.pairwise[1].rank.startswith("parallel_backprop#2 ranks 3rd of 4 methods")
    assert "better on 1 of 1" in reading.pairwise[0].tally
    assert "worse on 1 (1 beyond noise)" in reading.pairwise[1].tally
    assert (
        "integrated_gradients 0.7 ± 0.0104: better by 0.2; beyond noise (paired difference 0.2, 95% CI "
        in reading.pairwise[0].sentences[0]
    )
    assert (
        "; Wilcoxon signed-rank test on the 12 driver/reference pairs both methods scored; p &lt;"
        not in reading.pairwise[0].sentences[0]
    ), "plain text: the templates escape"
    assert reading.pairwise[0].sentences[0].endswith("both methods scored; p < 0.001).")


def test_no_name_decides_what_is_pairwise():
    scores = [S("parallel_backprop", 0.9), S("my_pair", 0.8), S("saliency", 0.5)]
    plugin = Components(
        methods={"parallel_backprop": MethodInfo(False), "my_pair": MethodInfo(True), "saliency": MethodInfo(False)}
    )
    reading = read_summary(scores, plugin)
    assert [p.method for p in reading.pairwise] == ["my_pair"]
    assert reading.pairwise[0].comparisons[0].baseline.method == "parallel_backprop", "the best non-pairwise one"
    assert read_summary(scores).headline[-1] == NO_PAIRWISE, "nothing declared: nothing pairwise"


def test_headline_per_family_and_without_a_pairwise_method():
    scores = [
        S("a", 0.9, metric="pointing_game"),
        S("b", 0.1, metric="pointing_game"),
        S("a", 0.3, metric="deletion", higher=False),
        S("b", 0.1, metric="deletion", higher=False),
        S("a", 0.5, metric="gini"),
        S("b", 0.6, metric="gini"),
    ]
    headline = read_summary(scores, FAMILIES).headline
    assert headline[0].startswith("Localisation: a wins")
    assert headline[1].startswith("Faithfulness: b wins")
    assert headline[2] == NO_PAIRWISE
    only_gini = read_summary(
        [S("a", 0.5, metric="gini"), S("parallel_backprop", 0.6, metric="gini")], FAMILIES
    ).headline
    assert only_gini[0] == "Localisation: no localisation metric compared two or more methods in this run."
    assert (
        only_gini[2] == "parallel_backprop: no sharing, localisation or faithfulness metric compared it with "
        "another method."
    ), "the verdict reads the headline families only"
    detailed = read_summary([S("a", 0.5, metric="gini"), S("parallel_backprop", 0.6, metric="gini")], FAMILIES)
    assert "Against the best single-image baseline, parallel_backprop is better on 1 of 1" in detailed.pairwise[0].tally
    alone = read_summary([S("parallel_backprop", 0.6)], FAMILIES)
    assert "nothing to compare" in alone.pairwise[0].tally
    # a metric only parallel_backprop scored (single-image methods without on_reference) is not ranked
    partial = read_summary(
        [S("parallel_backprop", 0.2), S("saliency", 0.4), S("parallel_backprop", 0.9, image="reference")], FAMILIES
    )
    assert partial.pairwise[0].rank == (
        "parallel_backprop ranks 2nd of 2 methods (mean rank 2.0 over 1 metric × image result, every metric family)."
    )
    assert "only parallel_backprop has a score" in partial.per_metric[1]
    assert read_summary([]).headline == ["No metric produced a finite score, so there is no winner to report."]


def test_score_rows_parse_summary_csv_text():
    s = Score.from_row(
        {
            "method": "a",
            "image": "driver",
            "metric": "m",
            "mean": "nan",
            "sem": "",
            "n": "0",
            "higher_is_better": "False",
        }
    )
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
    pairs = [[p["neuron"], p["driver"], p["reference"]] for p in read_csv(run / "pairs.csv")]
    save_file(maps, str(run / "maps.safetensors"), metadata={"pairs_json": json.dumps(pairs)})


def test_ids_with_the_old_separators_keep_their_maps(run_copy, tiny_data):
    """`|` and `;` once separated the pairs of maps.safetensors' metadata; an id holding them lost every map."""
    neuron = read_csv(run_copy / "pairs.csv")[0]["neuron"]
    rename_neuron(run_copy, tiny_data, neuron, "a|b;c")
    html = build_report(run_copy)
    assert "does not match pairs.csv" not in html
    assert html.count("<td>a|b;c</td>") == 2 + 2  # pairs table; fit and selectivity tables
    explored = inline_json(html, "sa-explorer")
    assert explored["neurons"][0]["id"] == "a|b;c" and '<option value="0">a|b;c (2 pairs)</option>' in html
    assert all(b for i in explored["neurons"][0]["pairs"] for m in explored["pairs"][i]["maps"] for b in m)


def test_user_strings_are_escaped(run_copy, tiny_data):
    neuron = read_csv(run_copy / "pairs.csv")[0]["neuron"]
    rename_neuron(run_copy, tiny_data, neuron, "<b>x</b>")
    html = build_report(run_copy)
    assert "<b>x</b>" not in html and html.count("<script") == html.count("</script>") == 3
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "does not match pairs.csv" not in html, "the renamed run is still consistent"
    assert html.count("<td>&lt;b&gt;x&lt;/b&gt;</td>") == 2 + 2  # pairs table; fit and selectivity tables
    assert '<option value="0">&lt;b&gt;x&lt;/b&gt; (2 pairs)</option>' in html, "the explorer's neuron choice"
    assert '"neuron": "\\u003cb\\u003ex\\u003c/b\\u003e"' in html, "inline JSON escapes < and >"
    assert inline_json(html, "sa-explorer")["neurons"][0]["id"] == "<b>x</b>"


def relabel(run: Path, kind: str, old: str, new: str, **declared) -> None:
    """Call method or metric ``old`` of the run ``new`` in every file the report reads, and update what
    components.json declares for it with ``declared`` (e.g. ``pairwise=True``, ``family="localisation"``)."""
    column = "method" if kind == "methods" else "metric"
    for name in ("summary.csv", "results.csv", "methods.csv"):
        rows = read_csv(run / name)
        if rows and column in rows[0]:
            for r in rows:
                r[column] = new if r[column] == old else r[column]
            write_csv(run / name, rows, list(rows[0]))
    components = json.loads((run / "components.json").read_text())
    components[kind][new] = {**components[kind].pop(old), **declared}
    (run / "components.json").write_text(json.dumps(components))
    if kind == "methods":
        maps = load_file(str(run / "maps.safetensors"))
        with safe_open(str(run / "maps.safetensors"), framework="pt") as f:
            metadata = f.metadata()
        renamed = {
            (new if k.rsplit("/", 1)[0] == old else k.rsplit("/", 1)[0]) + "/" + k.rsplit("/", 1)[1]: v
            for k, v in maps.items()
        }
        save_file(renamed, str(run / "maps.safetensors"), metadata=metadata)


def test_hostile_neuron_ids_and_method_labels_are_escaped(run_copy, tiny_data):
    neuron = read_csv(run_copy / "pairs.csv")[0]["neuron"]
    rename_neuron(run_copy, tiny_data, neuron, "<script>alert(1)</script>")
    label = """sal&"'<>"""
    relabel(run_copy, "methods", "saliency", label)
    relabel(run_copy, "metrics", "gini", "<i>gini</i>", family="complexity")
    html = build_report(run_copy)
    assert html.count("<script") == html.count("</script>") == 3, "only the report's own scripts"
    assert "<i>gini" not in html and label not in html
    assert html.count("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>") == 2 + 2  # pairs; fit and selectivity
    assert inline_json(html, "sa-explorer")["neurons"][0]["id"] == "<script>alert(1)</script>"
    escaped = "sal&amp;&#34;&#39;&lt;&gt;"
    assert re.search(rf'<input type="checkbox" name="ex-method" value="\d" checked> {escaped}</label>', html)
    assert f"<tr><td>{escaped}</td>" in html, "score, components and timing tables"
    assert '"label": "sal\\u0026\\"\\u0027\\u003c\\u003e"' in html, "inline JSON escapes & ' < >"
    assert label in [m["label"] for m in inline_json(html, "sa-explorer")["methods"]]
    assert "&lt;i&gt;gini&lt;/i&gt; ↑" in html
    assert "does not match pairs.csv" not in html, "the relabelled run is still consistent"


def test_a_plugin_pairwise_method_is_compared_with_the_best_baseline(run_copy):
    """Pairwise is what components.json declares, whatever the label: never decided by a name prefix."""
    relabel(run_copy, "methods", "integrated_gradients", "pair_plugin", pairwise=True)
    relabel(run_copy, "methods", "parallel_backprop", "parallel_backprop", pairwise=False)
    html = build_report(run_copy)
    text = text_of(html)
    assert "<h3>pair_plugin vs the best single-image baseline</h3>" in html
    assert "parallel_backprop vs the best single-image baseline" not in html
    assert "pair_plugin ranks" in text and "parallel_backprop ranks" not in text
    section = html[
        html.index('<section id="reading">') : html.index("</section>", html.index('<section id="reading">'))
    ]
    baselines = re.findall(
        r"<tr><td>[^<]*</td><td>(?:driver|reference)</td><td[^>]*>[^<]*</td><td>([^<]*)</td>", section
    )
    assert baselines and set(baselines) <= {"parallel_backprop", "saliency"}, "the best non-pairwise method"
    assert "too few pairs to test: 4 nonzero differences on the 4 driver/reference pairs" in section  # a tiny run
    scores = html[html.index('<section id="scores">') :]
    assert '<tr class="pairwise"><td>pair_plugin</td>' in scores and "<tr><td>parallel_backprop</td>" in scores


def test_plugin_metrics_enter_the_verdict_by_their_declared_family(run_copy):
    relabel(run_copy, "metrics", "gini", "my_mass", family="localisation")
    relabel(run_copy, "metrics", "deletion", "entropy", family="other")
    html = build_report(run_copy)
    verdict = text_of(html[html.index('<div class="verdict">') : html.index("</div>", html.index('class="verdict"'))])
    assert "over pointing_game and my_mass on driver and reference maps" in verdict
    assert "entropy" not in verdict and "gini" not in verdict
    assert "Faithfulness: no faithfulness metric compared two or more methods in this run." in verdict
    table = html[html.index("<caption>driver maps</caption>") :]
    table = table[: table.index("</table>")]
    assert 'my_mass ↑<br><span class="n">localisation</span>' in table
    assert 'entropy ↓<br><span class="n">other</span>' in table
    assert "<tr><td>my_mass</td><td>localisation</td><td>↑ higher is better</td>" in html  # the components table
    assert "Could not resolve" not in html


def test_without_components_json_the_registry_resolves_the_spec(run_copy):
    (run_copy / "components.json").unlink()
    saved = json.loads((run_copy / "spec.json").read_text())
    saved["spec"]["metrics"].append({"name": "<i>gone</i>", "k": 1})  # a plugin that is not installed
    saved["spec"]["methods"].append({"name": "pairs_from_elsewhere"})
    (run_copy / "spec.json").write_text(json.dumps(saved))
    rows = read_csv(run_copy / "summary.csv")
    rows += [{**r, "metric": "<i>gone</i>"} for r in rows if r["metric"] == "gini"]
    write_csv(run_copy / "summary.csv", rows, SUMMARY_COLUMNS)
    html = build_report(run_copy)
    text = text_of(html)
    assert "parallel_backprop ranks" in text, "pairwise, as its registered class declares"
    assert "Localisation: " in text and "over pointing_game on driver and reference maps" in text
    assert '<span class="n">complexity</span>' in html and '<span class="n">faithfulness</span>' in html
    assert "This run folder has no components.json" in text
    assert "run the same config into the same folder again (it reuses every finished item)" in text
    assert "Could not resolve" in text and "&lt;i&gt;gone&lt;/i&gt;" in html and "<i>gone" not in html
    assert "method pairs_from_elsewhere (unknown method" in text
    assert '&lt;i&gt;gone&lt;/i&gt; ↑<br><span class="n">other</span>' in html


def test_a_damaged_maps_file_is_a_user_error_naming_it(run_copy):
    (run_copy / "maps.safetensors").write_bytes(b"\x00" * 12)
    with pytest.raises(UserError, match="maps.safetensors: not a readable safetensors file"):
        build_report(run_copy)


def test_a_table_that_does_not_fit_the_contract_is_a_user_error_naming_it(run_copy):
    rows = read_csv(run_copy / "pairs.csv")
    rows[0]["similarity"] = "very"
    write_csv(run_copy / "pairs.csv", rows, list(rows[0]))
    with pytest.raises(UserError, match=r"pairs\.csv: damaged \(row 2, column similarity: could not convert"):
        build_report(run_copy)
    write_csv(run_copy / "pairs.csv", [{"neuron": r["neuron"]} for r in rows], ["neuron"])
    with pytest.raises(UserError, match=r"pairs\.csv: lacks the column\(s\) driver, driver_category, reference"):
        build_report(run_copy)


def test_a_bug_in_a_section_is_not_called_a_damaged_folder(run_copy, monkeypatch):
    from sharedattr.report import sections
    from sharedattr.report.sections.view import SectionKind

    def broken(ctx):
        raise KeyError("a bug")

    monkeypatch.setattr(
        sections, "REGISTRY", (*sections.REGISTRY[:2], SectionKind("fit", "Readout fit quality", broken))
    )
    with pytest.raises(KeyError, match="a bug"):
        build_report(run_copy)


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


def timings_rows(html: str) -> dict[str, list[str]]:
    """The cells of the timings table, by stage."""
    section = html[html.index("<h2>Timings</h2>") :]
    table = section[: section.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
    cells = [[text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows]
    return {c[0]: c[1:] for c in cells if c}


def test_the_timings_show_seconds_and_peak_memory_per_stage(tiny_run):
    timings = json.loads((tiny_run / "timings.json").read_text())
    rows = timings_rows((tiny_run / "report.html").read_text(encoding="utf-8"))
    assert list(rows) == [*timings, "total"]
    for stage, record in timings.items():
        seconds, _, _, peak = rows[stage]
        assert seconds == f"{record['seconds']:.2f}"
        assert peak.rstrip("*") == f"{record['peak_rss_mb']:.0f}" and float(peak.rstrip("*")) > 0
    assert rows["total"][-1] == f"{max(r['peak_rss_mb'] for r in timings.values()):.0f}"
    assert "Peak MB: the highest resident memory" in text_of((tiny_run / "report.html").read_text(encoding="utf-8"))


def test_the_timings_show_each_metrics_scoring_time(tiny_run):
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    section = html[html.index("Scoring time per metric and method") :]
    table = section[: section.index("</table>")]
    rows = [
        [text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)]
        for r in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
    ]
    timed = list(csv.DictReader((tiny_run / "metric_times.csv").open()))
    assert timed and [r[:2] for r in rows if r] == [[t["metric"], t["method"]] for t in timed]


def test_an_old_timings_file_of_seconds_still_renders(run_copy):
    (run_copy / "timings.json").write_text(json.dumps({"fit": 1.5, "match": 0.25, "attribute": 2.0}))
    html = write_report(run_copy).read_text(encoding="utf-8")
    rows = timings_rows(html)
    assert rows["fit"][0] == "1.50" and rows["fit"][-1] == "–" and rows["total"][0] == "3.75"
    assert "Peak memory per stage was not recorded" in text_of(html)
    assert "Total run time 3.8 s" in text_of(html)


def test_a_peak_that_could_not_be_reset_is_marked(run_copy):
    timings = {"fit": {"seconds": 2.0, "peak_rss_mb": 900.4, "peak_of": "process"}, "match": 0.5}
    (run_copy / "timings.json").write_text(json.dumps(timings))
    html = write_report(run_copy).read_text(encoding="utf-8")
    rows = timings_rows(html)
    assert rows["fit"][-1] == "900*" and rows["match"][-1] == "–" and rows["total"][-1] == "900"
    assert "could not be reset at this stage" in text_of(html)


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"[1, 2]",
        b'{"fit": "fast"}',
        b'{"fit": {"peak_rss_mb": 3}}',
        b'{"fit": {"seconds": 1, "peak_of": 3}}',
    ],
)
def test_a_damaged_timings_file_is_a_one_line_user_error(run_copy, damage):
    (run_copy / "timings.json").write_bytes(damage)
    with pytest.raises(UserError, match=r"timings\.json: damaged \(.*\); run `sharedattr run` again") as err:
        build_report(run_copy)
    assert "\n" not in str(err.value)


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


# -- the templates ----------------------------------------------------------------------------------
def test_templates_ship_in_the_package_and_escape_everything():
    env = environment()
    names = env.list_templates()
    assert {"page.html.j2", "report.css", "explorer.js", *(f"{anchor}.html.j2" for anchor, _ in SECTIONS)} <= set(names)
    for name in names:
        source = env.loader.get_source(env, name)[0].replace(" ", "")
        assert "|safe" not in source and "autoescape" not in source and "Markup" not in source, name
    html = render(
        "empty.html.j2", section=Section("fit", dict(SECTIONS)["fit"]), v={"note": """<script>alert('&"')</script>"""}
    )
    assert (
        html == '<h2>Readout fit quality</h2>\n<p class="note">&lt;script&gt;alert(&#39;&amp;&#34;&#39;)'
        "&lt;/script&gt;</p>\n"
    )


def test_neuron_figure_names_never_collide():
    from sharedattr.report.figures import neuron_figure_name

    ids = ["a_b", "a/b", "a b", "a:b", "é", "e", "../x", "V4-1.2"]
    names = [neuron_figure_name(n) for n in ids]
    assert len(set(names)) == len(ids), names
    assert neuron_figure_name("a_b") == "neuron_a_b.png" and neuron_figure_name("V4-1.2") == "neuron_V4-1.2.png"
    assert all("/" not in n and n.isascii() for n in names)


def test_methods_are_named_with_their_params_and_controls_are_marked(tiny_run, run_copy):
    """Issue 28: the report says what each method is (its params that differ from the defaults, from
    components.json) and marks a control as one, by what the run recorded, not by its name."""
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    summary = html[html.index('<section id="summary">') : html.index("</section>")]
    assert "<td>integrated_gradients</td><td><code>integrated_gradients(n_steps=4)</code> " in summary
    assert (
        '<td>parallel_backprop</td><td><code>parallel_backprop()</code> <span class="n">pairwise</span></td>' in summary
    )
    scores = html[html.index('<section id="scores">') :]
    assert "<code>parallel_backprop(variant=&#34;product&#34;, sharing=&#34;dimension&#34;" in scores, "every param"
    own = "parallel_backprop without sharing (s = w: the neuron's own map on the same path)"
    params = json.loads((run_copy / "components.json").read_text())["methods"]["parallel_backprop"]["params"]
    relabel(
        run_copy,
        "methods",
        "integrated_gradients",
        "parallel_backprop#2",
        spec={"name": "parallel_backprop", "variant": "own"},
        pairwise=True,
        params={**params, "variant": "own"},
        changed=["variant"],
        control=own,
    )
    html = build_report(run_copy)
    summary = html[html.index('<section id="summary">') : html.index("</section>")]
    assert (
        '<tr class="control"><td>parallel_backprop#2</td><td><code>parallel_backprop(variant=&#34;own&#34;)</code> '
        f'<span class="n">pairwise</span> · <b>control</b>: {own.replace(chr(39), "&#39;")}</td></tr>'
    ) in summary
    assert "parallel_backprop#2 is the control of parallel_backprop" in text_of(summary)
    scores = html[html.index('<section id="scores">') :]
    assert '<tr class="pairwise"><td>parallel_backprop#2 (control)</td>' in scores


def test_the_reference_rank_is_shown_from_1_and_stored_from_0(tiny_run):
    stored = sorted({int(p["rank"]) for p in read_csv(tiny_run / "pairs.csv")})
    assert stored[0] == 0, "pairs.csv keeps the 0-based rank"
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="pairs">') :]
    section = section[: section.index("</section>")]
    shown = sorted({int(r) for r in re.findall(r'<tr><td>[^<]*</td><td class="num">(\d+)</td>', section)})
    assert shown == [r + 1 for r in stored], "1 = the most similar reference"
    assert "1 = the most similar" in section
    explored = sorted({int(r) for r in re.findall(r'"rank": ?(\d+)', html)})  # the explorer's inline pairs
    assert explored == [r + 1 for r in stored]


def test_a_negative_fev_beside_a_positive_r_is_explained(run_copy):
    rows = read_csv(run_copy / "scores.csv")
    for r in rows:
        r.update(test_r="0.5", noise_ceiling="0.8", fev="0.3")
    write_csv(run_copy / "scores.csv", rows, list(rows[0]))
    assert "FEV is negative" not in build_report(run_copy)
    rows[0].update(test_r="0.6", noise_ceiling="0.8", fev="-0.25")
    rows[1].update(test_r="-0.1", noise_ceiling="0.8", fev="-0.5")  # both negative: nothing odd
    write_csv(run_copy / "scores.csv", rows, list(rows[0]))
    text = text_of(build_report(run_copy))
    note = text[text.index("FEV is negative") :]
    assert note.startswith(f"FEV is negative while r is positive for {rows[0]['neuron']}:")
    assert rows[1]["neuron"] not in note[: note.index(":")]
    assert "ignores scale and offset" in note
