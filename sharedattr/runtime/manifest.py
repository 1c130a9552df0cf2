"""A run folder's manifest: every file it holds, with its size and SHA-256, written last by a run.

:func:`verify_manifest` checks a folder against it. The manifest is read as untrusted input: bounded in size and
depth (:mod:`sharedattr.runtime.json_files`), and an entry that is not a plain relative path inside the folder
(``../x``, ``/etc/passwd``, ``a//b``) is reported as a damaged entry and never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import Any

from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_text
from sharedattr.runtime.json_files import DamagedJSON, read_json
from sharedattr.runtime.run_folder import LOCK_NAME, TEMP_SUFFIX

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _unlisted(path: Path) -> bool:
    """Files a manifest never lists: the run lock, temporaries and the manifest itself."""
    return path.name in (LOCK_NAME, MANIFEST_NAME) or path.name.endswith(TEMP_SUFFIX)


def file_record(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        size = os.fstat(f.fileno()).st_size
    return {"bytes": size, "sha256": h.hexdigest()}


def _write(root: Path, files: dict[str, dict[str, Any]]) -> Path:
    return atomic_write_text(
        root / MANIFEST_NAME, json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n"
    )


def write_manifest(folder: str | Path) -> Path:
    """Record every file of the run folder (its size and SHA-256; not the lock, temporaries or the manifest
    itself) in ``<folder>/manifest.json``, written last and atomically: what the run wrote, checkable later
    with :func:`verify_manifest`."""
    root = Path(folder)
    files = {
        path.relative_to(root).as_posix(): file_record(path)
        for path in sorted(p for p in root.rglob("*") if p.is_file())
        if not _unlisted(path)
    }
    return _write(root, files)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``files`` mapping of ``<folder>/manifest.json`` (``{relative path: record}``, entries unchecked);
    :class:`UserError` naming the file when it is missing or unreadable."""
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise DamagedJSON(f"not a manifest of format {MANIFEST_FORMAT}")
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise DamagedJSON("no 'files' object")
    except FileNotFoundError:
        raise UserError(
            f"{path} not found: the run that wrote {path.parent} did not finish (or an older sharedattr wrote it); "
            "run the same command again into this folder: it resumes, reusing every finished item, and writes it"
        ) from None
    except (OSError, DamagedJSON) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UserError(
            f"{path}: no readable manifest ({reason}); run the same command again into {path.parent} to rewrite it"
        ) from None
    return files


def plain_relative(name: Any) -> bool:
    """Whether a manifest entry ``name`` is a plain relative POSIX path inside its folder: a non-empty str with no
    NUL or backslash, not absolute, no empty, ``.`` or ``..`` part (the form :func:`write_manifest` writes)."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def verify_manifest(folder: str | Path, *, skip: Collection[str] = ()) -> list[str]:
    """The problems of ``folder`` against its ``manifest.json``, sorted by name (empty: every file as written):
    ``"<name>: missing"``, ``"<name>: changed"`` (size or SHA-256), ``"<name>: not in the manifest"`` (a file
    added since) and ``"<entry>: damaged manifest entry (...)"`` (not a plain relative path inside the folder, or
    no valid size and SHA-256: never opened). Names in ``skip`` are not checked. :class:`UserError` when there is
    no readable manifest. Files are hashed in 1 MiB blocks, and only when their size matches."""
    root = Path(folder)
    files = read_manifest(root)
    problems: list[tuple[str, str]] = []
    inside = root.resolve()
    for name, record in files.items():
        if name in skip:
            continue
        if not plain_relative(name):
            problems.append((name, "damaged manifest entry (not a plain relative path in the folder)"))
            continue
        size, digest = (record.get("bytes"), record.get("sha256")) if isinstance(record, dict) else (None, None)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not _SHA256.fullmatch(str(digest)):
            problems.append((name, "damaged manifest entry (no valid bytes and sha256)"))
            continue
        target = root / PurePosixPath(name)
        if not target.resolve().is_relative_to(inside):  # a link leading out of the folder
            problems.append((name, "damaged manifest entry (leads outside the folder)"))
        elif not target.is_file():
            problems.append((name, "missing"))
        elif target.stat().st_size != size or file_record(target)["sha256"] != digest:
            problems.append((name, "changed"))
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if path.is_file() and not _unlisted(path) and name not in files and name not in skip:
            problems.append((name, "not in the manifest"))
    return [f"{_shown(name)}: {what}" for name, what in sorted(problems, key=lambda p: (str(p[0]), p[1]))]


def _shown(name: Any) -> str:
    """``name`` as it is when printable, else quoted with escapes (a message stays on one line)."""
    return name if isinstance(name, str) and name.isprintable() else repr(name)


def update_manifest(folder: str | Path, names: Collection[str]) -> Path:
    """Record the current size and SHA-256 of the files ``names`` (plain relative paths) in ``<folder>``'s
    manifest, atomically; every other entry is kept as it is. For a file rewritten on purpose, such as
    ``report.html`` by ``sharedattr report``."""
    root = Path(folder)
    files = dict(read_manifest(root))
    for name in names:
        if not plain_relative(name):
            raise ValueError(f"{name!r} is not a plain relative path")
        files[name] = file_record(root / name)
    return _write(root, dict(sorted(files.items())))
