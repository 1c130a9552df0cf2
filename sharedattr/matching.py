"""Neuron and driver selection, and matching drivers to references by their contribution vectors.

A neuron's contribution vector for image ``x`` is ``c_n(x) = w_n ⊙ z_n(x)`` ``[D]``. For each
selected neuron, its *drivers* are the out-of-category images with the highest response,
and each driver's *references* are the preferred-category images whose contribution
vectors a matcher ranks most similar. All neurons of a preferred category are matched as
batched matrix products, ``[G, Q, D] × [G, K, D] → [G, Q, K]``, in chunks of neurons that
keep the candidates' contributions under a memory budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import UserError
from .methods.matchers import match_references


@dataclass(frozen=True)
class Pair:
    """One explained item: neuron ``neuron`` (output index), a driver stimulus and one matched reference.

    ``rank`` is the reference's rank among the driver's top-k (0 = most similar).
    """

    neuron: int
    driver: int
    reference: int
    similarity: float
    rank: int


def select_neurons(neuron_ids: Sequence[str], test_r: Tensor | None, *, neurons: Sequence[str] | None = None,
                   top_k: int | None = None, min_r: float | None = None) -> list[int]:
    """Output indices of the neurons to explain: explicit ids, or the best predicted by held-out r.

    ``min_r`` keeps neurons with ``test_r ≥ min_r``; ``top_k`` keeps the k best (after ``min_r``).
    """
    if neurons is not None:
        index = {n: i for i, n in enumerate(neuron_ids)}
        unknown = [n for n in neurons if n not in index]
        if unknown:
            raise UserError(f"selection.neurons: unknown neuron id(s) {unknown}; the responses have "
                            f"{list(neuron_ids)[:20]}")
        return [index[n] for n in neurons]
    if test_r is None:
        raise UserError("selection: without held-out scores, name the neurons explicitly")
    order = test_r.nan_to_num(-math.inf).argsort(descending=True).tolist()
    if min_r is not None:
        order = [i for i in order if float(test_r[i]) >= min_r]
    if top_k is not None:
        order = order[:top_k]
    if not order:
        raise UserError(f"selection: no neuron has held-out r ≥ {min_r}; best r = {float(test_r.nan_to_num(-math.inf).max()):.3f}")
    return order


def preferred_categories(categories: Sequence[str], drive: Tensor, neurons: Sequence[int],
                         preferred: str | None = None) -> list[str]:
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


@torch.inference_mode()
def own_contributions(readout: nn.Module, latents: Tensor, rows: Tensor, neurons: Tensor, batch_size: int,
                      device: torch.device | str = "cpu") -> Tensor:
    """``c_{n_i}(x_{r_i})`` ``[M, D]``: stimulus ``rows[i]``'s contribution vector for neuron ``neurons[i]``.

    ``latents`` ``[S, ...]`` may be memory-mapped; ``batch_size`` stimuli go through the readout at a time.
    """
    out = []
    for r, n in zip(rows.split(batch_size), neurons.split(batch_size)):
        pooled = readout.pooled(latents[r].to(device))  # [b, N, D] (often an expanded view)
        n = n.to(pooled.device)
        z = pooled[torch.arange(len(r), device=pooled.device), n]  # [b, D]
        out.append((z * readout.weight[n].to(z.device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.inference_mode()
def candidate_contributions(readout: nn.Module, latents: Tensor, candidates: Tensor, neurons: Tensor,
                            batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``c_n(x)`` for every candidate stimulus and every neuron of ``neurons`` → ``[G, K, D]`` on the CPU."""
    w = readout.weight[neurons.to(readout.weight.device)]  # [G, D]
    out = []
    for chunk in candidates.split(batch_size):
        pooled = readout.pooled(latents[chunk].to(device))[:, neurons.to(device)]  # [b, G, D]
        out.append((pooled * w.to(pooled.device)).float().cpu())
    return torch.cat(out).transpose(0, 1)


def match_drivers(readout: nn.Module, latents: Tensor, matcher: object, drivers: Tensor, candidates: Tensor,
                  neurons: Tensor, top_k: int, *, batch_size: int = 256, device: torch.device | str = "cpu",
                  memory_bytes: int = 1 << 30) -> tuple[Tensor, Tensor]:
    """Match each driver to its most similar candidates, for its own neuron.

    ``drivers`` ``[G, Q]`` stimulus indices per neuron of ``neurons`` ``[G]``; ``candidates``
    ``[K]`` stimulus indices (the preferred category). Returns similarities and candidate
    *stimulus* indices, ``[G, Q, k]`` each, most similar first. Neurons are processed in
    chunks whose candidate contributions ``[g, K, D]`` stay within ``memory_bytes``.
    """
    g_count, q_count = drivers.shape
    query = own_contributions(readout, latents, drivers.flatten(), neurons.repeat_interleave(q_count), batch_size,
                              device).view(g_count, q_count, -1)  # [G, Q, D]
    d = query.shape[-1]
    chunk = max(1, memory_bytes // max(1, len(candidates) * d * 4))
    scores, refs = [], []
    for start in range(0, g_count, chunk):
        sl = slice(start, start + chunk)
        cand = candidate_contributions(readout, latents, candidates, neurons[sl], batch_size, device)  # [g, K, D]
        s, idx = match_references(matcher, query[sl], cand, top_k)
        scores.append(s)
        refs.append(candidates[idx])
    return torch.cat(scores), torch.cat(refs)


def match_pairs(readout: nn.Module, latents: Tensor, matcher: object, categories: Sequence[str], drive: Tensor,
                neurons: Sequence[int], preferred: Sequence[str], *, drivers_per_neuron: int,
                references_per_driver: int, batch_size: int = 256,
                device: torch.device | str = "cpu") -> list[Pair]:
    """Drivers and matched references of every neuron, grouped by preferred category.

    ``drive`` ``[S, N]`` ranks the drivers (measured responses, else predictions). Pairs are
    ordered by neuron (in ``neurons`` order), then driver rank, then reference rank.
    """
    by_neuron: dict[int, list[Pair]] = {}
    for category in sorted(set(preferred)):
        group = [n for n, p in zip(neurons, preferred) if p == category]
        cand = torch.tensor([i for i, c in enumerate(categories) if c == category])
        ooc = torch.tensor([i for i, c in enumerate(categories) if c != category])
        idx = torch.tensor(group)
        drivers = top_drivers(drive, ooc, idx, drivers_per_neuron)  # [G, Q]
        scores, refs = match_drivers(readout, latents, matcher, drivers, cand, idx, references_per_driver,
                                     batch_size=batch_size, device=device)
        for g, n in enumerate(group):
            by_neuron[n] = [Pair(n, int(drivers[g, q]), int(refs[g, q, k]), float(scores[g, q, k]), k)
                            for q in range(drivers.shape[1]) for k in range(refs.shape[-1])]
    return [p for n in neurons for p in by_neuron[n]]
