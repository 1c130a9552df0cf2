"""A pytest plugin (``-p skip_guard`` in pyproject's addopts): with ``SHAREDATTR_NO_SKIPS`` set, as ``.ci/run`` sets
it, a skipped test fails the session."""

from __future__ import annotations

import os

import pytest

NO_SKIPS_ENV = "SHAREDATTR_NO_SKIPS"
"""Set by ``.ci/run``: every test must run. CI installs every dependency, the optional extras too (the dev
group), so a skip there is a broken install or a missing dependency, never a green pass."""
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the skipped tests with their reasons (under xdist, the controller sees every worker's reports)."""
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With :data:`NO_SKIPS_ENV` set, a skipped test fails the session (listed with its reason)."""
    if os.environ.get(NO_SKIPS_ENV) and _skipped and not hasattr(session.config, "workerinput"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{NO_SKIPS_ENV} is set, and {len(_skipped)} test(s) were skipped:", *_skipped]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
