"""How well a backbone's layer separates parts: indices of channel profiles, latent patterns and receptive fields.

Pure functions of activations (or of an input gradient), used by ``benchmarks/probe_backbones.py`` to probe every
backbone and layer on isolated-part images before any attribution runs. Every function takes tensors that the caller
has already computed and returns numbers; none runs a network.

- A *channel profile* ``r(P)`` ``[K]`` is a part's mean activation per channel (over its images and positions; the
  latents are post-ReLU, so profiles are non-negative). :func:`profile_intersections` normalises each profile to sum
  1 and intersects them, ``I(P, Q) = Σ_k min(p_P,k, p_Q,k)`` (1: the same channels in the same proportions, 0:
  disjoint channels); :func:`part_specificity_index` is ``1 − mean_{P<Q} I(P, Q)``.
- :func:`selective_mass_share`: the share of the total mass ``Σ_k Σ_P r_k(P)`` in channels whose largest ``r_k(P)``
  is at least ``ratio`` × the second largest (optionally of the normalised profiles).
- :func:`cosine`, :func:`row_cosines` and :func:`mean_cosine`: cosines of flattened latent patterns.
- :func:`erf_radii`: the radius about the centre of mass of an effective receptive field (an absolute input
  gradient ``[H, W]``) containing a share of its mass, and its RMS radius.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def _check_profiles(profiles: Tensor) -> Tensor:
    if profiles.dim() != 2 or profiles.shape[0] < 2:
        raise ValueError(f"profiles must be [parts ≥ 2, channels], got shape {tuple(profiles.shape)}")
    profiles = profiles.double()
    if not torch.isfinite(profiles).all() or (profiles < 0).any():
        raise ValueError("profiles must be finite and non-negative (mean post-ReLU activations)")
    if (profiles.sum(1) <= 0).any():
        raise ValueError("every part's profile needs some activation (a profile that sums to 0 has no proportions)")
    return profiles


def profile_intersections(profiles: Tensor) -> Tensor:
    """The intersection of every two normalised channel profiles.

    ``profiles`` ``[P, K]``: part P's mean activation per channel (non-negative, each row with a positive sum).
    Returns ``I`` ``[P, P]`` float64 with ``I[P, Q] = Σ_k min(p_P,k, p_Q,k)``, ``p_P = r(P) / Σ_k r_k(P)``: 1 on the
    diagonal, 0 for parts that use disjoint channels. Raises ValueError for negative, non-finite or all-zero rows.

    Example::

        >>> profile_intersections(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))[0, 1].item()
        0.5
    """
    p = _check_profiles(profiles)
    p = p / p.sum(1, keepdim=True)
    return torch.minimum(p[:, None, :], p[None, :, :]).sum(-1)


def part_specificity_index(profiles: Tensor) -> float:
    """``1 − mean_{P<Q} I(P, Q)`` over every pair of parts (:func:`profile_intersections`): 1 when every part drives
    its own channels, 0 when all parts drive the same channels in the same proportions.

    ``profiles`` ``[P, K]``, P ≥ 2 (with the four parts head, torso, limbs, shape: the mean over 6 pairs).

    Example::

        >>> part_specificity_index(torch.eye(4))
        1.0
    """
    intersections = profile_intersections(profiles)
    i, j = torch.triu_indices(len(intersections), len(intersections), offset=1)
    return float(1.0 - intersections[i, j].mean())


def selective_mass_share(profiles: Tensor, ratio: float = 2.0, normalise: bool = False) -> float:
    """The share of the total mass ``Σ_k Σ_P r_k(P)`` in the channels whose largest ``r_k(P)`` is at least ``ratio``
    times their second largest (a channel driven by one part alone counts).

    ``profiles`` ``[P, K]`` (non-negative, P ≥ 2); returns a share in [0, 1]. With ``normalise``, each part's profile
    is first scaled to sum 1 (``p_P``), so a part that drives more in all (a larger part) does not make the channels
    look selective for it.

    Example::

        >>> selective_mass_share(torch.tensor([[2.0, 1.0], [1.0, 1.0]]))  # channel 0 is 2x selective, channel 1 not
        0.6
    """
    if ratio < 1:
        raise ValueError(f"ratio must be ≥ 1, got {ratio}")
    p = _check_profiles(profiles)
    if normalise:
        p = p / p.sum(1, keepdim=True)
    top = torch.topk(p, 2, dim=0).values  # [2, K]: the largest and second largest per channel
    selective = top[0] >= ratio * top[1]
    return float(p[:, selective].sum() / p.sum())


def cosine(a: Tensor, b: Tensor) -> float:
    """The cosine between ``a`` and ``b`` flattened (any shapes with the same number of elements); NaN if either is
    all zero.

    Example::

        >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))  # doctest: +ELLIPSIS
        0.7071...
    """
    return float(mean_cosine(a.reshape(1, -1), b.reshape(1, -1)))


def row_cosines(a: Tensor, b: Tensor) -> Tensor:
    """The cosine between ``a[i]`` and ``b[i]`` flattened, per row: ``[N, ...]`` each (the same shape) → ``[N]``
    float64, NaN where either row is all zero.

    Example::

        >>> row_cosines(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 0.0], [1.0, 0.0]]))
        tensor([1., nan], dtype=torch.float64)
    """
    if a.shape != b.shape or a.dim() < 1:
        raise ValueError(f"a and b need the same shape [N, ...], got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    out = (a * b).sum(1) / norms
    return torch.where(norms > 0, out, torch.full_like(out, math.nan))


def mean_cosine(a: Tensor, b: Tensor) -> float:
    """The mean of :func:`row_cosines` over the rows where neither row is all zero (NaN when every row is).

    Example::

        >>> mean_cosine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        0.5
    """
    values = row_cosines(a, b)
    kept = ~values.isnan()
    return float(values[kept].mean()) if kept.any() else math.nan


class ErfRadii(NamedTuple):
    """Radii of an effective receptive field, in pixels, about its centre of mass: ``mass`` (the smallest radius
    holding the share of the mass asked for) and ``rms`` (the root mean squared distance, weighted by mass)."""

    mass: float
    rms: float


def erf_radii(gradient: Tensor, share: float = 0.5) -> ErfRadii:
    """The radii of the effective receptive field ``gradient`` ``[H, W]`` (non-negative: an absolute input gradient,
    averaged over images), about its centre of mass (pixel centres at integer coordinates).

    ``mass``: the distance of the nearest pixel at which the cumulative mass, pixels taken by distance, reaches
    ``share`` of the total; ``rms``: ``sqrt(Σ g d² / Σ g)``. Raises ValueError for a negative or all-zero gradient.

    Example::

        >>> g = torch.zeros(5, 5); g[2, 1] = g[2, 3] = 1.0  # two equal masses 2 px apart
        >>> erf_radii(g)
        ErfRadii(mass=1.0, rms=1.0)
    """
    if gradient.dim() != 2:
        raise ValueError(f"gradient must be [H, W], got shape {tuple(gradient.shape)}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    g = gradient.double()
    if not torch.isfinite(g).all() or (g < 0).any() or g.sum() <= 0:
        raise ValueError("gradient must be finite, non-negative and not all zero")
    ys, xs = torch.meshgrid(
        torch.arange(g.shape[0], dtype=torch.float64), torch.arange(g.shape[1], dtype=torch.float64), indexing="ij"
    )
    total = g.sum()
    cy, cx = (g * ys).sum() / total, (g * xs).sum() / total
    distance = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt().flatten()
    order = torch.argsort(distance, stable=True)
    cumulative = torch.cumsum(g.flatten()[order], 0) / total
    reached = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=torch.float64) - 1e-12))
    rms = float(((g.flatten() * distance**2).sum() / total).sqrt())
    return ErfRadii(float(distance[order][min(reached, len(order) - 1)]), rms)
