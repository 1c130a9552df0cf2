"""Reading a stimulus set's listing: a CSV manifest (or BrainIO stimulus set), or a folder per category.

:func:`read_manifest` and :func:`read_folder` return a :class:`Listing` (ids, image files, categories, masks) and
report every problem at once, as a :class:`~sharedattr.runtime.errors.DataError`: missing columns, empty or
duplicate ids, files not found (in a folder or a ZIP archive), unreadable archive members. They decode no image;
:class:`~sharedattr.data.stimuli.StimulusSet` does, later (:mod:`sharedattr.data.images`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharedattr.data.archives import ZipMember, ZipReadError, zip_members
from sharedattr.data.images import IMAGE_SUFFIXES
from sharedattr.data.naming import CONFIG, Naming
from sharedattr.runtime.errors import DataError, closest

PART_PREFIX = "mask:"
"""Manifest columns ``mask:<part>`` hold each stimulus's mask of that part."""
PIECE_SEPARATOR = "/"
"""A part column named ``mask:<part>/<piece>`` holds one *piece* of ``<part>`` (``mask:limbs/arm_left``): in a pair
set, a piece of the same name on both images of a pair is one piece copied from one to the other
(:func:`sharedattr.data.ground_truth.pair_truth` scores the pair at the level of its pieces)."""
CATEGORY_COLUMNS = ("category", "object_name", "category_name", "label", "class", "object")
"""Columns that usually hold a stimulus's category (BrainIO stimulus sets use ``object_name`` or
``category_name``): suggested when the configured category column is missing."""

File = Path | ZipMember
Located = tuple[str, str, File | None]
"""A manifest cell that names a file: ``(where: "line N: column", stimulus id, the file or None)``."""


@dataclass(frozen=True)
class Listing:
    """What a stimulus set lists (all length S): ``ids``, image ``paths`` (files or ZIP members), ``categories``,
    one ground-truth ``masks`` entry per stimulus (None without) and ``part_masks`` (part → per-stimulus mask)."""

    ids: tuple[str, ...]
    paths: tuple[File, ...]
    categories: tuple[str, ...]
    masks: tuple[File | None, ...]
    part_masks: dict[str, tuple[File | None, ...]] = field(default_factory=dict)


def read_manifest(
    path: Path, *, images: Path | None = None, category_column: str = "category", naming: Naming = CONFIG
) -> Listing:
    """A CSV with ``stimulus_id``, the image column (``path``, or BrainIO's ``filename``), the category column
    and optional ``mask``/``mask:<part>`` columns; other columns (metadata) are ignored.

    ``images``: where the CSV's image and mask paths lie: a folder, or a ZIP archive read without extracting
    (default: the CSV's folder). ``naming``: how errors name the settings (:mod:`sharedattr.data.naming`).
    """
    fieldnames, rows = _read_rows(path)
    image_column, part_columns = _columns(path, fieldnames, category_column, naming)
    locate, missing_file, source_problems = _locator(path, images, rows, [image_column, "mask", *part_columns])
    if source_problems:
        raise DataError(path, source_problems)
    problems = [
        f"column {c!r}: a part mask column needs a part name, e.g. 'mask:head'"
        for c in part_columns
        if not c[len(PART_PREFIX) :].strip()
    ]
    entries: dict[str, list[Any]] = {"ids": [], "paths": [], "categories": [], "masks": []}
    parts: dict[str, list[File | None]] = {c[len(PART_PREFIX) :].strip(): [] for c in part_columns}
    located: list[Located] = []
    seen: dict[str, int] = {}

    def cell(line: int, row: dict[str, str], of: str, column: str, what: str) -> File | None:
        """The file a row's cell names (None when empty or not found: the problem is recorded)."""
        rel = (row.get(column) or "").strip()
        found = locate(rel) if rel else None
        if rel and found is None:
            problems.append(f"line {line}: {what} {missing_file(rel)}{of}")
        return found

    for line, row in enumerate(rows, start=2):
        sid = (row.get("stimulus_id") or "").strip()
        problems.extend(_row_problems(line, row, sid, seen, category_column))
        of = f" (stimulus_id {sid!r})" if sid else ""
        image = cell(line, row, of, image_column, "image")
        if not (row.get(image_column) or "").strip():
            problems.append(f"line {line}: image not found: (empty path){of}")
        mask = cell(line, row, of, "mask", "mask")
        for column in part_columns:
            part_mask = cell(line, row, of, column, column)
            parts[column[len(PART_PREFIX) :].strip()].append(part_mask)
            located.append((f"line {line}: {column}", sid, part_mask))
        for key, value in zip(entries, (sid, image, (row.get(category_column) or "").strip(), mask)):
            entries[key].append(value)
        located += [(f"line {line}: image", sid, image), (f"line {line}: mask", sid, mask)]
    if not rows:
        problems.append("the manifest lists no stimuli")
    if problems:
        raise DataError(path, problems + unreadable_members(located))
    return Listing(**{k: tuple(v) for k, v in entries.items()}, part_masks={p: tuple(v) for p, v in parts.items()})


