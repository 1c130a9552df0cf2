"""The images and ground-truth masks of driver/reference pairs, aligned with the pairs.

A pair is anything with a ``driver`` and a ``reference`` stimulus index (a
:class:`sharedattr.selection.matching.Pair`). Masks come from the stimulus set's ``mask``
column or, where the pair's ground truth is known (:func:`sharedattr.data.ground_truth.pair_truth`),
from the union of those parts' masks on each image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sharedattr.data.ground_truth import PairTruth


@dataclass
class PairImages:
    """The images of P pairs and their ground truth, aligned with the pairs.

    ``drivers``/``references`` ``[P, C, H, W]`` in [0, 1]. Masks ``[P, H, W]`` bool, each None where
    the stimulus set has no such ground truth: ``*_masks`` the shared driving parts of each image
    (or the ``mask`` column where a pair has no part ground truth), ``*_unshared`` the driving
    parts the image shows and its partner lacks, and ``*_parts`` each shared part's own mask on
    the image (all False in the rows of pairs that do not share it; with piece-level truth, the union of the
    part's shared pieces: a reference's copied arm, not its other limbs).
    """

    drivers: Tensor
    references: Tensor
    driver_masks: Tensor | None = None
    reference_masks: Tensor | None = None
    driver_unshared: Tensor | None = None
    reference_unshared: Tensor | None = None
    driver_parts: dict[str, Tensor] = field(default_factory=dict)
    reference_parts: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        stimuli: Any,
        pairs: Sequence[Any],
        size: tuple[int, int],
        channels: int,
        truth: Sequence[PairTruth | None] | None = None,
    ) -> PairImages:
        """The drivers' and references' images and masks of ``pairs`` from a :class:`~sharedattr.data.StimulusSet`.

        ``truth`` (per pair; :func:`sharedattr.data.ground_truth.pair_truth`) names the parts each
        pair shares and those only one image shows: the masks are the unions of those parts' masks
        on each image. Pairs without a truth (None) use the stimulus set's ``mask`` column.
        """
        drivers, references = [p.driver for p in pairs], [p.reference for p in pairs]
        images = cls(
            stimuli.load_images(size, channels, drivers),
            stimuli.load_images(size, channels, references),
            stimuli.load_masks(size, drivers),
            stimuli.load_masks(size, references),
        )
        rows = [i for i, t in enumerate(truth or []) if t is not None]
        if not rows:
            return images
        known = [truth[i] for i in rows]
        for which, indices in (("driver", drivers), ("reference", references)):
            stimulus_rows = [indices[i] for i in rows]
            masks = getattr(images, f"{which}_masks")
            masks = torch.zeros(len(pairs), *size, dtype=torch.bool) if masks is None else masks
            masks[rows] = stimuli.load_part_masks(size, stimulus_rows, [t.shared for t in known])
            unshared = torch.zeros(len(pairs), *size, dtype=torch.bool)
            unshared[rows] = stimuli.load_part_masks(size, stimulus_rows, [t.unshared(which) for t in known])
            parts = {}
            for label in dict.fromkeys(PairTruth.label(q) for t in known for q in t.shared):
                part = torch.zeros(len(pairs), *size, dtype=torch.bool)
                part[rows] = stimuli.load_part_masks(
                    size, stimulus_rows, [[q for q in t.shared if PairTruth.label(q) == label] for t in known]
                )
                parts[label] = part
            setattr(images, f"{which}_masks", masks)
            setattr(images, f"{which}_unshared", unshared)
            setattr(images, f"{which}_parts", parts)
        return images

    def masks_digest(self) -> str | None:
        """A content hash of every mask (None without masks): part of the work items' identity."""
        if self.driver_masks is None and self.reference_masks is None:
            return None
        h = hashlib.sha256()
        for m in (self.driver_masks, self.reference_masks, self.driver_unshared, self.reference_unshared):
            h.update(b"-" if m is None else m.contiguous().numpy().tobytes())
        for parts in (self.driver_parts, self.reference_parts):
            for name in sorted(parts):
                h.update(name.encode() + parts[name].contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def images(self, which: str) -> Tensor:
        return self.drivers if which == "driver" else self.references

    def partners(self, which: str) -> Tensor:
        """The other image of each pair: the references for the drivers, and the drivers for the references."""
        return self.references if which == "driver" else self.drivers

    def masks(self, which: str) -> Tensor | None:
        return self.driver_masks if which == "driver" else self.reference_masks

    def unshared(self, which: str) -> Tensor | None:
        return self.driver_unshared if which == "driver" else self.reference_unshared

    def parts(self, which: str) -> dict[str, Tensor]:
        return self.driver_parts if which == "driver" else self.reference_parts

    def subset(self, rows: slice) -> PairImages:
        """The images and masks of pairs ``rows`` (views, no copy)."""

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return PairImages(
            self.drivers[rows],
            self.references[rows],
            part(self.driver_masks),
            part(self.reference_masks),
            part(self.driver_unshared),
            part(self.reference_unshared),
            {k: v[rows] for k, v in self.driver_parts.items()},
            {k: v[rows] for k, v in self.reference_parts.items()},
        )
