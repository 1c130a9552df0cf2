"""Category selectivity from the measured (trial-averaged) responses: per-category means and d'.

For each neuron, the preferred category is the spec's ``data.preferred_category`` or, when
absent, the category with the highest mean response, as
:func:`sharedattr.selection.neurons.preferred_categories` decides it for the run (here from the
measured responses only). ``d' = (mean_pref − mean_other) / sqrt((var_pref + var_other) / 2)``
over the stimuli of the preferred category and of all other categories (sample variances).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sharedattr.data import StimulusSet, load_responses
from sharedattr.selection.neurons import preferred_categories


@dataclass(frozen=True)
class Selectivity:
    """Per neuron (rows) and category (columns): mean response, its sem over stimuli, and stimulus counts."""

    neuron_ids: list[str]
    categories: list[str]
    means: np.ndarray  # [N, K]
    sems: np.ndarray  # [N, K]
    counts: np.ndarray  # [N, K] stimuli with a finite response
    preferred: list[str]
    dprime: np.ndarray  # [N]


def dprime(pref: np.ndarray, other: np.ndarray) -> float:
    """``(mean_pref − mean_other) / sqrt((var_pref + var_other) / 2)``; NaN with < 2 values or no variance."""
    pref, other = pref[np.isfinite(pref)], other[np.isfinite(other)]
    if len(pref) < 2 or len(other) < 2:
        return math.nan
    pooled = math.sqrt((pref.var(ddof=1) + other.var(ddof=1)) / 2)
    return float((pref.mean() - other.mean()) / pooled) if pooled > 0 else math.nan


def selectivity(
    values: Tensor, categories: Sequence[str], neuron_ids: Sequence[str], preferred: str | None = None
) -> Selectivity:
    """Selectivity of every neuron from trial-averaged responses ``values`` ``[S, N]`` (NaN = not measured)."""
    names = sorted(set(categories))
    prefs = preferred_categories(list(categories), values, list(range(values.shape[1])), preferred)
    x = values.double().numpy()
    cats = np.asarray(categories)
    means, sems, counts = (np.full((x.shape[1], len(names)), math.nan) for _ in range(3))
    for k, name in enumerate(names):
        block = x[cats == name]  # [S_k, N]
        ok = np.isfinite(block)
        counts[:, k] = ok.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, k] = np.nansum(block, 0) / counts[:, k]
            sq = np.nansum((block - means[:, k]) ** 2, 0)
            sems[:, k] = np.sqrt(sq / (counts[:, k] - 1)) / np.sqrt(counts[:, k])
    sems[counts < 2] = math.nan
    d = np.array([dprime(x[cats == p, n], x[cats != p, n]) for n, p in enumerate(prefs)])
    return Selectivity(list(neuron_ids), names, means, sems, counts, prefs, d)


def measured_responses(
    responses_path: str | Path,
    stimuli: StimulusSet,
    *,
    ids_path: str | Path | None = None,
    neuron_ids_path: str | Path | None = None,
    time_window: tuple[float, float] | None = None,
    time_bins_path: str | Path | None = None,
    nwb_table: str | None = None,
) -> tuple[Tensor, list[str]]:
    """Trial-averaged measured responses ``[S, N]`` aligned to ``stimuli``, and the neuron ids."""
    recorded = load_responses(
        responses_path,
        ids_path=ids_path,
        neuron_ids_path=neuron_ids_path,
        time_window=time_window,
        time_bins_path=time_bins_path,
        nwb_table=nwb_table,
    )
    return recorded.aligned_to(stimuli).to(torch.float32), list(recorded.neuron_ids)