def read_folder(path: Path) -> Listing:
    """A folder with one sub-folder of images per category; stimulus ids are ``<category>/<file stem>``."""
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
    return Listing(tuple(ids), tuple(paths), tuple(cats), (None,) * len(ids))


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's column names and rows; a file that is not UTF-8 or not CSV is a :class:`DataError`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except UnicodeDecodeError as err:
        raise DataError(
            path,
            [
                f"not UTF-8 text ({err.reason} at byte {err.start}); a manifest is a CSV file "
                "(stimulus_id, path, category)"
            ],
        ) from None
    except csv.Error as err:
        raise DataError(path, [f"not a readable CSV file: {err}"]) from None


def _columns(path: Path, fieldnames: list[str], category_column: str, naming: Naming) -> tuple[str, list[str]]:
    """The image column (``path``, else BrainIO's ``filename``) and the ``mask:<part>`` columns; a
    :class:`DataError` naming what is missing, and the columns there are, when a required column is absent."""
    columns = set(fieldnames)
    image_column = "path" if "path" in columns or "filename" not in columns else "filename"
    missing = [c for c in ("stimulus_id", image_column, category_column) if c not in columns]
    if missing:
        hint = ""
        if category_column in missing:
            guess = category_guess(category_column, fieldnames)
            hint = (
                f"; the category column is set by {naming('category_column')}"
                + (f": did you mean {guess!r}?" if guess else "")
                + f" (columns here: {', '.join(fieldnames)})"
            )
        raise DataError(
            path,
            [
                f"missing column(s) {', '.join(sorted(missing))}; a stimulus set needs stimulus_id, path "
                f"(or BrainIO's filename) and {category_column} (and optionally mask){hint}"
            ],
        )
    return image_column, [c for c in fieldnames if c.startswith(PART_PREFIX)]


def category_guess(wanted: str, fieldnames: list[str]) -> str | None:
    """The column of ``fieldnames`` most likely meant as the category column ``wanted``: the closest in spelling,
    else the first of :data:`CATEGORY_COLUMNS` there (BrainIO names it ``object_name``); never the id, image or mask
    columns. None when there is no candidate."""
    taken = {"stimulus_id", "path", "filename", "mask"}
    candidates = [c for c in fieldnames if c not in taken and not c.startswith(PART_PREFIX)]
    return closest(wanted, candidates) or next((c for c in CATEGORY_COLUMNS if c in candidates), None)


def _row_problems(line: int, row: dict[str, str], sid: str, seen: dict[str, int], category_column: str) -> list[str]:
    """A row's id and category problems (empty or duplicate id, empty category); records the id in ``seen``."""
    problems = []
    if not sid:
        problems.append(f"line {line}: empty stimulus_id")
    elif sid in seen:
        problems.append(f"line {line}: duplicate stimulus_id {sid!r} (first on line {seen[sid]})")
    seen.setdefault(sid, line)
    if not (row.get(category_column) or "").strip():
        problems.append(f"line {line}: empty {category_column}")
    return problems


def _locator(
    manifest: Path, images: Path | None, rows: list[dict[str, str]], columns: list[str]
) -> tuple[Callable[[str], File | None], Callable[[str], str], list[str]]:
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


def unreadable_members(located: list[Located]) -> list[str]:
    """One problem per ZIP member of ``located`` whose data cannot be read (a damaged stream, found only by reading
    it), so that a stimulus set already refused lists them too; each member is read once, however many cells name
    it."""
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
