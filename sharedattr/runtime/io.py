"""Atomic file writes: write to a temporary name in the same folder, then rename into place."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sharedattr.runtime.errors import WriteError
from sharedattr.runtime.run_folder import TEMP_SUFFIX, temporary_prefix

FILE_NAME_CHARS = 120
"""Longest file name :func:`safe_file_name` makes: within every file system's 255 bytes, with room for the
temporary's ``.<name>.<host>.<pid>-<random>.sharedattr.tmp`` around it."""


def safe_file_name(prefix: str, ident: str, suffix: str) -> str:
    """A file name for ``ident`` (a neuron or stimulus id from the user's data): ``<prefix><ident><suffix>`` when
    ``ident`` is safe in a file name (ASCII letters, digits, ``-_.``) and the name has at most
    :data:`FILE_NAME_CHARS` characters; otherwise the sanitised id, cut to fit, plus ``-`` and the first 8 hex
    digits of the id's SHA-256, so that distinct ids (``a/b`` and ``a_b``, two long ids sharing a start) never
    share a file. ``prefix`` and ``suffix`` must themselves be safe."""
    safe = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_" for ch in ident)
    if safe == ident and len(prefix) + len(safe) + len(suffix) <= FILE_NAME_CHARS:
        return f"{prefix}{safe}{suffix}"
    tag = "-" + hashlib.sha256(ident.encode("utf-8", errors="surrogatepass")).hexdigest()[:8]
    room = FILE_NAME_CHARS - len(prefix) - len(tag) - len(suffix)
    return f"{prefix}{safe[: max(room, 0)]}{tag}{suffix}"


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the process umask (mkstemp uses 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The file gets the permissions of a normally created file (not the temporary file's 0o600). A filesystem
    error (full disk, read-only or unwritable folder) is a :class:`WriteError` naming ``path``; the old file, if
    any, is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), _new_file_mode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def atomic_save_tensors(
    path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors as safetensors, atomically."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    return atomic_write_bytes(path, data)
