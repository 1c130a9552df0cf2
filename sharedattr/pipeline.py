"""``sharedattr run``: data → encoding model → neuron/driver selection → matching → attribution → metrics.

Every stage uses the components named in the :class:`~sharedattr.specs.ExperimentSpec`,
built through the registry. Results are written atomically to the output folder:

- ``spec.json``: the validated spec with every default filled in, and its digest;
- ``scores.csv``, ``model/`` and ``figures/fit.png``: the fitted encoding model and its
  held-out Pearson r per neuron (as ``sharedattr fit`` writes them);
- ``pairs.csv``: per neuron, each out-of-category driver and its matched references;
- ``results.csv`` (and ``results.parquet`` when pyarrow is installed): tidy, one row per
  neuron × driver × reference × method × image (driver or reference) × metric;
- ``summary.csv``: method × image × metric mean ± sem (also printed);
- ``maps.safetensors``: every attribution map ``[P, H, W]``, keyed ``<method>/<image>``;
- ``methods.csv``: per method, the wall time to make all its maps and the milliseconds per pair;
- ``synthesis/``: when synthesizers are configured, their images scored on the train, val and cross
  evaluator models (see :mod:`sharedattr.synthesis.runner`);
- ``figures/``: PNGs (fit quality, one attribution grid per neuron);
- ``work/``: finished work items (per method × block of ``batch_size`` pairs: its maps, and its
  scores per metric × image), so a second run of the same spec, or a run after an
  interruption, recomputes nothing that was finished (see docs/scaling.md);
- ``timings.json``: seconds spent in each stage;
- ``report.html``: a self-contained HTML report of all of the above (rebuild it with ``sharedattr report``).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data.ground_truth import pair_parts
from .distributed import SINGLE, Ranks, rank_device
from .explain import Explained, ExplainSettings, PairImages, explain_pairs, labels, tidy_rows
from .fitting import fit_for_run, resolve_device
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_csv, atomic_write_json
from .matching import Pair, match_pairs, preferred_categories, select_neurons
from .registry import Registry, get_registry
from .specs import ExperimentSpec
from .work_store import WorkStore

RESULT_COLUMNS = ["neuron", "driver", "driver_category", "reference", "rank", "similarity", "method", "image",
                  "metric", "value", "higher_is_better"]
SUMMARY_COLUMNS = ["method", "image", "metric", "mean", "sem", "n", "higher_is_better"]
METHOD_COLUMNS = ["method", "seconds", "pairs", "ms_per_pair"]
PAIR_COLUMNS = ["neuron", "driver", "driver_category", "reference", "rank", "similarity", "driver_response"]


@dataclass
class RunResult:
    """What :func:`run_experiment` wrote, in memory: ``rows`` is the tidy table, ``summary`` its means."""

    out_dir: Path
    neuron_ids: list[str]
    test_r: Tensor
    selected: list[int]
    pairs: list[Pair]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    reused: dict[str, Any] = field(default_factory=dict)


def run_experiment(spec: ExperimentSpec, out_dir: str | Path, *, registry: Registry | None = None,
                   progress: bool = True, ranks: Ranks = SINGLE) -> RunResult | None:
    """Run the whole experiment described by ``spec``; write the results to ``out_dir``.

    Everything already computed in ``out_dir`` by a run of the same spec (the fitted model,
    each work item's maps and scores) is reused, so a repeated or resumed run is cheap.

    With several ``ranks`` (see :mod:`sharedattr.distributed`; ``out_dir`` on a folder every
    rank sees), rank 0 fits, every rank matches, the work items are dealt out round-robin, and
    rank 0 merges them and writes every output, the same as a single process; the other ranks
    return None. Progress bars are shown by rank 0 only.
    """
    registry = registry or get_registry()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    device = rank_device(resolve_device(spec.device), ranks)
    progress = progress and ranks.is_main
    timings: dict[str, float] = {}
    stages = tqdm(total=6, desc="run", disable=not progress, unit="stage")

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        stages.set_postfix_str(name)

    # 1. data, features, readout fit (or the saved one) and scores ---------------------------
    stage("fit")
    experiment = fit_for_run(spec, out, out, ranks=ranks, registry=registry, device=device, progress=progress)
    stimuli, responses, latents = experiment.stimuli, experiment.responses, experiment.latents
    model, fit = experiment.fit.model, experiment.fit
    neuron_ids = fit.neuron_ids
    stages.update()

    # 2. neurons, drivers and their matched references ----------------------------------------
    stage("match")
    sel = spec.selection
    selected = select_neurons(neuron_ids, fit.test_r, neurons=sel.neurons, top_k=sel.top_k, min_r=sel.min_r)
    drive = torch.where(torch.isnan(responses), fit.predicted, responses)  # measured, else predicted
    categories = list(stimuli.categories)
    preferred = preferred_categories(categories, drive, selected, spec.data.preferred_category)
    pairs = match_pairs(model.readout, latents, spec.matcher.build(registry=registry), categories, drive, selected,
                        preferred, drivers_per_neuron=sel.drivers_per_neuron,
                        references_per_driver=sel.references_per_driver, batch_size=spec.batch_size, device=device)
    if ranks.is_main:
        write_pairs(out / "pairs.csv", pairs, drive, neuron_ids, stimuli.ids, categories)
    stages.update()

    # 3-4. attribution and metrics (each finished work item is reused) ------------------------
    stage("attribute")
    size, channels = model.input_size, model.in_channels
    shared = None if experiment.neuron_parts is None else pair_parts(stimuli, experiment.neuron_parts, neuron_ids, pairs)
    images = PairImages.load(stimuli, pairs, size, channels, shared)
    settings = ExplainSettings(spec.attribution.on_reference, spec.attribution.reduce, spec.batch_size, device)
    store = WorkStore(out / "work")
    identity = {"model": experiment.fit_digest,
                "pairs": [[neuron_ids[p.neuron], stimuli.ids[p.driver], stimuli.ids[p.reference]] for p in pairs]}
    explained = explain_pairs(model, pairs, images, spec.methods, spec.metrics, settings, registry=registry,
                              store=store, identity=identity, progress=progress, ranks=ranks)
    if explained is None:  # another rank than 0: its items are written; rank 0 merges them
        if spec.synthesis:
            from .synthesis.runner import run_synthesis

            run_synthesis(spec, experiment, selected, out / "synthesis", registry=registry, device=device,
                          progress=False, ranks=ranks)
        return None
    stages.update(2)

    # 5. tables and maps -----------------------------------------------------------------------
    stage("write")
    rows = tidy_rows(pairs, explained, neuron_ids, stimuli.ids, categories)
    write_table(out / "results.csv", rows, RESULT_COLUMNS)
    summary = summarise(rows)
    atomic_write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    atomic_write_csv(out / "methods.csv", method_times(explained, len(pairs)), METHOD_COLUMNS)
    if spec.output.save_maps and explained.maps:
        save_maps(out / "maps.safetensors", explained, pairs, neuron_ids, stimuli.ids)
    if spec.output.figures:
        from .figures import attribution_grids

        attribution_grids(pairs, images.drivers, images.references, explained.maps, neuron_ids, stimuli.ids,
                          out / "figures", spec.output.dpi)
    stages.update()

    # 6. synthesis ----------------------------------------------------------------------------
    stage("synthesize")
    if spec.synthesis:
        from .synthesis.runner import run_synthesis

        run_synthesis(spec, experiment, selected, out / "synthesis", registry=registry, device=device,
                      progress=progress, ranks=ranks)
    stages.update()
    stages.close()
    timings["end"] = time.perf_counter()
    names = list(timings)
    durations = {names[i]: timings[names[i + 1]] - timings[names[i]] for i in range(len(names) - 1)}
    atomic_write_json(out / "timings.json", durations)
    from .report import write_report

    write_report(out)
    reused = {"model": int(experiment.reused), "work_items_reused": store.hits, "work_items_computed": store.misses,
              "work_items_computed_by_rank": explained.computed_by_rank}
    return RunResult(out, neuron_ids, fit.test_r, selected, pairs, rows, summary, durations, reused)


def write_pairs(path: Path, pairs: list[Pair], drive: Tensor, neuron_ids: list[str], stimulus_ids: list[str],
                categories: list[str]) -> None:
    """``pairs.csv``: one row per (neuron, driver, reference), with the similarity and the driver's response."""
    atomic_write_csv(path, ({"neuron": neuron_ids[p.neuron], "driver": stimulus_ids[p.driver],
                             "driver_category": categories[p.driver], "reference": stimulus_ids[p.reference],
                             "rank": p.rank, "similarity": p.similarity,
                             "driver_response": float(drive[p.driver, p.neuron])} for p in pairs), PAIR_COLUMNS)


def write_table(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The tidy table as CSV, and as Parquet beside it when pyarrow is installed (both atomic)."""
    atomic_write_csv(path, rows, columns)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows, columns=columns).to_parquet(buf, index=False)
    atomic_write_bytes(path.with_suffix(".parquet"), buf.getvalue())


def save_maps(path: Path, explained: Explained, pairs: list[Pair], neuron_ids: list[str],
              stimulus_ids: list[str]) -> None:
    """Every map ``[P, H, W]`` as ``<method>/<image>`` in one safetensors file; the pairs in its metadata."""
    tensors = {f"{label}/{which}": m for label, maps in explained.maps.items() for which, m in maps.items()}
    atomic_save_tensors(path, tensors, {"pairs": ";".join(
        f"{neuron_ids[p.neuron]}|{stimulus_ids[p.driver]}|{stimulus_ids[p.reference]}" for p in pairs)})


def method_times(explained: Explained, n_pairs: int) -> list[dict[str, Any]]:
    """Per method: seconds to make all maps of ``n_pairs`` pairs (driver and, where run, reference) and ms per pair."""
    return [{"method": label, "seconds": round(s, 4), "pairs": n_pairs,
             "ms_per_pair": round(1000 * s / n_pairs, 3) if n_pairs else math.nan}
            for label, s in explained.seconds.items()]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Method × image × metric mean ± standard error over the finite values (``n`` counts them)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    better: dict[str, bool] = {}
    for r in rows:
        key = (r["method"], r["image"], r["metric"])
        groups.setdefault(key, [])
        better[r["metric"]] = r["higher_is_better"]
        if math.isfinite(r["value"]):
            groups[key].append(r["value"])
    out = []
    for (method, image, metric), vals in groups.items():
        n = len(vals)
        mean = sum(vals) / n if n else math.nan
        sem = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) / math.sqrt(n)) if n > 1 else math.nan
        out.append({"method": method, "image": image, "metric": metric, "mean": mean, "sem": sem, "n": n,
                    "higher_is_better": better[metric]})
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (arrows show each metric's better direction)."""
    if not summary:
        return "(no results)"
    header = ["method", "image", "metric", "mean ± sem", "n"]
    lines = [[r["method"], r["image"], f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}",
              f"{r['mean']:.4f} ± {r['sem']:.4f}" if math.isfinite(r["sem"]) else f"{r['mean']:.4f}", str(r["n"])]
             for r in sorted(summary, key=lambda r: (r["metric"], r["image"], r["method"]))]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*l) for l in lines)])
