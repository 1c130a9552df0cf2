"""The report's size and load time in Chromium, for the demo and for a 100-neuron run (issue 28).

    uv run python benchmarks/report_size.py [--neurons 100 --drivers 3 --workdir /tmp/sharedattr-report-size]
    uv run python benchmarks/report_size.py --report RUN_DIR [RUN_DIR ...]   # measure finished runs only

Builds the many-neuron run folder with the run's own code (:func:`sharedattr.experiment.run.run_experiment`) from
a cheap model: the demo's in-silico data set (60 images per category, 64 px,
:data:`~sharedattr.data.insilico.VARIED_SCENES`, seed 0) with ``--neurons`` ground-truth neurons
(:func:`~sharedattr.data.insilico.neuron_population`: the 5 kinds × ``neurons / 5`` jittered variants), and the
demo's config (:data:`sharedattr.experiment.demo.DEMO_CONFIG`: the shipped ``insilico_cnn`` at ``block3``, ridge
readout, cosine matcher, the same 11 methods with the same parameters) with three changes: every neuron is explained
(``selection.top_k = neurons``, ``--drivers`` drivers each); the metrics are the demo's six that read masks or the
map alone (``shared_part_selectivity``, ``reference_sensitivity``, ``relevance_mass``, ``pointing_game``,
``relevance_rank``, ``gini``; not ``deletion``, ``insertion`` and ``randomisation``, which cost model passes but add
only three numbers per map); no synthesis. A finished folder in ``--workdir`` is reused.

For each report it prints the size of ``report.html`` (MB = 10⁶ bytes) and of its inline data (maps, stimulus
thumbnails), and the load time in headless Chromium at 1400 × 900 px (``--repeat`` loads, the median of
``performance.getEntriesByType("navigation")[0].loadEventEnd``: parsing, decoding the inline data and drawing the
first pair's maps), with the page's height and whether it overflows sideways.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

CHEAP_METRICS = (
    "shared_part_selectivity",
    "reference_sensitivity",
    "relevance_mass",
    "pointing_game",
    "relevance_rank",
    "gini",
)
"""The demo's metrics this run keeps (they read the masks or the map; no model pass)."""


def many_neuron_run(workdir: Path, neurons: int, drivers: int) -> Path:
    """Write the in-silico data with ``neurons`` neurons and run the demo's config on it; returns the run folder."""
    from sharedattr.config.files import tomllib
    from sharedattr.config.validation import validate_experiment
    from sharedattr.data.insilico import VARIED_SCENES, neuron_population, write_insilico
    from sharedattr.experiment.demo import DEMO_CONFIG
    from sharedattr.experiment.run import run_experiment

    data, out = workdir / "data", workdir / f"run-{neurons}x{drivers}"
    if (out / "report.html").is_file():
        return out
    files = write_insilico(
        data, 60, 64, seed=0, neurons=neuron_population(max(1, neurons // 5), seed=0), options=VARIED_SCENES
    )
    spec = tomllib.loads(DEMO_CONFIG.format(config_name="report_size.toml", size=64, seed=0, drivers=drivers))
    spec["name"] = f"report-size-{neurons}"
    spec["cache_dir"] = str(workdir / "feature-cache")
    spec["data"] |= {
        "stimuli": str(files.manifest),
        "responses": str(files.responses),
        "neuron_parts": str(files.neuron_parts),
    }
    spec["selection"] = {"top_k": neurons, "drivers_per_neuron": drivers}
    spec["metrics"] = [m for m in spec["metrics"] if m["name"] in CHEAP_METRICS]
    spec.pop("synthesis", None)
    spec.pop("evaluators", None)
    start = time.perf_counter()
    run_experiment(validate_experiment(spec), out, progress=False)
    print(f"built {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out


def inline_sizes(html: str) -> dict[str, int]:
    """Bytes of each inline JSON document of the page (``sa-stimuli``, ``sa-explorer``)."""
    found = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', html, flags=re.S)
    return {name: len(text.encode()) for name, text in found}


def load_times(paths: list[Path], repeat: int) -> list[dict[str, float]]:
    """Per page: the median load time (ms) over ``repeat`` fresh loads, its height (px) and the overflow."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    out = []
    try:
        for path in paths:
            times = []
            for _ in range(repeat):
                driver.get("about:blank")
                driver.get(path.as_uri())
                times.append(driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd"))
            width, client, height = driver.execute_script(
                "var e = document.documentElement; return [e.scrollWidth, e.clientWidth, e.scrollHeight]"
            )
            drawn = driver.execute_script("return document.querySelectorAll('#ex-cards canvas').length")
            out.append(
                {"load_ms": statistics.median(times), "height": height, "overflow": width > client, "maps": drawn}
            )
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--drivers", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sharedattr-report-size"))
    parser.add_argument("--report", type=Path, nargs="+", help="measure these finished run folders only")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from sharedattr.report import write_report

    runs = args.report or [many_neuron_run(args.workdir, args.neurons, args.drivers)]
    pages = []
    for run in runs:
        start = time.perf_counter()
        page = write_report(run)
        pages.append((page, time.perf_counter() - start))
    timings = load_times([p for p, _ in pages], args.repeat)
    print(
        "| run | pairs | methods | report.html | maps + scores (inline) | thumbnails (inline) | written in | "
        "loads in (Chromium) | page height | overflow |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (page, seconds), timing in zip(pages, timings):
        html = page.read_text(encoding="utf-8")
        inline = inline_sizes(html)
        m = re.search(r'<script type="application/json" id="sa-explorer">(.*?)</script>', html, flags=re.S)
        data = json.loads(m.group(1)) if m else {"pairs": [], "methods": []}
        print(
            f"| {page.parent} | {len(data['pairs'])} | {len(data['methods'])} | {len(html.encode()) / 1e6:.2f} MB | "
            f"{inline.get('sa-explorer', 0) / 1e6:.2f} MB | {inline.get('sa-stimuli', 0) / 1e6:.2f} MB | "
            f"{seconds:.1f} s | {timing['load_ms']:.0f} ms | {timing['height']} px | "
            f"{'yes' if timing['overflow'] else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
