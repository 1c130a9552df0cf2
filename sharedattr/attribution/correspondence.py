"""Cell correspondences between two feature maps: each cell of one image matched to its best feature match anywhere
in the other.

For feature maps ``f_a``, ``f_b`` ``[K, h, w]`` of two images (``P = h·w`` cells, each a ``[K]`` feature vector), the
best match of cell ``i`` of ``a`` in ``b`` is

    j*(i) = argmax_j cos(f_a[:, i], f_b[:, j])        over all P cells j of b; ties: the lowest j

with ``cos = 0`` where either vector is 0 (a dead cell matches every cell equally, so it takes cell 0). Realigning
``b`` to ``a``'s cells, ``f̌_b[:, i] = f_b[:, j*(i)]``, puts the partner's best-matching features at each of ``a``'s own
positions, so a part shared at different places in the two images is compared with itself
(``parallel_backprop`` with ``sharing = "correspondence"``, docs/methods.md).
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class Matches(NamedTuple):
    """Best matches of each cell of one image in its partner: ``index`` ``[B, P]`` (long, ``j*(i)``) and ``cosine``
    ``[B, P]`` (the cosine of each match, in [-1, 1])."""

    index: Tensor
    cosine: Tensor


def best_matches(f_a: Tensor, f_b: Tensor) -> Matches:
    """For each cell ``i`` of ``f_a`` ``[B, K, h, w]``, its best feature match ``j*(i)`` among the cells of ``f_b``
    (one shape), by cosine over the ``K`` channels; ties go to the lowest ``j`` (row-major cell order).

    >>> import torch
    >>> a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]: cell 0 is channel 0, cell 1 channel 1
    >>> best_matches(a, a.flip(-1)).index.tolist()  # the partner has them swapped
    [[1, 0]]
    """
    if f_a.shape != f_b.shape or f_a.dim() != 4:
        raise ValueError(f"feature maps must be [B, K, h, w] of one shape; got {tuple(f_a.shape)}, {tuple(f_b.shape)}")
    a = F.normalize(f_a.flatten(2), dim=1)  # [B, K, P], zero vectors stay 0
    b = F.normalize(f_b.flatten(2), dim=1)
    cosine = a.transpose(1, 2) @ b  # [B, P (cells of a), P (cells of b)]
    best, index = cosine.max(dim=2)  # the first maximum: ties go to the lowest j
    return Matches(index, best)


def realign(f_b: Tensor, index: Tensor) -> Tensor:
    """``f̌_b[:, i] = f_b[:, index[i]]``: ``f_b`` ``[B, K, h, w]`` read at the cells ``index`` ``[B, h·w]``, in the
    shape of ``f_b``.

    >>> import torch
    >>> realign(torch.arange(4.0).view(1, 1, 2, 2), torch.tensor([[3, 3, 0, 1]])).flatten().tolist()
    [3.0, 3.0, 0.0, 1.0]
    """
    flat = f_b.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).view_as(f_b)
