"""Matching each driver to its references by their contribution vectors.

A neuron's contribution vector for image ``x`` is ``c_n(x) = w_n ⊙ z_n(x)`` ``[D]``. For each
selected neuron, its *drivers* are the out-of-category images with the highest response
(:mod:`sharedattr.selection.neurons`), and each driver's *references* are the preferred-category images whose
contribution
vectors a matcher ranks most similar. All neurons of a preferred category are matched as
batched matrix products, ``[G, Q, D] × [G, K, D] → [G, Q, K]``, in chunks of neurons that
keep the contributions under a memory budget. When all neurons share one latent vector per
image (ridge), ``c_n(x) = w_n ⊙ z(x)`` is never expanded for the candidates: the dot and
cosine matchers need one matrix product ``[G·Q, D] × [D, K]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sharedattr.encoding.channels import channel_contributions, dimension_channels
from sharedattr.plugins.contracts import match_references
from sharedattr.selection.neurons import top_drivers


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


@torch.inference_mode()
def own_contributions(
    readout: nn.Module,
    latents: Tensor,
    rows: Tensor,
    neurons: Tensor,
    batch_size: int,
    device: torch.device | str = "cpu",
    channels: Tensor | None = None,
) -> Tensor:
    """``c_{n_i}(x_{r_i})`` ``[M, D]``: stimulus ``rows[i]``'s contribution vector for neuron ``neurons[i]``.

    ``latents`` ``[S, ...]`` may be memory-mapped; ``batch_size`` stimuli go through the readout at a time. With
    ``channels`` (the channel of each dimension ``[D]``), the contributions are summed within each channel ``[M, K]``.
    """
    out = []
    for r, n in zip(rows.split(batch_size), neurons.split(batch_size)):
        pooled = readout.pooled(latents[r].to(device))  # [b, N, D] (often an expanded view)
        n = n.to(pooled.device)
        z = pooled[torch.arange(len(r), device=pooled.device), n]  # [b, D]
        c = z * readout.weight[n].to(z.device)
        out.append((c if channels is None else channel_contributions(c, channels)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.inference_mode()
def candidate_contributions(
    readout: nn.Module,
    latents: Tensor,
    candidates: Tensor,
    neurons: Tensor,
    batch_size: int,
    device: torch.device | str = "cpu",
    channels: Tensor | None = None,
) -> Tensor:
    """``c_n(x)`` for every candidate stimulus and every neuron of ``neurons`` → ``[G, K, D]`` on the CPU (``[G, K, C]``
    summed within each channel, with ``channels``)."""
    w = readout.weight[neurons.to(readout.weight.device)]  # [G, D]
    out = []
    for chunk in candidates.split(batch_size):
        pooled = readout.pooled(latents[chunk].to(device))[:, neurons.to(device)]  # [b, G, D]
        c = pooled * w.to(pooled.device)
        out.append((c if channels is None else channel_contributions(c, channels)).float().cpu())
    return torch.cat(out).transpose(0, 1)


@torch.inference_mode()
def shared_latents(
    readout: nn.Module, latents: Tensor, rows: Tensor, batch_size: int, device: torch.device | str = "cpu"
) -> Tensor | None:
    """``z(x)`` ``[len(rows), D]`` of stimuli ``rows`` when every neuron shares one pooled vector, else None.

    Shared means the readout has ``shared_pooled(latents) → [B, D]`` (ridge), or its
    ``pooled`` returns a view expanded along the neuron axis. On ``device``, float32.
    """
    method = getattr(readout, "shared_pooled", None)
    out: Tensor | None = None  # filled block by block: no second copy of [len(rows), D] while concatenating
    start = 0
    for r in rows.split(batch_size):
        x = latents[r].to(device)
        if callable(method):
            z = method(x)
        else:
            pooled = readout.pooled(x)  # [b, N, D]
            if pooled.shape[1] > 1 and pooled.stride(1) != 0:
                return None
            z = pooled[:, 0]
        if out is None:
            out = torch.empty(len(rows), z.shape[1], dtype=torch.float32, device=z.device)
        out[start : start + len(r)] = z
        start += len(r)
    return out


def match_drivers(
    readout: nn.Module,
    latents: Tensor,
    matcher: object,
    drivers: Tensor,
    candidates: Tensor,
    neurons: Tensor,
    top_k: int,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    memory_bytes: int = 1 << 30,
    on: str = "dimensions",
) -> tuple[Tensor, Tensor]:
    """Match each driver to its most similar candidates, for its own neuron.

    ``on = "dimensions"`` compares the contribution vectors ``c_n(x)`` ``[D]``; ``"channels"`` compares them summed
    within each latent channel ``[K]`` (:mod:`sharedattr.encoding.channels`), so that where in the image a channel is
    active does not matter (position-tolerant matching).

    ``drivers`` ``[G, Q]`` stimulus indices per neuron of ``neurons`` ``[G]``; ``candidates``
    ``[K]`` stimulus indices (the preferred category). Returns similarities and candidate
    *stimulus* indices, ``[G, Q, k]`` each, most similar first. Neurons are processed in
    chunks whose working set (drivers' and candidates' contributions, similarities) stays
    within about ``memory_bytes``. When all neurons share one latent vector per image
    (:func:`shared_latents`) and the matcher has ``similarity_factored``, each image's vector
    is pooled once, the candidates' contributions are never formed, and the similarities are
    computed on ``device``; otherwise contributions are formed per chunk and matched on the CPU.
    """
    if on not in ("dimensions", "channels"):
        raise ValueError(f"on must be 'dimensions' or 'channels', got {on!r}")
    channels = dimension_channels(readout, int(readout.weight.shape[1]), device) if on == "channels" else None
    if channels is None and drivers.numel() and callable(getattr(matcher, "similarity_factored", None)):
        cand_z = shared_latents(readout, latents, candidates, batch_size, device)  # [K, D]
        if cand_z is not None:
            return _match_factored(
                readout, latents, matcher, drivers, candidates, neurons, top_k, cand_z, batch_size, device, memory_bytes
            )
    g_count, q_count = drivers.shape
    d = int(readout.weight.shape[1])
    chunk = max(1, memory_bytes // max(1, (len(candidates) + q_count) * d * 4))
    scores, refs = [], []
    for start in range(0, g_count, chunk):
        sl = slice(start, start + chunk)
        g = len(neurons[sl])
        query = own_contributions(
            readout,
            latents,
            drivers[sl].flatten(),
            neurons[sl].repeat_interleave(q_count),
            batch_size,
            device,
            channels,
        ).view(g, q_count, -1)  # [g, Q, D or C]
        cand = candidate_contributions(readout, latents, candidates, neurons[sl], batch_size, device, channels)
        s, idx = match_references(matcher, query, cand, top_k)
        scores.append(s)
        refs.append(candidates[idx])
    return torch.cat(scores), torch.cat(refs)


@torch.inference_mode()
def _match_factored(
    readout: nn.Module,
    latents: Tensor,
    matcher: object,
    drivers: Tensor,
    candidates: Tensor,
    neurons: Tensor,
    top_k: int,
    cand_z: Tensor,
    batch_size: int,
    device: torch.device | str,
    memory_bytes: int,
) -> tuple[Tensor, Tensor]:
    """:func:`match_drivers` for shared latents ``cand_z`` ``[K, D]``: ``matcher.similarity_factored`` per chunk."""
    g_count, q_count = drivers.shape
    k_count, d = cand_z.shape
    unique, inverse = drivers.unique(return_inverse=True)  # each driver image pooled once
    drv_z = shared_latents(readout, latents, unique, batch_size, device)  # [U, D]
    inverse = inverse.to(drv_z.device)
    weight = readout.weight[neurons.to(readout.weight.device)].to(drv_z.device).float()  # [G, D]
    per_neuron = 4 * (2 * q_count * d + q_count * k_count + k_count * d)
    chunk = max(1, memory_bytes // per_neuron)
    scratch = torch.empty(min(chunk, g_count) * q_count, d, dtype=drv_z.dtype, device=drv_z.device)  # reused
    scores, refs = [], []
    for start in range(0, g_count, chunk):
        sl = slice(start, start + chunk)
        rows = inverse[sl].flatten()
        query = torch.index_select(drv_z, 0, rows, out=scratch[: len(rows)]).view(-1, q_count, d)
        query.mul_(weight[sl, None, :])  # [g, Q, D] contributions; the matcher may overwrite them
        sim = matcher.similarity_factored(query, weight[sl], cand_z)
        expected = (*query.shape[:-1], k_count)
        if tuple(sim.shape) != expected:
            raise TypeError(
                f"{type(matcher).__name__}.similarity_factored returned shape {tuple(sim.shape)}, expected {expected}"
            )
        s, idx = sim.topk(min(top_k, k_count), dim=-1)
        scores.append(s.cpu())
        refs.append(candidates[idx.cpu()])
    return torch.cat(scores), torch.cat(refs)


def match_pairs(
    readout: nn.Module,
    latents: Tensor,
    matcher: object,
    categories: Sequence[str],
    drive: Tensor,
    neurons: Sequence[int],
    preferred: Sequence[str],
    *,
    drivers_per_neuron: int,
    references_per_driver: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    on: str = "dimensions",
) -> list[Pair]:
    """Drivers and matched references of every neuron, grouped by preferred category.

    ``drive`` ``[S, N]`` ranks the drivers (measured responses, else predictions). Pairs are
    ordered by neuron (in ``neurons`` order), then driver rank, then reference rank. ``on``: what the
    matcher compares (:func:`match_drivers`).
    """
    by_neuron: dict[int, list[Pair]] = {}
    for category in sorted(set(preferred)):
        group = [n for n, p in zip(neurons, preferred) if p == category]
        cand = torch.tensor([i for i, c in enumerate(categories) if c == category])
        ooc = torch.tensor([i for i, c in enumerate(categories) if c != category])
        idx = torch.tensor(group)
        drivers = top_drivers(drive, ooc, idx, drivers_per_neuron)  # [G, Q]
        scores, refs = match_drivers(
            readout,
            latents,
            matcher,
            drivers,
            cand,
            idx,
            references_per_driver,
            batch_size=batch_size,
            device=device,
            on=on,
        )
        for g, n in enumerate(group):
            by_neuron[n] = [
                Pair(n, int(drivers[g, q]), int(refs[g, q, k]), float(scores[g, q, k]), k)
                for q in range(drivers.shape[1])
                for k in range(refs.shape[-1])
            ]
    return [p for n in neurons for p in by_neuron[n]]


@torch.inference_mode()
def given_pairs(
    readout: nn.Module,
    latents: Tensor,
    matcher: object,
    triples: Sequence[tuple[int, int, int]],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    on: str = "dimensions",
) -> list[Pair]:
    """Pairs chosen by the caller, ``(neuron, driver, reference)`` output and stimulus indices, in that order, each
    with the matcher's similarity of its two images for its neuron (``rank`` 0): the same pairs for every method when
    a benchmark defines them by construction."""
    if on not in ("dimensions", "channels"):
        raise ValueError(f"on must be 'dimensions' or 'channels', got {on!r}")
    if not triples:
        return []
    channels = dimension_channels(readout, int(readout.weight.shape[1]), device) if on == "channels" else None
    neurons, drivers, references = (torch.tensor(column) for column in zip(*triples))
    query = own_contributions(readout, latents, drivers, neurons, batch_size, device, channels)  # [M, D or C]
    cand = own_contributions(readout, latents, references, neurons, batch_size, device, channels)
    scores, _ = match_references(matcher, query[:, None], cand[:, None], 1)  # [M, 1, 1]
    return [Pair(int(n), int(d), int(r), float(s), 0) for (n, d, r), s in zip(triples, scores.flatten())]
