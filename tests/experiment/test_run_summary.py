"""What `sharedattr run` and `sharedattr demo` print at the end: the best methods per metric and image (a few lines),
the paths of summary.csv and report.html; `--full-summary` prints every row."""

from __future__ import annotations

import json
import math

from cli_runner import run_cli
from sharedattr.experiment.tables import SHORT_SUMMARY_ROWS, short_summary

DEMO_METHODS = [f"method{i:02d}" for i in range(11)]
DEMO_METRICS = [f"metric{i}" for i in range(9)]


def summary_rows(methods, metrics, images=("driver", "reference")) -> list[dict]:
    """Summary rows whose mean grows with the method's number (metric0 lower-is-better)."""
    return [
        {
            "method": method,
            "image": image,
            "metric": metric,
            "mean": float(i),
            "sem": 0.5,
            "n": 4,
            "higher_is_better": metric != "metric0",
        }
        for metric in metrics
        for image in images
        for i, method in enumerate(methods)
    ]


def test_the_short_summary_of_the_demo_is_one_line_per_metric_and_image():
    rows = summary_rows(DEMO_METHODS, DEMO_METRICS)
    assert len(rows) == 198  # the demo's summary.csv
    lines = short_summary(rows).splitlines()
    assert len(lines) == 2 + 9 * 2 <= 25  # header, rule, one line per metric × image
    assert lines[0].split() == ["metric", "image", "best", "second", "methods"]
    lower = next(line for line in lines if line.startswith("metric0 ↓  driver"))
    assert lower.split()[3:] == ["method00", "0.0000", "±", "0.5000", "method01", "1.0000", "±", "0.5000", "11"]
    higher = next(line for line in lines if line.startswith("metric1 ↑  reference"))
    assert higher.split()[3:] == ["method10", "10.0000", "±", "0.5000", "method09", "9.0000", "±", "0.5000", "11"]


def test_the_short_summary_is_bounded_and_skips_unscored_methods():
    rows = summary_rows(DEMO_METHODS[:3], [f"m{i:02d}" for i in range(30)])
    lines = short_summary(rows).splitlines()
    assert len(lines) == 2 + SHORT_SUMMARY_ROWS + 1
    assert lines[-1] == f"... and {60 - SHORT_SUMMARY_ROWS} more metric × image rows"
    unscored = [
        dict(r, mean=math.nan) if r["method"] != "method01" else r for r in summary_rows(DEMO_METHODS[:3], ["x"])
    ]
    lines = short_summary(unscored[:3]).splitlines()
    assert lines[2].split()[3:] == ["method01", "1.0000", "±", "0.5000", "1"]  # the only finite mean; no second
    none = short_summary([dict(r, mean=math.nan) for r in unscored[:3]]).splitlines()
    assert "(none scored)" in none[2] and none[2].split()[-1] == "0"
    assert short_summary([]) == "(no results)"


def test_run_prints_the_short_summary_and_the_paths_and_full_summary_every_row(tiny_config, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config))  # 2 methods × 2 images × 2 metrics: 8 summary rows
    out = tmp_path / "run"
    done = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert f"the full table, 8 rows: {(out / 'summary.csv').resolve()} (--full-summary prints it here)" in text
    assert f"report: {(out / 'report.html').resolve()}" in text
    table = text.split("\n\n")[0].splitlines()
    assert table[0].split() == ["metric", "image", "best", "second", "methods"] and len(table) == 2 + 4
    done = run_cli("run", str(config), "--out", str(out), "--no-progress", "--full-summary")  # resumes: no compute
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.split("\n\n")[0].splitlines()
    assert table[0].split() == ["method", "image", "metric", "mean", "±", "sem", "n"] and len(table) == 2 + 8
    assert (
        "--full-summary prints it" not in done.stdout
        and f"the full table, 8 rows: {(out / 'summary.csv').resolve()}" in done.stdout
    )


def test_demo_prints_the_short_summary(tiny_config, tmp_path, monkeypatch):
    def prepare_demo(out, n_per_category, drivers, progress):  # the tiny config in place of the generated data
        (out / "data").mkdir(parents=True)
        config = out / "data" / "demo.json"
        config.write_text(json.dumps(tiny_config))
        return config, False

    monkeypatch.setattr("sharedattr.experiment.demo.prepare_demo", prepare_demo)
    done = run_cli("demo", "--out", str(tmp_path / "demo"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    results = (tmp_path / "demo" / "results").resolve()
    assert done.stdout.splitlines()[0].split() == ["metric", "image", "best", "second", "methods"]
    assert f"the full table, 8 rows: {results / 'summary.csv'} (--full-summary prints it here)" in done.stdout
    assert f"report: {results / 'report.html'}" in done.stdout and "demo done in" in done.stdout
    assert len(done.stdout.splitlines()) <= 25


def test_a_pairwise_only_metric_ranks_the_pairwise_methods_and_marks_controls():
    """reference_sensitivity is 0 for every single-image method by construction: the summary ranks the pairwise
    methods only there (as the report's verdict does), and names a control as one."""
    from sharedattr.report.components import Components, MethodInfo, MetricInfo

    methods = ["saliency", "parallel_backprop", "parallel_backprop#2"]
    rows = summary_rows(methods, ["reference_sensitivity", "gini"])
    rows = [
        dict(r, mean=0.0) if r["method"] == "saliency" and r["metric"] == "reference_sensitivity" else r for r in rows
    ]
    components = Components(
        methods={
            "saliency": MethodInfo(pairwise=False, name="saliency"),
            "parallel_backprop": MethodInfo(pairwise=True, name="parallel_backprop"),
            "parallel_backprop#2": MethodInfo(pairwise=True, name="parallel_backprop", control="s = w"),
        },
        metrics={
            "reference_sensitivity": MetricInfo(family="sharing", single_image_value=0.0),
            "gini": MetricInfo(family="complexity"),
        },
    )
    lines = [" ".join(line.split()) for line in short_summary(rows, components=components).splitlines()]
    sharing = next(line for line in lines if line.startswith("reference_sensitivity (pairwise) ↑ driver"))
    assert "saliency" not in sharing and sharing.split()[-1] == "2"
    assert "parallel_backprop#2 (control) 2.0000" in sharing
    gini = next(line for line in lines if line.startswith("gini ↑ driver"))
    assert gini.split()[-1] == "3"  # every method on an ordinary metric
