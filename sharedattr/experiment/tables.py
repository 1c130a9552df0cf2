"""The run's tables: their columns, the tidy rows, their summaries, and the files they are written to.

Every file is written atomically (:mod:`sharedattr.runtime.io`): a reader sees the old file or
the whole new one. ``results.csv`` is tidy: one row per neuron × driver × reference × method ×
image (driver or reference) × metric.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.attribution.engine import Explained, NamedMethod, NamedMetric
from sharedattr.encoding.fit import Fit
from sharedattr.report.components import Components
from sharedattr.report.stats import mean_sem
from sharedattr.runtime.io import atomic_save_tensors, atomic_write_bytes, atomic_write_json
from sharedattr.runtime.run_files import (
    COMPONENTS_FILE,
    FIT_SCORES,
    MAPS_FILE,
    MAPS_PAIRS_KEY,
    METHOD_TIMES,
    PAIRS,
    PARQUET_SUFFIX,
    RESULTS,
    SUMMARY,
)
from sharedattr.selection.matching import Pair

RESULT_COLUMNS = RESULTS.header
"""The header of ``results.csv``, as :data:`sharedattr.runtime.run_files.RESULTS` gives it (the name of sharedattr
0.1, ``sharedattr.pipeline.RESULT_COLUMNS``; as are the four below)."""
SUMMARY_COLUMNS = SUMMARY.header
METHOD_COLUMNS = METHOD_TIMES.header
PAIR_COLUMNS = PAIRS.header
SCORE_COLUMNS = FIT_SCORES.header


def write_scores(fit: Fit, folder: Path) -> None:
    """``folder/scores.csv`` (:data:`~sharedattr.runtime.run_files.FIT_SCORES`): per neuron, held-out r and, where
    trials repeat, noise ceiling and FEV.

    Undefined values are left empty, with the reason in ``note`` (never a bare NaN); a held-out
    r that is undefined because a column is constant is 0 (:func:`held_out_r`), also with the
    reason in ``note``.
    """

    def value(t: Tensor | None, i: int) -> float | str:
        return "" if t is None or not torch.isfinite(t[i]) else float(t[i])

    rows = []
    for i, n in enumerate(fit.neuron_ids):
        note = "no repeated trials" if fit.notes is None else (fit.notes[i] or "")
        if fit.r_notes is not None and fit.r_notes[i]:
            note = f"{fit.r_notes[i]}; {note}" if note else fit.r_notes[i]
        rows.append(
            {
                "neuron": n,
                "test_r": value(fit.test_r, i),
                "noise_ceiling": value(fit.noise_ceiling, i),
                "fev": value(fit.fev, i),
                "n_train": len(fit.train),
                "n_test": len(fit.test),
                "note": note,
            }
        )
    FIT_SCORES.write(folder, rows)


def tidy_rows(
    pairs: Sequence[Pair],
    explained: Explained,
    neuron_ids: Sequence[str],
    stimulus_ids: Sequence[str],
    categories: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per pair × method × image × metric (the tidy results table)."""
    rows = []
    for (method, metric, which), values in explained.scores.items():
        higher = explained.higher_is_better[metric]
        for p, v in zip(pairs, values.tolist()):
            rows.append(
                {
                    **pair_row(p, neuron_ids, stimulus_ids, categories),
                    "method": method,
                    "image": which,
                    "metric": metric,
                    "value": v,
                    "higher_is_better": higher,
                }
            )
    return rows


def pair_row(
    pair: Pair, neuron_ids: Sequence[str], stimulus_ids: Sequence[str], categories: Sequence[str]
) -> dict[str, Any]:
    """The columns that name a pair: its neuron, driver (and category), reference, rank and similarity."""
    return {
        "neuron": neuron_ids[pair.neuron],
        "driver": stimulus_ids[pair.driver],
        "driver_category": categories[pair.driver],
        "reference": stimulus_ids[pair.reference],
        "rank": pair.rank,
        "similarity": pair.similarity,
    }


