"""A run folder owns only what it writes: it may not hold or lie inside the run's inputs, one run writes into it at
a time (a lock file), and a run cleans up only sharedattr's own temporaries there.

- :func:`check_out_folder`: ``--out`` must not be an input, contain one, or lie inside an input folder (a stimulus
  folder is walked for images, so a run folder inside it would be read as stimuli by the next run).
- :func:`run_lock`: ``<out>/.sharedattr-run.lock`` holds the writing process's pid and host while a run writes; a
  second run into the same folder is refused while that process lives, and a lock left by a killed run is taken
  over.
- :func:`make_out_folder`: the folder is created and checked writable before anything is computed.
- Temporaries of :mod:`sharedattr.runtime.io` end in :data:`TEMP_SUFFIX`; :func:`remove_stale_temporaries` removes
  those alone, never a user's ``.something.tmp``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from sharedattr.runtime.errors import UserError, WriteError

TEMP_SUFFIX = ".sharedattr.tmp"
"""How every temporary file that sharedattr's atomic writers create ends."""
LOCK_NAME = ".sharedattr-run.lock"


def expand_path(path: str | Path) -> Path:
    """``path`` with ``~`` and ``~user`` expanded; :class:`ValueError` with a plain reason for a NUL byte or an
    unknown user (``Path.expanduser`` raises RuntimeError, and any later call fails on NUL)."""
    text = str(path)
    if "\0" in text:
        raise ValueError(f"the path {text!r} contains a NUL byte")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        user = text[1:].split("/", 1)[0]
        raise ValueError(
            f"the path {text!r} starts with ~{user}, but there is no user {user!r} (or no home folder) here; "
            "write the path out in full"
        ) from None


def _resolved(path: str | Path, what: str = "output folder") -> Path:
    try:
        return expand_path(path).resolve()
    except (ValueError, OSError) as err:
        raise UserError(f"{what}: {err}") from None


def make_out_folder(out: str | Path) -> Path:
    """Create the output folder ``out`` (and its parents) and check that a file can be written in it.

    One-line :class:`UserError` naming the folder for a path that is a file, a folder that cannot be made or is
    not writable (permissions, a read-only file system, a full disk).
    """
    folder = _resolved(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} is an existing file, not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(folder, err) from None
    return folder


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_folder(out: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs`` (``{what: path}``).

    Raises :class:`~sharedattr.runtime.errors.UserError` with one line naming the folder, the input and the fix.
    """
    folder = _resolved(out)
    for what, path in inputs.items():
        if path is None:
            continue
        source = _resolved(path, what)
        if folder == source:
            relation = "is"
        elif _inside(source, folder):
            relation = "contains"
        elif source.is_dir() and _inside(folder, source):
            relation = "lies inside"
        else:
            continue
        raise UserError(
            f"output folder {folder} {relation} the run's {what} ({source}): the run would write over or read back "
            "its own inputs; choose an --out outside the data folders"
        )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _holder(lock: Path) -> tuple[int, str] | None:
    """``(pid, host)`` written in ``lock``; None when it cannot be read (being written, or damaged)."""
    try:
        pid, host = lock.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_lock(out: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``<out>/.sharedattr-run.lock`` while the block runs (nothing when not ``enabled``, e.g. ranks > 0).

    A lock whose process is gone (same host) is taken over; one held by a live process, or by another host, is a
    :class:`~sharedattr.runtime.errors.UserError` naming the process and the file.
    """
    if not enabled:
        yield
        return
    lock = Path(out) / LOCK_NAME
    me, host = os.getpid(), socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and holder[1] == host and not process_alive(holder[0]):
                lock.unlink(missing_ok=True)  # left by a killed run
                continue
            who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
            raise UserError(
                f"another sharedattr run ({who}) is writing into {Path(out).resolve()}: wait for it to finish or "
                f"choose another --out (if no run is active, delete {lock})"
            ) from None
        except OSError as err:
            raise UserError(f"cannot write into the output folder {Path(out).resolve()}: {err.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{me} {host}\n")
        break
    else:
        raise UserError(f"cannot take the run lock {lock}: it keeps reappearing; is another run starting there?")
    try:
        yield
    finally:
        if _holder(lock) == (me, host):
            lock.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporaries (``.<name>.*`` + :data:`TEMP_SUFFIX`) that writers killed mid-write left under
    ``folder``; files of any other name, a user's ``.notes.tmp`` included, are left alone.

    Call it only while holding :func:`run_lock` on ``folder``. Returns how many were removed.
    """
    removed = 0
    for path in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
