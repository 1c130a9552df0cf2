"""The images and ground-truth masks of driver/reference pairs, aligned with the pairs.

A pair is anything with a ``driver`` and a ``reference`` stimulus index (a
:class:`sharedattr.selection.matching.Pair`). Masks come from the stimulus set's ``mask``
column or, where the pair's shared parts are known (:func:`sharedattr.data.ground_truth.pair_parts`),
from the union of those parts' masks on each image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class PairImages:
    """The images of P pairs, aligned with the pairs: ``drivers``/``references`` ``[P, C, H, W]`` in [0, 1];
    ground-truth masks ``[P, H, W]`` bool, or None where the stimulus set has no ground truth."""

    drivers: Tensor
    references: Tensor
    driver_masks: Tensor | None = None
    reference_masks: Tensor | None = None

    @classmethod
    def load(
        cls,
        stimuli: Any,
        pairs: Sequence[Any],
        size: tuple[int, int],
        channels: int,
        parts: Sequence[Sequence[str] | None] | None = None,
    ) -> PairImages:
        """The drivers' and references' images and masks of ``pairs`` from a :class:`~sharedattr.data.StimulusSet`.

        ``parts`` (per pair; see :func:`sharedattr.data.ground_truth.pair_parts`) names the parts
        the pair shares: that pair's masks are the union of those parts' masks on each image.
        Pairs without parts (None) use the stimulus set's ``mask`` column.
        """
        drivers, references = [p.driver for p in pairs], [p.reference for p in pairs]
        images = cls(
            stimuli.load_images(size, channels, drivers),
            stimuli.load_images(size, channels, references),
            stimuli.load_masks(size, drivers),
            stimuli.load_masks(size, references),
        )
        rows = [i for i, names in enumerate(parts or []) if names is not None]
        if rows:
            names = [parts[i] for i in rows]
            for attr, indices in (("driver_masks", drivers), ("reference_masks", references)):
                masks = getattr(images, attr)
                if masks is None:
                    masks = torch.zeros(len(pairs), *size, dtype=torch.bool)
                masks[rows] = stimuli.load_part_masks(size, [indices[i] for i in rows], names)
                setattr(images, attr, masks)
        return images

    def masks_digest(self) -> str | None:
        """A content hash of the masks (None without masks): part of the work items' identity."""
        if self.driver_masks is None and self.reference_masks is None:
            return None
        h = hashlib.sha256()
        for m in (self.driver_masks, self.reference_masks):
            h.update(b"-" if m is None else m.contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def images(self, which: str) -> Tensor:
        return self.drivers if which == "driver" else self.references

    def subset(self, rows: slice) -> PairImages:
        """The images and masks of pairs ``rows`` (views, no copy)."""

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return PairImages(
            self.drivers[rows], self.references[rows], part(self.driver_masks), part(self.reference_masks)
        )

    def masks(self, which: str) -> Tensor | None:
        return self.driver_masks if which == "driver" else self.reference_masks
