"""Images inside a ZIP archive, read without extracting (BrainIO stimulus sets ship their images zipped).

A :class:`ZipMember` stands where a stimulus set holds an image path; :func:`image_source` gives Pillow something
to open for either. :func:`zip_members` checks every member a stimulus set names before anything is read: the
name must be a plain relative path (no absolute path, drive, backslash, ``..`` or NUL), the member must exist,
it must be neither encrypted nor compressed with a method Python's :mod:`zipfile` cannot inflate (Deflate64,
PPMd, ...; :data:`COMPRESSION_METHODS` are read), and its size must stay within :data:`MAX_MEMBER_BYTES` uncompressed
and :data:`MAX_COMPRESSION_RATIO` (a zip bomb is refused, not inflated). Every failing name gets its reason, for the
caller to list with its line. A member whose data turn out damaged when read (a corrupt deflate stream, a CRC
mismatch, a truncated archive) raises :class:`ZipReadError`, one message naming the archive, the member and the fix,
whatever :mod:`zipfile`, :mod:`zlib`, :mod:`bz2` or :mod:`lzma` raised.
"""

from __future__ import annotations

import io
import lzma
import os
import struct
import zipfile
import zlib
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

COMPRESSION_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "Deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "LZMA",
    **({zipfile.ZIP_ZSTANDARD: "Zstandard"} if hasattr(zipfile, "ZIP_ZSTANDARD") else {}),
}
"""The compression methods :mod:`zipfile` inflates (by their number in the ZIP headers)."""
OTHER_METHODS = {
    1: "Shrink",
    6: "Implode",
    9: "Deflate64",
    10: "PKWARE DCL Implode",
    18: "IBM TERSE",
    19: "LZ77",
    95: "XZ",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
    99: "AES encryption",
}
"""Names of the methods it does not, for the message."""
ENCRYPTED_FLAGS = 0x1 | 0x40
"""General-purpose flag bits of an encrypted member (bit 0: encrypted, bit 6: strong encryption)."""
PATCH_FLAG = 0x20
"""Flag bit of PKWARE's compressed patch data, which :mod:`zipfile` cannot read."""
READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    RuntimeError,
    ValueError,
    KeyError,
    struct.error,
)
"""What reading a member of a damaged archive raises: a CRC mismatch or bad header (BadZipFile), a corrupt deflate,
bzip2 (OSError) or LZMA stream, a truncated file (EOFError), a member it cannot decrypt or inflate (RuntimeError,
NotImplementedError), a vanished file (OSError) or member (KeyError), a malformed header (ValueError, struct.error)."""
REZIP = "extract the images and zip them again{} (e.g. `zip -r{} images.zip images/`)"
"""The fix for a member zipfile cannot read, formatted with what to change and the option of Info-ZIP's zip."""

_OPEN: dict[Path, tuple[tuple[int, ...], zipfile.ZipFile]] = {}
"""Open archives by path, each with the (device, inode, size, mtime, ctime) it was opened at: a file replaced or
rewritten at the same path, even with its size and mtime put back (``os.utime`` can do that; the ctime it cannot), is
opened afresh and the stale handle closed, so no read is ever served from a former file."""


class ZipReadError(Exception):
    """A ZIP member that cannot be read; the message names the archive, the member, why and the fix."""


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why :mod:`zipfile` cannot read the member ``info`` at all, with the fix, or None (read from its central
    directory entry: nothing is inflated)."""
    if info.flag_bits & ENCRYPTED_FLAGS or info.compress_type == 99:
        return f"is encrypted (sharedattr reads unencrypted archives only): {REZIP.format(' without a password', '')}"
    if info.compress_type not in COMPRESSION_METHODS:
        method = OTHER_METHODS.get(info.compress_type, "unknown")
        return (
            f"is compressed with method {info.compress_type} ({method}), which Python's zipfile cannot inflate: "
            + REZIP.format(" with Deflate", " -Z deflate")
        )
    if info.flag_bits & PATCH_FLAG:
        return "holds PKWARE compressed patch data, which Python's zipfile cannot read: " + REZIP.format("", "")
    return None


@dataclass(frozen=True)
class ZipMember:
    """Member ``name`` of the ZIP file ``archive``."""

    archive: Path
    name: str

    def read_bytes(self) -> bytes:
        """The member's bytes, inflated and CRC-checked (the archive stays open for the next read, until the file at
        its path changes); :class:`ZipReadError` when they cannot be read."""
        try:
            archive = _open_archive(self.archive)
            info = archive.getinfo(self.name)
            why = member_problem(info)
            if why is None:
                return archive.read(info)
        except READ_ERRORS as err:
            kind = "zlib.error" if isinstance(err, zlib.error) else type(err).__name__  # zlib's is just "error"
            why = f"cannot be read ({kind}: {err}); the archive is damaged or incomplete: copy or download it again"
        raise ZipReadError(f"{self} {why}")

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"


def _open_archive(path: Path) -> zipfile.ZipFile:
    """The open :class:`zipfile.ZipFile` of ``path``, opened afresh when the file there is not the one opened before."""
    stat = os.stat(path)
    signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    cached = _OPEN.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    archive = zipfile.ZipFile(path)
    _OPEN[path] = (signature, archive)
    if cached is not None:
        cached[1].close()
    return archive


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
        elif (unreadable := member_problem(info)) is not None:
            reasons[name] = f"is refused: it {unreadable}"
        elif info.file_size > MAX_MEMBER_BYTES:
            reasons[name] = f"is refused: {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,}"
        elif info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
            ratio = info.file_size / max(1, info.compress_size)
            reasons[name] = f"is refused: it inflates {ratio:,.0f}× (more than {MAX_COMPRESSION_RATIO}×: a zip bomb?)"
        else:
            members[name] = ZipMember(archive, name)
    return members, reasons, None
