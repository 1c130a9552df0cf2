"""Which neurons to explain, which category each prefers, and which out-of-category images drive it.

Shapes: ``drive`` ``[S, N]`` is each stimulus's response per neuron: measured where recorded,
else the encoding model's prediction (:func:`measured_else_predicted`). Neurons are output indices of the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sharedattr.runtime.errors import UserError


def measured_else_predicted(measured: Tensor, predicted: Tensor) -> Tensor:
    """``[S, N]``: the measured responses, and the model's predictions where a response was not measured (NaN)."""
    return torch.where(torch.isnan(measured), predicted, measured)


def select_neurons(
    neuron_ids: Sequence[str],
    test_r: Tensor | None,
    *,
    neurons: Sequence[str] | None = None,
    top_k: int | None = None,
    min_r: float | None = None,
) -> list[int]:
    """Output indices of the neurons to explain: explicit ids, or the best predicted by held-out r.

    ``min_r`` keeps neurons with ``test_r ≥ min_r``; ``top_k`` keeps the k best (after ``min_r``).
    """
    if neurons is not None:
        index = {n: i for i, n in enumerate(neuron_ids)}
        unknown = [n for n in neurons if n not in index]
        if unknown:
            raise UserError(
                f"selection.neurons: unknown neuron id(s) {unknown}; the responses have {list(neuron_ids)[:20]}"
            )
        return [index[n] for n in neurons]
    if test_r is None:
        raise UserError("selection: without held-out scores, name the neurons explicitly")
    order = test_r.nan_to_num(-math.inf).argsort(descending=True).tolist()
    if min_r is not None:
        order = [i for i in order if float(test_r[i]) >= min_r]
    if top_k is not None:
        order = order[:top_k]
    if not order:
        raise UserError(
            f"selection: no neuron has held-out r ≥ {min_r}; best r = {float(test_r.nan_to_num(-math.inf).max()):.3f}"
        )
    return order


def preferred_categories(
    categories: Sequence[str], drive: Tensor, neurons: Sequence[int], preferred: str | None = None
) -> list[str]:
    """Per neuron: ``preferred``, or the category with the highest mean ``drive`` ``[S, N]``."""
    names = sorted(set(categories))
    if len(names) < 2:
        raise UserError(f"data.stimuli: shared-feature attribution needs ≥ 2 categories; found {names}")
    if preferred is not None:
        if preferred not in names:
            raise UserError(f"data.preferred_category: {preferred!r} is not one of {names}")
        return [preferred] * len(neurons)
    cats = torch.tensor([names.index(c) for c in categories])
    means = torch.stack([drive[cats == k].nanmean(0) for k in range(len(names))])  # [K, N]
    return [names[int(means[:, n].nan_to_num(-math.inf).argmax())] for n in neurons]


def top_drivers(drive: Tensor, out_of_category: Tensor, neurons: Tensor, k: int) -> Tensor:
    """The ``k`` out-of-category stimuli with the highest ``drive`` ``[S, N]`` per neuron → ``[G, k]`` indices.

    NaN drives rank last.
    """
    values = drive[out_of_category][:, neurons].nan_to_num(-math.inf)  # [K_ooc, G]
    return out_of_category[values.topk(min(k, len(out_of_category)), dim=0).indices.T]
