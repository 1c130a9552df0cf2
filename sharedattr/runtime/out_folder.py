"""A command's output folder, held while the command writes it: one lock, one kind of command, one spec.

``sharedattr run``, ``synthesize`` and ``fit`` check and create their ``--out`` first
(:func:`~sharedattr.runtime.run_folder.check_out_folder`, :func:`~sharedattr.runtime.run_folder.make_out_folder`),
then hold it with :func:`held_out_folder`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from sharedattr.runtime.errors import UserError
from sharedattr.runtime.run_files import FOLDER_KINDS, SPEC_FILE
from sharedattr.runtime.run_folder import remove_stale_temporaries, run_lock


def folder_spec_digest(folder: str | Path) -> str | None:
    """The spec digest recorded in ``<folder>/spec.json``: None when there is no such file.

    A ``spec.json`` that is not a run's (not a JSON object with a ``digest`` string: a config saved under that name,
    say) is a :class:`UserError`: the run would overwrite a file it did not write.
    """
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_bytes())
        if isinstance(saved, dict) and isinstance(saved.get("digest"), str):
            return saved["digest"]
    except (OSError, ValueError, RecursionError):
        pass
    raise UserError(
        f"output folder {Path(folder).resolve()} holds a {SPEC_FILE} that is not a run spec written by sharedattr "
        f"(a config saved there?), which the run would overwrite: move {path} away, or choose another --out"
    )


def check_folder_kind(folder: Path, kind: str) -> None:
    """Refuse ``folder`` when it holds the results of another kind of command than ``kind`` (``"run"`` for ``run``
    and ``fit``, ``"synthesize"``), whose files of the same names the command would overwrite (the files that mark
    each kind: :data:`~sharedattr.runtime.run_files.FOLDER_KINDS`)."""
    for other, marks in FOLDER_KINDS.items():
        found = next((mark for mark in marks if other != kind and (folder / mark).exists()), None)
        if found is not None:
            raise UserError(
                f"output folder {folder} holds the results of `sharedattr {other}` ({found}), whose scores.csv and "
                "summary.csv this command would overwrite with its own: choose another --out"
            )


@contextlib.contextmanager
def held_out_folder(folder: Path, kind: str, *, main: bool = True) -> Iterator[Path]:
    """Hold the checked and created output ``folder`` of a ``kind`` of command (``run`` for ``run`` and ``fit``,
    ``synthesize``) while the block runs; yields it.

    The ``main`` process (rank 0) holds its run lock (:func:`run_lock`: a second command into a folder that a live
    one is writing is refused), checks that a ``spec.json`` there is a run's (:func:`folder_spec_digest`) and that
    the folder holds no results of another kind of command (:func:`check_folder_kind`), and removes the temporaries
    that killed writers left there. Other ranks take no lock and sweep nothing.
    """
    with run_lock(folder, enabled=main):
        if main:
            folder_spec_digest(folder)
            check_folder_kind(folder, kind)
            remove_stale_temporaries(folder)
        yield folder