def write_pairs(
    folder: Path,
    pairs: list[Pair],
    drive: Tensor,
    neuron_ids: list[str],
    stimulus_ids: list[str],
    categories: list[str],
) -> None:
    """``folder/pairs.csv`` (:data:`~sharedattr.runtime.run_files.PAIRS`): one row per (neuron, driver, reference),
    with the similarity and the driver's response."""
    rows = (
        {**pair_row(p, neuron_ids, stimulus_ids, categories), "driver_response": float(drive[p.driver, p.neuron])}
        for p in pairs
    )
    PAIRS.write(folder, rows)


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """The tidy table as ``folder/results.csv`` (:data:`~sharedattr.runtime.run_files.RESULTS`), and as
    ``results.parquet`` beside it when pyarrow is installed (both atomic)."""
    path = RESULTS.write(folder, rows)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows, columns=RESULTS.header).to_parquet(buf, index=False)
    atomic_write_bytes(path.with_suffix(PARQUET_SUFFIX), buf.getvalue())


def save_maps(
    folder: Path, explained: Explained, pairs: list[Pair], neuron_ids: list[str], stimulus_ids: list[str]
) -> None:
    """Every map ``[P, H, W]`` as ``<method>/<image>`` in ``folder/maps.safetensors``; the pairs in its metadata, as
    the JSON list ``pairs_json`` of ``[neuron, driver, reference]`` ids (any characters in an id survive)."""
    tensors = {f"{label}/{which}": m for label, maps in explained.maps.items() for which, m in maps.items()}
    listed = [[neuron_ids[p.neuron], stimulus_ids[p.driver], stimulus_ids[p.reference]] for p in pairs]
    atomic_save_tensors(folder / MAPS_FILE, tensors, {MAPS_PAIRS_KEY: json.dumps(listed, ensure_ascii=False)})


def method_times(explained: Explained, n_pairs: int) -> list[dict[str, Any]]:
    """Per method: seconds to make all maps of ``n_pairs`` pairs (driver and, where run, reference) and ms per pair."""
    return [
        {
            "method": label,
            "seconds": round(s, 4),
            "pairs": n_pairs,
            "ms_per_pair": round(1000 * s / n_pairs, 3) if n_pairs else math.nan,
        }
        for label, s in explained.seconds.items()
    ]


def metric_times(explained: Explained) -> list[dict[str, Any]]:
    """Per metric and method: seconds to score all that method's maps, ms per map, and that time as a share
    of the method's own (``seconds / method seconds``); NaN where a stored item was not timed."""
    rows = []
    for (metric, method), seconds in explained.metric_seconds.items():
        maps = sum(len(v) for (m, mt, _), v in explained.scores.items() if m == method and mt == metric)
        own = explained.seconds.get(method, math.nan)
        rows.append(
            {
                "metric": metric,
                "method": method,
                "seconds": round(seconds, 4),
                "maps": maps,
                "ms_per_map": round(1000 * seconds / maps, 3) if maps else math.nan,
                "share_of_method": round(seconds / own, 4) if own and math.isfinite(own) else math.nan,
            }
        )
    return rows


