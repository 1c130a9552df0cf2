"""A run folder owns only what it writes: it may not hold or lie inside the run's inputs, one run writes into it at
a time (a lock file), and a run cleans up only sharedattr's own temporaries there.

- :func:`check_out_folder`: ``--out`` must not be an input, contain one, or lie inside an input folder (a stimulus
  folder is walked for images, so a run folder inside it would be read as stimuli by the next run).
- :func:`run_lock`: ``<out>/.sharedattr-run.lock`` holds the writing process's pid and host while a run writes; a
  second run into the same folder is refused while that process lives, and a lock left by a killed run is taken
  over.
- Temporaries of :mod:`sharedattr.runtime.io` end in :data:`TEMP_SUFFIX`; :func:`remove_stale_temporaries` removes
  those alone, never a user's ``.something.tmp``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from sharedattr.runtime.errors import UserError

TEMP_SUFFIX = ".sharedattr.tmp"
"""How every temporary file that sharedattr's atomic writers create ends."""
LOCK_NAME = ".sharedattr-run.lock"


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


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
        source = _resolved(path)
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
