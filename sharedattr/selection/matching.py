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
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from sharedattr.encoding.channels import channel_contributions, dimension_channels
from sharedattr.plugins.contracts import Matcher, ReadoutModule, declared, match_references
from sharedattr.selection.neurons import top_drivers

MATCH_ON = ("dimensions", "channels")


@dataclass(frozen=True)
class MatchOptions:
    """What a matcher compares, and how the comparison is computed.

    ``on = "dimensions"`` compares the contribution vectors ``c_n(x)`` ``[D]``; ``"channels"`` compares them summed
    within each latent channel ``[K]`` (:mod:`sharedattr.encoding.channels`), so that where in the image a channel is
    active does not matter (position-tolerant matching). ``batch_size`` stimuli go through the readout at a time, on
    ``device``; neurons are matched in chunks whose working set stays within about ``memory_bytes``. Only ``on``
    changes which references are found.
    """

    on: Literal["dimensions", "channels"] = "dimensions"
    batch_size: int = 256
    device: torch.device | str = "cpu"
    memory_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.on not in MATCH_ON:
            raise ValueError(f"on must be 'dimensions' or 'channels', got {self.on!r}")


@dataclass(frozen=True)
class MatchSettings:
    """How :func:`match_pairs` makes pairs: the ``drivers_per_neuron`` out-of-category stimuli that drive each neuron
    most, each matched to its ``references_per_driver`` most similar preferred-category stimuli, by ``options``."""

    drivers_per_neuron: int
    references_per_driver: int
    options: MatchOptions = field(default_factory=MatchOptions)


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

    Shared means the readout declares ``shared_pooled(latents) → [B, D]`` (ridge; :class:`ReadoutModule`), or its
    ``pooled`` returns a view expanded along the neuron axis. On ``device``, float32.
    """
    method = declared(readout, ReadoutModule).shared_pooled
    out: Tensor | None = None  # filled block by block: no second copy of [len(rows), D] while concatenating
    start = 0
    for r in rows.split(batch_size):
        x = latents[r].to(device)
        if method is not None:
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
    options: MatchOptions = MatchOptions(),
) -> tuple[Tensor, Tensor]:
    """Match each driver to its ``top_k`` most similar candidates, for its own neuron, by ``options``
    (:class:`MatchOptions`: what is compared, batches, device and memory budget).

    ``drivers`` ``[G, Q]`` stimulus indices per neuron of ``neurons`` ``[G]``; ``candidates``
    ``[K]`` stimulus indices (the preferred category). Returns similarities and candidate
    *stimulus* indices, ``[G, Q, k]`` each, most similar first. Neurons are processed in
    chunks whose working set (drivers' and candidates' contributions, similarities) stays
    within about ``options.memory_bytes``. When all neurons share one latent vector per image
    (:func:`shared_latents`) and dimensions are compared, each image's vector is pooled once, the matcher's
    ``similarity_factored`` (:class:`~sharedattr.plugins.contracts.Matcher`) compares them without forming the
    candidates' contributions where it can, and the similarities are computed on ``options.device``; otherwise
    contributions are formed per chunk and matched on the CPU.
    """
    if options.on == "dimensions" and drivers.numel():
        cand_z = shared_latents(readout, latents, candidates, options.batch_size, options.device)  # [K, D]
        if cand_z is not None:
            factors = _driver_factors(readout, latents, drivers, neurons, options)
            return _match_factored(matcher, *factors, cand_z, candidates, top_k, options)
    return _match_formed(readout, latents, matcher, drivers, candidates, neurons, top_k, options)


def _match_formed(
    readout: nn.Module,
    latents: Tensor,
    matcher: object,
    drivers: Tensor,
    candidates: Tensor,
    neurons: Tensor,
    top_k: int,
    options: MatchOptions,
) -> tuple[Tensor, Tensor]:
    """:func:`match_drivers` on the contributions formed per chunk of neurons (summed per channel with
    ``options.on = "channels"``), matched on the CPU by ``matcher.similarity``."""
    batch_size, device = options.batch_size, options.device
    channels = dimension_channels(readout, int(readout.weight.shape[1]), device) if options.on == "channels" else None
    g_count, q_count = drivers.shape
    d = int(readout.weight.shape[1])
    chunk = max(1, options.memory_bytes // max(1, (len(candidates) + q_count) * d * 4))
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
def _driver_factors(
    readout: nn.Module, latents: Tensor, drivers: Tensor, neurons: Tensor, options: MatchOptions
) -> tuple[Tensor, Tensor, Tensor]:
    """The drivers' side of factored matching: each driver's row ``inverse`` ``[G, Q]`` of ``drv_z`` ``[U, D]``, the
    shared latents of the distinct driver images (each pooled once), and the weights ``[G, D]`` of ``neurons``
    (float32), all on ``drv_z``'s device."""
    unique, inverse = drivers.unique(return_inverse=True)
    drv_z = shared_latents(readout, latents, unique, options.batch_size, options.device)  # [U, D]
    weight = readout.weight[neurons.to(readout.weight.device)].to(drv_z.device).float()
    return inverse.to(drv_z.device), drv_z, weight