def summarise_results(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
        mean, sem, n = mean_sem(vals)
        out.append(
            {
                "method": method,
                "image": image,
                "metric": metric,
                "mean": mean,
                "sem": sem,
                "n": n,
                "higher_is_better": better[metric],
            }
        )
    return out


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` of cells under ``header`` as left-aligned columns with a rule below the header: what the commands
    print."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in rows)])


def _mean_sem_text(row: dict[str, Any]) -> str:
    return f"{row['mean']:.4f} ± {row['sem']:.4f}" if math.isfinite(row["sem"]) else f"{row['mean']:.4f}"


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (arrows show each metric's better direction)."""
    if not summary:
        return "(no results)"
    header = ["method", "image", "metric", "mean ± sem", "n"]
    lines = [
        [
            r["method"],
            r["image"],
            f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}",
            _mean_sem_text(r),
            str(r["n"]),
        ]
        for r in sorted(summary, key=lambda r: (r["metric"], r["image"], r["method"]))
    ]
    return text_table(header, lines)


SHORT_SUMMARY_ROWS = 20
"""The most metric × image rows :func:`short_summary` prints; the rest are counted (all are in ``summary.csv``)."""


def short_summary(
    summary: list[dict[str, Any]], max_rows: int = SHORT_SUMMARY_ROWS, components: Components | None = None
) -> str:
    """The headline of the summary, what ``sharedattr run`` and ``demo`` print: one line per metric × image with its
    best and second-best method by mean, in the metric's direction (ties by method name), and how many methods
    were scored; at most ``max_rows`` lines (then a line counting the rest). :func:`format_summary` gives every row.
    With the run's ``components`` (:func:`sharedattr.report.components.load`), a metric on which every single-image
    method scores a value by construction (``reference_sensitivity``) ranks the pairwise methods only, as the
    report's verdict does, and a control is marked ``(control)``.

    Example::

        >>> rows = [
        ...     {"method": m, "image": "driver", "metric": "gini", "mean": v, "sem": 0.01, "n": 4}
        ...     | {"higher_is_better": True}
        ...     for m, v in [("saliency", 0.4), ("occlusion", 0.6)]
        ... ]
        >>> print(short_summary(rows))  # doctest: +NORMALIZE_WHITESPACE
        metric  image   best                       second                    methods
        ------  ------  -------------------------  ------------------------  -------
        gini ↑  driver  occlusion 0.6000 ± 0.0100  saliency 0.4000 ± 0.0100  2
    """
    if not summary:
        return "(no results)"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in sorted(summary, key=lambda r: (r["metric"], r["image"], r["method"])):
        groups.setdefault((row["metric"], row["image"]), []).append(row)
    lines = []
    for (metric, image), rows in groups.items():
        higher = rows[0]["higher_is_better"]
        if components is not None and components.pairwise_only(metric):
            rows = [r for r in rows if components.is_pairwise(r["method"])]
            metric += " (pairwise)"
        scored = sorted(
            (r for r in rows if math.isfinite(r["mean"])), key=lambda r: -r["mean"] if higher else r["mean"]
        )
        best = [f"{_shown_method(r['method'], components)} {_mean_sem_text(r)}" for r in scored[:2]]
        best = best or ["(none scored)"]
        best += [""] * (2 - len(best))
        lines.append([f"{metric} {'↑' if higher else '↓'}", image, *best, str(len(scored))])
    table = text_table(["metric", "image", "best", "second", "methods"], lines[:max_rows])
    if len(lines) > max_rows:
        table += f"\n... and {len(lines) - max_rows} more metric × image rows"
    return table


def _shown_method(label: str, components: Components | None) -> str:
    """``label``, with `` (control)`` when the run's components declare it a control."""
    return f"{label} (control)" if components is not None and components.control(label) else label


def write_components(
    folder: Path, methods: Sequence[NamedMethod], metrics: Sequence[NamedMetric], pairwise: dict[str, bool]
) -> None:
    """``folder/components.json``: what each method and metric label of the run declares (the report reads it).

    Per method label: its spec, whether it is pairwise, the plugin that provides it, every param (``params``, as
    validated), the names of those that differ from their defaults (``changed``), what it is a control of
    (``control``: None for a real method), which methods it controls when it is one (``controls``: ``same`` or
    ``any_pairwise``) and how the report names it then (``control_noun``), and the scope its own benchmarks
    established (``scope``, or None). Per metric label: its spec, family, direction, the score every single-image
    method gets by construction (``single_image_value``, None for most) and plugin.
    """
    method_records = {}
    for m in methods:
        params, changed = m.params_json()
        controls, noun = m.reach
        method_records[m.label] = {
            "spec": m.spec,
            "pairwise": pairwise[m.label],
            "plugin": m.origin,
            "params": params,
            "changed": list(changed),
            "control": m.control,
            "controls": controls,
            "control_noun": noun,
            "scope": m.scope,
        }
    atomic_write_json(
        folder / COMPONENTS_FILE,
        {
            "methods": method_records,
            "metrics": {
                m.label: {
                    "spec": m.spec,
                    "family": m.family,
                    "higher_is_better": m.higher_is_better,
                    "single_image_value": m.single_image_value,
                    "plugin": m.origin,
                }
                for m in metrics
            },
        },
    )
