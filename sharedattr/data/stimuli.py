"""Stimulus sets, validated before any compute starts.

Stimuli come from a CSV manifest (``stimulus_id, path, category``, optional ``mask`` and
``mask:<part>`` columns) or a folder with one sub-folder of images per category. Every
problem found is reported at once.

Images are read with Pillow, whatever their mode, as ``[C, H, W]`` float in [0, 1] (see
:meth:`StimulusSet.load_images`): 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ...)
are converted to grey or RGB by Pillow, dropping any alpha channel (``LA``, ``RGBA``,
transparent palettes); 16-bit grey (``I;16``) is divided by 65535; 32-bit integer grey
(``I``) must lie in 0 … 65535 and is read as 16-bit; float grey (``F``) must lie in [0, 1].
NaN or infinite pixels, values outside those ranges, undecodable, truncated or
decompression-bomb files are a :class:`DataError` naming each file. Only the first frame of
an animated or multi-page file is read, and EXIF orientation tags are not applied.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sharedattr.data.archives import ZipMember, ZipReadError, image_source, zip_members
from sharedattr.runtime.errors import MissingFileError, UserError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""Pillow modes of one grey channel deeper than 8 bits: scaled to [0, 1] by sharedattr, not clipped by Pillow."""
GREY_MODES = ("1", "L", "LA", *HIGH_DEPTH_MODES)
"""Pillow modes of grey images (``LA``: grey with alpha, which is dropped)."""
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MAX_LISTED = 20
PART_PREFIX = "mask:"


