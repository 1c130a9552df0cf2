"""A run folder's manifest: every file it holds, with its size and SHA-256, written last by a run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_text
from sharedattr.runtime.run_folder import LOCK_NAME, TEMP_SUFFIX

MANIFEST_NAME = "manifest.json"


def write_manifest(folder: str | Path) -> Path:
    """Record every file of the run folder (its size and SHA-256; not the lock, temporaries or the manifest
    itself) in ``<folder>/manifest.json``, written last and atomically: what the run wrote, checkable later
    with :func:`verify_manifest`."""
    root = Path(folder)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name in (LOCK_NAME, MANIFEST_NAME) or path.name.endswith(TEMP_SUFFIX):
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        files[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
    return atomic_write_text(root / MANIFEST_NAME, json.dumps({"format": 1, "files": files}, indent=1) + "\n")


def verify_manifest(folder: str | Path) -> list[str]:
    """The files of ``<folder>/manifest.json`` that are missing or changed since the run wrote them (empty: all
    as written); :class:`UserError` when there is no readable manifest."""
    root = Path(folder)
    path = root / MANIFEST_NAME
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: no readable manifest ({type(err).__name__}); run `sharedattr run` again") from None
    problems = []
    for name, record in files.items():
        target = root / name
        if not target.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(target.read_bytes()).hexdigest() != record.get("sha256"):
            problems.append(f"{name}: changed")
    return problems
