"""Images inside a ZIP archive, read without extracting (BrainIO stimulus sets ship their images zipped).

A :class:`ZipMember` stands where a stimulus set holds an image path; :func:`image_source` gives Pillow something
to open for either. :func:`zip_members` checks every member a stimulus set names before anything is read: the
name must be a plain relative path (no absolute path, drive, backslash, ``..`` or NUL), the member must exist,
and its size must stay within :data:`MAX_MEMBER_BYTES` uncompressed and :data:`MAX_COMPRESSION_RATIO` (a zip
bomb is refused, not inflated). Every failing name gets its reason, for the caller to list with its line.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image

MAX_MEMBER_BYTES = 4 * 2 * Image.MAX_IMAGE_PIXELS
"""The largest member read: 4 bytes per pixel of the largest image Pillow decodes before its decompression-bomb
error (2 × ``Image.MAX_IMAGE_PIXELS`` pixels), about 716 MB."""
MAX_COMPRESSION_RATIO = 1000
"""Members that inflate more than this many times are refused as zip bombs (PNG and JPEG barely compress)."""

_OPEN: dict[tuple[Path, int, int], zipfile.ZipFile] = {}
"""Open archives by (path, mtime, size): a file replaced at the same path is opened afresh."""


@dataclass(frozen=True)
class ZipMember:
    """Member ``name`` of the ZIP file ``archive``."""

    archive: Path
    name: str

    def read_bytes(self) -> bytes:
        """The member's bytes (the archive stays open for the next read)."""
        stat = self.archive.stat()
        key = (self.archive, stat.st_mtime_ns, stat.st_size)
        archive = _OPEN.get(key)
        if archive is None:
            archive = _OPEN[key] = zipfile.ZipFile(self.archive)
        return archive.read(self.name)

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"


def image_source(path: Path | ZipMember) -> Path | BinaryIO:
    """What ``PIL.Image.open`` reads for an image path or a ZIP member."""
    return io.BytesIO(path.read_bytes()) if isinstance(path, ZipMember) else path


def unsafe_name(name: str) -> str | None:
    """Why ``name`` is not a plain relative member path, or None."""
    if "\0" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    pure = PurePosixPath(name)
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in pure.parts:
        return "contains '..'"
    return None


def zip_members(archive: Path, names: Iterable[str]) -> tuple[dict[str, ZipMember], dict[str, str], str | None]:
    """The members ``names`` of ``archive`` that pass the checks (module docstring); why each other name fails
    (``{name: reason}``); and why the archive itself cannot be read (None when it can)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        return {}, {}, f"{archive}: not a readable ZIP archive ({type(err).__name__}: {err})"
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
    members, reasons = {}, {}
    for name in dict.fromkeys(names):
        why = unsafe_name(name)
        info = infos.get(name)
        if why is not None:
            reasons[name] = f"is refused: the member name {why}"
        elif info is None:
            reasons[name] = "is not in the archive"
        elif info.file_size > MAX_MEMBER_BYTES:
            reasons[name] = f"is refused: {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,}"
        elif info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
            ratio = info.file_size / max(1, info.compress_size)
            reasons[name] = f"is refused: it inflates {ratio:,.0f}× (more than {MAX_COMPRESSION_RATIO}×: a zip bomb?)"
        else:
            members[name] = ZipMember(archive, name)
    return members, reasons, None