class DataError(UserError):
    """Problems in the user's stimuli or responses, listed all at once."""

    def __init__(self, source: object, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in shown) + more)


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
        cls, path: str | Path, *, images: str | Path | None = None, category_column: str = "category"
    ) -> StimulusSet:
        """From a CSV (a manifest, or a BrainIO stimulus set) or a folder per category.

        ``images``: where a CSV's image (and mask) paths lie: a folder, or a ZIP archive read without extracting
        (default: the CSV's folder). ``category_column``: the CSV column holding each stimulus's category.
        """
        path = Path(path)
        if not path.exists():
            raise MissingFileError(path, "stimulus set")
        try:
            if path.is_dir():
                return cls.from_folder(path)
            return cls.from_manifest(
                path, images=None if images is None else Path(images), category_column=category_column
            )
        except OSError as err:  # e.g. no permission to read the manifest or a folder
            raise DataError(path, [f"cannot read: {type(err).__name__}: {err}"]) from None

    @classmethod
    def from_manifest(cls, path: Path, *, images: Path | None = None, category_column: str = "category") -> StimulusSet:
        """A CSV with ``stimulus_id``, the image column (``path``, or BrainIO's ``filename``), the category column
        and optional ``mask``/``mask:<part>`` columns; other columns (metadata) are ignored."""
        problems: list[str] = []
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fieldnames = list(reader.fieldnames or [])
                rows = list(reader)
        except UnicodeDecodeError as err:
            raise DataError(
                path,
                [
                    f"not UTF-8 text ({err.reason} at byte {err.start}); a manifest is a CSV "
                    "file (stimulus_id, path, category)"
                ],
            ) from None
        except csv.Error as err:
            raise DataError(path, [f"not a readable CSV file: {err}"]) from None
        columns = set(fieldnames)
        image_column = "path" if "path" in columns or "filename" not in columns else "filename"
        missing = [c for c in ("stimulus_id", image_column, category_column) if c not in columns]
        if missing:
            hint = (
                f"; the category column is set by data.category_column (columns here: {', '.join(fieldnames)})"
                if category_column in missing
                else ""
            )
            raise DataError(
                path,
                [
                    f"missing column(s) {', '.join(sorted(missing))}; a stimulus set needs stimulus_id, path "
                    f"(or BrainIO's filename) and {category_column} (and optionally mask){hint}"
                ],
            )
        part_columns = [c for c in fieldnames if c.startswith(PART_PREFIX)]
        for c in part_columns:
            if not c[len(PART_PREFIX) :].strip():
                problems.append(f"column {c!r}: a part mask column needs a part name, e.g. 'mask:head'")
        locate, missing_file, source_problems = _locator(path, images, rows, [image_column, "mask", *part_columns])
        if source_problems:
            raise DataError(path, source_problems)
        ids, paths, cats, masks, seen = [], [], [], [], {}
        located: list[tuple[str, str, Path | ZipMember | None]] = []  # (line: column, stimulus id, file) per cell
        parts: dict[str, list[Any]] = {c[len(PART_PREFIX) :].strip(): [] for c in part_columns}
        for line, row in enumerate(rows, start=2):
            sid, rel, cat = (
                (row.get("stimulus_id") or "").strip(),
                (row.get(image_column) or "").strip(),
                (row.get(category_column) or "").strip(),
            )
            if not sid:
                problems.append(f"line {line}: empty stimulus_id")
            elif sid in seen:
                problems.append(f"line {line}: duplicate stimulus_id {sid!r} (first on line {seen[sid]})")
            seen.setdefault(sid, line)
            if not cat:
                problems.append(f"line {line}: empty {category_column}")
            of = f" (stimulus_id {sid!r})" if sid else ""
            image = locate(rel) if rel else None
            if image is None:
                problems.append(f"line {line}: image {missing_file(rel) if rel else 'not found: (empty path)'}{of}")
            mask_rel = (row.get("mask") or "").strip()
            mask = locate(mask_rel) if mask_rel else None
            if mask_rel and mask is None:
                problems.append(f"line {line}: mask {missing_file(mask_rel)}{of}")
            for column in part_columns:
                part_rel = (row.get(column) or "").strip()
                part_mask = locate(part_rel) if part_rel else None
                if part_rel and part_mask is None:
                    problems.append(f"line {line}: {column} {missing_file(part_rel)}{of}")
                parts[column[len(PART_PREFIX) :].strip()].append(part_mask)
                located.append((f"line {line}: {column}", sid, part_mask))
            ids.append(sid), paths.append(image), cats.append(cat), masks.append(mask)
            located += [(f"line {line}: image", sid, image), (f"line {line}: mask", sid, mask)]
        if not rows:
            problems.append("the manifest lists no stimuli")
        if problems:
            raise DataError(path, problems + _unreadable_members(located))
        return cls(tuple(ids), tuple(paths), tuple(cats), tuple(masks), {p: tuple(v) for p, v in parts.items()})

    @classmethod
    def from_folder(cls, path: Path) -> StimulusSet:
        ids, paths, cats, first = [], [], [], {}
        problems = []
        for category in sorted(p for p in path.iterdir() if p.is_dir()):
            for image in sorted(p for p in category.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                sid = f"{category.name}/{image.stem}"
                if sid in first:
                    problems.append(
                        f"{image.name} and {first[sid].name} in {category.name}/ both give stimulus id "
                        f"{sid!r}; rename one of them"
                    )
                    continue
                first[sid] = image
                ids.append(sid)
                paths.append(image)
                cats.append(category.name)
        if not ids:
            problems.append("no images found; expected one sub-folder of images per category")
        if problems:
            raise DataError(path, problems)
        return cls(tuple(ids), tuple(paths), tuple(cats), (None,) * len(ids))

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
                problems += _image_problems(sid, p)
            masks = [("mask", self.masks[i])] + [
                (f"{PART_PREFIX}{part}", paths[i]) for part, paths in self.part_masks.items()
            ]
            for column, mask in masks:
                if mask is not None:
                    try:
                        _read_mask(mask, (1, 1))
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
        from PIL import Image

        indices = range(len(self)) if indices is None else indices
        mode = "L" if channels == 1 else "RGB"
        out = torch.empty(len(indices), channels, *size)
        problems = []
        for row, i in enumerate(indices):
            try:
                with Image.open(image_source(self.paths[i])) as im:
                    grey = _high_depth_grey(im)
                    if grey is None:
                        im = im.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
                        arr = np.asarray(im, dtype=np.float32) / 255.0
                    else:
                        resized = Image.fromarray(grey).resize((size[1], size[0]), Image.BILINEAR)
                        arr = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)[..., None]
                        arr = np.repeat(arr, channels, axis=2)
            except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
                problems.append(_failure(self.ids[i], "image", self.paths[i], err))
                continue
            out[row] = torch.from_numpy(arr.reshape(size[0], size[1], -1)).permute(2, 0, 1)
        if problems:
            raise DataError("stimulus images", problems)
        return out

    def channels_for(self, model_channels: int, indices: Sequence[int] | None = None) -> int:
        """The channels to read stimuli ``indices`` (all when None) with for a model of ``model_channels`` inputs:
        1 where every one of them is a grey image (its attributions are then taken with respect to the image as
        given, one channel; the backbone repeats it to its own channels), else ``model_channels``.

        Reads only the files' headers; an image that cannot be opened counts as colour (decoding reports it).
        """
        from PIL import Image

        if model_channels == 1:
            return 1
        indices = range(len(self)) if indices is None else indices
        for i in indices:
            try:
                with Image.open(image_source(self.paths[i])) as im:
                    if im.mode not in GREY_MODES:
                        return model_channels
            except Exception:  # noqa: BLE001 - decoding reports unreadable files with their reason
                return model_channels
        return 1

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
                problems.append(_failure(sid, "image", p, err, "read"))
                failed.add(i)
            h.update(b"\1")
        if problems:
            raise DataError("stimulus images", problems + self._problems(skip=frozenset(failed)))
        return h.hexdigest()

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
                out[row] = _read_mask(self.masks[i], size)
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
                    out[row] |= _read_mask(self.part_masks[name][i], size)
        return out


