"""Stimulus sets, validated before any compute starts.

Stimuli come from a CSV manifest (``stimulus_id, path, category``, optional ``mask`` and ``mask:<part>`` columns;
read by :mod:`sharedattr.data.manifest`) or a folder with one sub-folder of images per category. Every problem found
is reported at once. Images and masks are decoded as :mod:`sharedattr.data.images` says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sharedattr.data.archives import ZipMember, ZipReadError
from sharedattr.data.images import decode_image, failure, image_problems, is_grey, read_mask
from sharedattr.data.manifest import PART_PREFIX, read_folder, read_manifest
from sharedattr.data.naming import CONFIG, Naming
from sharedattr.runtime.errors import DataError, MissingFileError

__all__ = ["DataError", "PART_PREFIX", "StimulusSet"]  # DataError lives in runtime.errors; imported from here too


@dataclass(frozen=True)
class StimulusSet:
    """Stimulus ids, image paths, categories and optional ground-truth mask paths (all length S).

    ``masks`` is one ground-truth mask per stimulus (manifest column ``mask``); ``part_masks``
    maps part names to per-stimulus masks of that part (columns ``mask:<part>``; None where
    the stimulus lacks the part).
    """

    ids: tuple[str, ...]
    paths: tuple[Path | ZipMember, ...]
    categories: tuple[str, ...]
    masks: tuple[Path | ZipMember | None, ...]
    part_masks: dict[str, tuple[Path | ZipMember | None, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def category_names(self) -> list[str]:
        return sorted(set(self.categories))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        images: str | Path | None = None,
        category_column: str = "category",
        naming: Naming = CONFIG,
    ) -> StimulusSet:
        """From a CSV (a manifest, or a BrainIO stimulus set) or a folder per category.

        ``images``: where a CSV's image (and mask) paths lie: a folder, or a ZIP archive read without extracting
        (default: the CSV's folder). ``category_column``: the CSV column holding each stimulus's category.
        ``naming``: how errors name these settings (a config's fields by default; :mod:`sharedattr.data.naming`).
        """
        path = Path(path)
        if not path.exists():
            raise MissingFileError(path, "stimulus set")
        try:
            if path.is_dir():
                return cls.from_folder(path)
            return cls.from_manifest(
                path, images=None if images is None else Path(images), category_column=category_column, naming=naming
            )
        except OSError as err:  # e.g. no permission to read the manifest or a folder
            raise DataError(path, [f"cannot read: {type(err).__name__}: {err}"]) from None

    @classmethod
    def from_manifest(
        cls, path: Path, *, images: Path | None = None, category_column: str = "category", naming: Naming = CONFIG
    ) -> StimulusSet:
        """A CSV with ``stimulus_id``, the image column (``path``, or BrainIO's ``filename``), the category column
        and optional ``mask``/``mask:<part>`` columns (:func:`~sharedattr.data.manifest.read_manifest`)."""
        return cls(**vars(read_manifest(path, images=images, category_column=category_column, naming=naming)))

    @classmethod
    def from_folder(cls, path: Path) -> StimulusSet:
        """One sub-folder of images per category (:func:`~sharedattr.data.manifest.read_folder`)."""
        return cls(**vars(read_folder(path)))

    def check_images(self, images: bool = True) -> None:
        """Decode every image (unless ``images`` is False) and every mask once and check its pixels; raise
        :class:`DataError` listing all failures. (With a warm feature cache no image needs decoding, but the masks
        are read only later, by the metrics: they are checked whatever the cache holds.)"""
        problems = self._problems(images)
        if problems:
            raise DataError("stimulus images", problems)

    def _problems(self, images: bool = True, skip: frozenset[int] = frozenset()) -> list[str]:
        """What :meth:`check_images` reports: one line per image (unless ``images`` is False) and mask that cannot be
        read, decoded or used; the images of the stimuli at indices ``skip`` are left out (reported already)."""
        problems = []
        for i, (sid, p) in enumerate(zip(self.ids, self.paths)):
            if images and i not in skip:
                problems += image_problems(sid, p)
            masks = [("mask", self.masks[i])] + [
                (f"{PART_PREFIX}{part}", paths[i]) for part, paths in self.part_masks.items()
            ]
            for column, mask in masks:
                if mask is not None:
                    try:
                        read_mask(mask, (1, 1))
                    except DataError as err:
                        problems.append(f"{sid}: {column}: {err.problems[0]}")
        return problems

    def check_categories(self, allowed: Sequence[str] | None) -> None:
        """Raise :class:`DataError` listing every stimulus whose category is not in ``allowed`` (if given)."""
        if allowed is None:
            return
        unknown = [
            f"{sid}: unknown category {c!r} (allowed: {', '.join(allowed)})"
            for sid, c in zip(self.ids, self.categories)
            if c not in allowed
        ]
        if unknown:
            raise DataError("stimulus categories", unknown)

    def load_images(self, size: tuple[int, int], channels: int, indices: Sequence[int] | None = None) -> Tensor:
        """Images ``[len(indices), channels, H, W]`` float in [0, 1], resized to ``size`` (all when None).

        Any Pillow mode is read as the module docstring says (alpha dropped, 16-bit scaled);
        :class:`DataError` lists every image that cannot be decoded or has unusable pixels.
        """
        indices = range(len(self)) if indices is None else indices
        out = torch.empty(len(indices), channels, *size)
        problems = []
        for row, i in enumerate(indices):
            try:
                arr = decode_image(self.paths[i], size, channels)
            except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
                problems.append(failure(self.ids[i], "image", self.paths[i], err))
                continue
            out[row] = torch.from_numpy(arr).permute(2, 0, 1)
        if problems:
            raise DataError("stimulus images", problems)
        return out

    def channels_for(self, model_channels: int, indices: Sequence[int] | None = None) -> int:
        """The channels to read stimuli ``indices`` (all when None) with for a model of ``model_channels`` inputs:
        1 where every one of them is a grey image (its attributions are then taken with respect to the image as
        given, one channel; the backbone repeats it to its own channels), else ``model_channels``.

        Reads only the files' headers; an image that cannot be opened counts as colour (decoding reports it).
        """
        if model_channels == 1:
            return 1
        indices = range(len(self)) if indices is None else indices
        return 1 if all(is_grey(self.paths[i]) for i in indices) else model_channels

    def content_digest(self) -> str:
        """SHA-256 of the ids, categories and every image's bytes (a ZIP member's inflated bytes: what is decoded): the
        identity of the stimulus content, which keys the feature cache and the fitted model.

        An image that cannot be read raises :class:`DataError`, listing with it every other image and mask that
        cannot be read or decoded (:meth:`check_images`), so that one message names them all.
        """
        h = hashlib.sha256()
        problems, failed = [], set()
        for i, (sid, cat, p) in enumerate(zip(self.ids, self.categories, self.paths)):
            h.update(f"{sid}\0{cat}\0".encode())
            try:
                if isinstance(p, ZipMember):
                    h.update(p.read_bytes())
                else:
                    with open(p, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            h.update(block)
            except (OSError, ZipReadError) as err:
                problems.append(failure(sid, "image", p, err, "read"))
                failed.add(i)
            h.update(b"\1")
        if problems:
            raise DataError("stimulus images", problems + self._problems(skip=frozenset(failed)))
        return h.hexdigest()

    def subset(self, ids: Sequence[str]) -> StimulusSet:
        """The stimuli ``ids`` (in that order) with their images, categories and masks: e.g. the images of some pairs,
        so that :func:`sharedattr.compare` reads and embeds only those. An unknown id raises ``KeyError``.

        >>> pairs_only = stimuli.subset(["body-003", "object-017"])  # doctest: +SKIP
        """
        where = {sid: i for i, sid in enumerate(self.ids)}
        rows = [where[sid] for sid in ids]
        return StimulusSet(
            ids=tuple(self.ids[i] for i in rows),
            paths=tuple(self.paths[i] for i in rows),
            categories=tuple(self.categories[i] for i in rows),
            masks=tuple(self.masks[i] for i in rows),
            part_masks={part: tuple(paths[i] for i in rows) for part, paths in self.part_masks.items()},
        )

    @property
    def has_masks(self) -> bool:
        return any(m is not None for m in self.masks)

    def load_masks(self, size: tuple[int, int], indices: Sequence[int] | None = None) -> Tensor | None:
        """Ground-truth masks ``[len(indices), H, W]`` bool (nearest resize), or None if the set has none."""
        if not self.has_masks:
            return None
        indices = range(len(self)) if indices is None else indices
        out = torch.zeros(len(indices), *size, dtype=torch.bool)
        for row, i in enumerate(indices):
            if self.masks[i] is not None:
                out[row] = read_mask(self.masks[i], size)
        return out

    def has_part(self, index: int, part: str) -> bool:
        """Whether stimulus ``index`` has a mask for ``part`` (a ``mask:<part>`` manifest cell)."""
        return part in self.part_masks and self.part_masks[part][index] is not None

    def load_part_masks(self, size: tuple[int, int], indices: Sequence[int], parts: Sequence[Sequence[str]]) -> Tensor:
        """Per row, the union of the masks of ``parts[row]`` on stimulus ``indices[row]``: ``[len(indices), H, W]``
        bool.

        Parts a stimulus lacks add nothing; a row with no parts is all False.
        """
        unknown = sorted({p for row in parts for p in row} - set(self.part_masks))
        if unknown:
            raise DataError(
                "stimulus part masks",
                [
                    f"no manifest column {PART_PREFIX}{p} (part masks given: {', '.join(self.part_masks) or 'none'})"
                    for p in unknown
                ],
            )
        out = torch.zeros(len(indices), *size, dtype=torch.bool)
        for row, (i, names) in enumerate(zip(indices, parts)):
            for name in names:
                if self.part_masks[name][i] is not None:
                    out[row] |= read_mask(self.part_masks[name][i], size)
        return out
