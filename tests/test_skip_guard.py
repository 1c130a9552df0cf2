"""``.ci/run`` sets SHAREDATTR_NO_SKIPS: a skipped test (a required dependency missing, say) fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("a required dependency is missing")
"""


def _pytest(folder: Path, **env: str) -> subprocess.CompletedProcess:
    (folder / "test_probe.py").write_text(PROBE)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "skip_guard",
            "-n",
            "0",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(folder),
            str(folder / "test_probe.py"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=folder,
    )


def test_a_skip_fails_the_session_when_every_test_must_run(tmp_path):
    strict = _pytest(tmp_path, SHAREDATTR_NO_SKIPS="1")
    assert strict.returncode == 1, strict.stdout[-2000:]
    assert "1 test(s) were skipped" in strict.stdout and "a required dependency is missing" in strict.stdout
    relaxed = _pytest(tmp_path, SHAREDATTR_NO_SKIPS="")
    assert relaxed.returncode == 0, relaxed.stdout[-2000:]