def _locator(
    manifest: Path, images: Path | None, rows: list[dict[str, str]], columns: list[str]
) -> tuple[Callable[[str], Path | ZipMember | None], Callable[[str], str], list[str]]:
    """``locate(relative path)`` → the file or ZIP member (None when unusable), ``missing(relative path)`` → a
    phrase saying where it was looked for and why it fails, and the problems of the image source itself."""
    if images is not None and images.suffix.lower() == ".zip":
        names = [(row.get(c) or "").strip() for row in rows for c in columns]
        members, reasons, error = zip_members(images, [n for n in names if n])
        return (
            members.get,
            lambda rel: f"{images}:{rel} {reasons.get(rel, 'is not in the archive')}",
            [] if error is None else [error],
        )
    base = manifest.parent if images is None else images

    def locate(rel: str) -> Path | None:
        candidate = base / rel
        return candidate if _is_file(candidate) else None

    return locate, lambda rel: f"not found: {base / rel}", []


def _unreadable_members(located: list[tuple[str, str, Path | ZipMember | None]]) -> list[str]:
    """One problem per ZIP member of ``located`` (``(where, stimulus id, file)``) whose data cannot be read (a damaged
    stream, found only by reading it), so that a stimulus set already refused lists them too; each member is read
    once, however many cells name it."""
    problems, seen = [], {}
    for where, sid, member in located:
        if isinstance(member, ZipMember):
            if member not in seen:
                try:
                    member.read_bytes()
                    seen[member] = None
                except ZipReadError as err:
                    seen[member] = str(err)
            if seen[member] is not None:
                of = f" (stimulus_id {sid!r})" if sid else ""
                problems.append(f"{where} {seen[member]}{of}")
    return problems


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the OS cannot even look the name up (e.g. a name too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _high_depth_grey(im: PILImage) -> np.ndarray | None:
    """The pixels of a 16-bit, 32-bit integer or float grey image as float32 ``[H, W]`` in [0, 1]; None for other modes.

    ``I;16*`` is divided by 65535; ``I`` must lie in 0 … 65535 (16-bit data stored as 32-bit)
    and is divided by 65535; ``F`` must lie in [0, 1]. Raises ValueError for NaN or infinite
    pixels and for values out of range, rather than letting Pillow clip them to 0 … 255.
    """
    if im.mode not in HIGH_DEPTH_MODES:
        return None
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{int((~np.isfinite(a)).sum())} NaN or infinite pixel value(s) (mode {im.mode})")
    low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode == "F":
        if low < 0 or high > 1:
            raise ValueError(
                f"float (mode F) pixels range from {low:g} to {high:g}; sharedattr reads float images "
                "as intensities in [0, 1]: rescale them, or save 8- or 16-bit images"
            )
        return a.astype(np.float32)
    if low < 0 or high > 65535:
        raise ValueError(
            f"32-bit integer (mode {im.mode}) pixels range from {low:g} to {high:g}; sharedattr reads "
            "them as 16-bit intensities in 0 ... 65535: rescale them, or save 8- or 16-bit images"
        )
    return (a / 65535.0).astype(np.float32)


def _read_mask(path: Path | ZipMember, size: tuple[int, int]) -> Tensor:
    """A mask image → ``[H, W]`` bool (nonzero pixels, nearest resize to ``size``); DataError if unreadable."""
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            if im.mode in HIGH_DEPTH_MODES:  # nonzero before any conversion: Pillow would round 0.4 to 0
                a = np.asarray(im, dtype=np.float64)
                if not np.isfinite(a).all():
                    raise ValueError(f"NaN or infinite pixel values (mode {im.mode})")
                im = Image.fromarray(((a != 0) * 255).astype(np.uint8))
            return torch.from_numpy(np.asarray(im.convert("L").resize((size[1], size[0]), Image.NEAREST)) > 0)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise DataError("stimulus masks", [_failure(None, "mask", path, err)]) from None


def _image_problems(sid: str, path: Path | ZipMember) -> list[str]:
    """Why image ``path`` of stimulus ``sid`` cannot be used (empty when it can): decode errors, unusable pixels."""
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            im.load()
            try:
                _high_depth_grey(im)  # range and finiteness of 16-bit, 32-bit and float pixels
            except ValueError as err:
                return [f"{sid}: unusable pixels in image {path}: {err}"]
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
        return [_failure(sid, "image", path, err)]
    return []


def _failure(sid: str | None, what: str, path: Path | ZipMember, err: Exception, verb: str = "decode") -> str:
    """One problem line: stimulus ``sid`` (when given) cannot read or decode its ``what`` (image, mask) at ``path``.
    A :class:`ZipReadError` already names the archive, the member, why and the fix."""
    head = f"{sid}: " if sid is not None else ""
    if isinstance(err, ZipReadError):
        return f"{head}{what} {err}"
    return f"{head}cannot {verb} {what} {path}: {type(err).__name__}: {err}"