@torch.inference_mode()
def _match_factored(
    matcher: object,
    inverse: Tensor,
    drv_z: Tensor,
    weight: Tensor,
    cand_z: Tensor,
    candidates: Tensor,
    top_k: int,
    options: MatchOptions,
) -> tuple[Tensor, Tensor]:
    """:func:`match_drivers` for shared latents: ``matcher.similarity_factored`` per chunk of neurons.

    ``drv_z`` ``[U, D]``: the shared latents of the distinct driver images, ``inverse`` ``[G, Q]`` each driver's row
    of it; ``weight`` ``[G, D]`` the neurons' readout weights (float32, on ``drv_z``'s device); ``cand_z`` ``[K, D]``
    the latents of the ``candidates`` ``[K]`` (stimulus indices).
    """
    similarity_factored = declared(matcher, Matcher).similarity_factored
    g_count, q_count = inverse.shape
    k_count, d = cand_z.shape
    per_neuron = 4 * (2 * q_count * d + q_count * k_count + k_count * d)
    chunk = max(1, options.memory_bytes // per_neuron)
    scratch = torch.empty(min(chunk, g_count) * q_count, d, dtype=drv_z.dtype, device=drv_z.device)  # reused
    scores, refs = [], []
    for start in range(0, g_count, chunk):
        sl = slice(start, start + chunk)
        rows = inverse[sl].flatten()
        query = torch.index_select(drv_z, 0, rows, out=scratch[: len(rows)]).view(-1, q_count, d)
        query.mul_(weight[sl, None, :])  # [g, Q, D] contributions; the matcher may overwrite them
        sim = similarity_factored(query, weight[sl], cand_z)
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
    settings: MatchSettings,
) -> list[Pair]:
    """Drivers and matched references of every neuron, grouped by preferred category (:class:`MatchSettings`).

    ``categories`` names each stimulus's category ``[S]``; ``drive`` ``[S, N]`` ranks the drivers (measured
    responses, else predictions); ``preferred`` is the preferred category of each of ``neurons``. Pairs are ordered
    by neuron (in ``neurons`` order), then driver rank, then reference rank.
    """
    by_neuron: dict[int, list[Pair]] = {}
    for category in sorted(set(preferred)):
        group = [n for n, p in zip(neurons, preferred) if p == category]
        cand = torch.tensor([i for i, c in enumerate(categories) if c == category])
        ooc = torch.tensor([i for i, c in enumerate(categories) if c != category])
        idx = torch.tensor(group)
        drivers = top_drivers(drive, ooc, idx, settings.drivers_per_neuron)  # [G, Q]
        scores, refs = match_drivers(
            readout, latents, matcher, drivers, cand, idx, settings.references_per_driver, settings.options
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
    options: MatchOptions = MatchOptions(),
) -> list[Pair]:
    """Pairs chosen by the caller, ``(neuron, driver, reference)`` output and stimulus indices, in that order, each
    with the matcher's similarity of its two images for its neuron (``rank`` 0; compared by ``options``): the same
    pairs for every method when a benchmark defines them by construction."""
    if not triples:
        return []
    batch_size, device = options.batch_size, options.device
    channels = dimension_channels(readout, int(readout.weight.shape[1]), device) if options.on == "channels" else None
    neurons, drivers, references = (torch.tensor(column) for column in zip(*triples))
    query = own_contributions(readout, latents, drivers, neurons, batch_size, device, channels)  # [M, D or C]
    cand = own_contributions(readout, latents, references, neurons, batch_size, device, channels)
    scores, _ = match_references(matcher, query[:, None], cand[:, None], 1)  # [M, 1, 1]
    return [Pair(int(n), int(d), int(r), float(s), 0) for (n, d, r), s in zip(triples, scores.flatten())]
