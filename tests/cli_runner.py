"""Run the ``sharedattr`` command in this process, as a subprocess would run it, without paying for the imports.

``run_cli(*args, cwd=...)`` calls :func:`sharedattr.cli.main` with stdout and stderr captured and returns a
:class:`subprocess.CompletedProcess` (``returncode``, ``stdout``, ``stderr``), so a test reads the same either
way. A fresh ``python -m sharedattr`` costs several seconds of imports; the tests that need a real process
(the ``__main__`` entry point, signals, a plugin that exits or hangs at import, environment-variable effects that
are read at import) still start one.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

from sharedattr.cli import main


def run_cli(*args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``sharedattr ARGS`` run in-process in ``cwd``: its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse: --help, --version, usage errors
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["sharedattr", *args], code, out.getvalue(), err.getvalue())
