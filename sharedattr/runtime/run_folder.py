"""A run folder owns only what it writes: it may not hold or lie inside the run's inputs, one run writes into it at
a time (a lock file), and a run cleans up only sharedattr's own temporaries there.

- :func:`check_out_folder`: ``--out`` must not be an input, contain one, or lie inside an input folder (a stimulus
  folder is walked for images, so a run folder inside it would be read as stimuli by the next run).
- :func:`run_lock`: ``<out>/.sharedattr-run.lock`` holds the writing process's pid and host while a run writes; a
  second run into the same folder is refused while that process lives, and a lock left by a killed run is taken
  over.
- :func:`make_out_folder`: the folder is created and checked writable before anything is computed.
- Temporaries of :mod:`sharedattr.runtime.io` are named ``.<name>.<host>.<pid>-<random>`` + :data:`TEMP_SUFFIX`
  (:func:`temporary_prefix`), so that :func:`remove_stale_temporaries` removes only those whose writer is gone, never
  a live writer's (a feature extraction writing into the same folder) and never a user's ``.something.tmp``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from sharedattr.runtime.errors import UserError, WriteError

TEMP_SUFFIX = ".sharedattr.tmp"
"""How every temporary file that sharedattr's atomic writers create ends."""
LOCK_NAME = ".sharedattr-run.lock"
NAME_MAX = 255
"""Bytes in one file name on the common file systems (ext4, XFS, APFS, NTFS)."""
_TEMP_NAME = re.compile(r"\.(?P<head>.+)\.(?P<pid>[0-9]+)(?:-[A-Za-z0-9_]+)?" + re.escape(TEMP_SUFFIX))
"""``.<name>.<host>.<pid>[-<random>]`` + :data:`TEMP_SUFFIX`: a temporary that names its writer (``head`` ends with the
host). The atomic writers add a random part; the feature cache's writer has one temporary per process and none."""


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
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix(folder / "write-check"), suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(folder, err) from None
    return folder


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_folder(
    out: str | Path,
    inputs: Mapping[str, str | Path | None],
    shared: Mapping[str, str | Path | None] | None = None,
) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs`` (``{what: path}``), or that is one
    of the ``shared`` folders (``{what: folder}``: folders other processes write into at any time, such as the
    feature cache; a run folder's manifest would vouch for their files).

    Raises :class:`~sharedattr.runtime.errors.UserError` with one line naming the folder, the input and the fix.
    """
    folder = _resolved(out)
    for what, path in (shared or {}).items():
        if path is not None and _resolved(path, what) == folder:
            raise UserError(
                f"output folder {folder} is the {what}, which other runs write into at any time: choose another --out"
            )
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
            "its own inputs; choose an --out that holds none of them (outside the data folders, away from the config)"
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
    :class:`~sharedattr.runtime.errors.UserError` naming the process and the file. The lock is removed when the block
    ends, by an exception too: the CLI turns SIGINT, SIGTERM and SIGHUP into one (:class:`sharedattr.cli.Interrupted`).
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
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{me} {host}\n")
        except BaseException:  # a signal or a full disk before the lock names its holder, which would block every run
            lock.unlink(missing_ok=True)
            raise
        break
    else:
        raise UserError(f"cannot take the run lock {lock}: it keeps reappearing; is another run starting there?")
    try:
        yield
    finally:
        if _holder(lock) == (me, host):
            lock.unlink(missing_ok=True)


def temporary_prefix(path: str | Path) -> str:
    """The start of the name of a temporary file for ``path`` (in the same folder): ``.<name>.<host>.<pid>-``, to
    which :func:`tempfile.mkstemp` adds a random part and the writers :data:`TEMP_SUFFIX`. It names the writing
    process, so that :func:`remove_stale_temporaries` can tell a live writer's temporary from a dead one's. A long
    ``<name>`` is cut so that the whole temporary name stays within :data:`NAME_MAX` bytes."""
    tail = f".{socket.gethostname()}.{os.getpid()}-"
    room = NAME_MAX - len(tail.encode()) - 1 - 8 - len(TEMP_SUFFIX)  # the leading dot, mkstemp's 8 random characters
    name = Path(path).name.encode()[: max(room, 1)].decode("utf-8", errors="ignore")
    return f".{name}{tail}"


def writer_is_gone(temporary: str | Path, host: str | None = None) -> bool:
    """Whether the process that wrote the temporary file ``temporary`` (named as :func:`temporary_prefix` and the
    feature cache name them) has ended, so that the file can be removed.

    True for a writer on this host whose process is gone, and for a temporary that names no writer (an earlier
    version's ``.<name>.<random>.sharedattr.tmp``); False for a live writer's and for another host's (its process
    cannot be checked from here), and for any file not ending in :data:`TEMP_SUFFIX`.
    """
    name = Path(temporary).name
    if not name.startswith(".") or not name.endswith(TEMP_SUFFIX):
        return False
    match = _TEMP_NAME.fullmatch(name)
    if match is None:
        return True
    if not match["head"].endswith(f".{host or socket.gethostname()}"):
        return False
    return not process_alive(int(match["pid"]))


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporaries (``.<name>.*`` + :data:`TEMP_SUFFIX`) that writers killed mid-write left under
    ``folder``: only those whose writer is gone (:func:`writer_is_gone`), never a live writer's (a feature extraction
    of another run whose cache folder lies under ``folder``) or another host's; files of any other name, a user's
    ``.notes.tmp`` included, are left alone.

    Call it only while holding :func:`run_lock` on ``folder``. Returns how many were removed.
    """
    removed, host = 0, socket.gethostname()
    for path in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file() and writer_is_gone(path, host):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
