"""A self-contained HTML report of a finished run: ``<run_dir>/report.html``.

The page has no external references: figures are inlined as base64 PNG ``data:`` URIs and
the CSS is inline; it is rendered from the Jinja2 templates in ``templates/``, which escape every
string a run can put on it. Sections, in order: summary and verdict, readout fit quality, category
selectivity, driver/reference pairs, attribution maps, the method × metric tables, a
plain-language reading of who won, synthesis (when run) and timings. Rebuild it with
``sharedattr report RUN_DIR``.
"""

from __future__ import annotations

from pathlib import Path

from sharedattr.plugins.loading import debugging
from sharedattr.report.html import PAGE_TEMPLATE, render
from sharedattr.report.reading import read_summary
from sharedattr.report.rundir import RunDir
from sharedattr.report.sections import SECTIONS, Context, all_sections
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_text

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "SECTIONS", "build_report", "write_report"]


def build_report(run_dir: str | Path) -> str:
    """The report of the run in ``run_dir`` as an HTML string.

    Raises :class:`~sharedattr.runtime.errors.MissingFileError` when ``run_dir`` or its ``spec.json`` is
    missing, a :class:`~sharedattr.runtime.errors.UserError` naming the file when one is damaged (not UTF-8,
    rows that do not match the header, broken JSON or safetensors) or naming the folder when its files are
    readable but do not fit together; any other missing file only leaves a note in its section.
    """
    run = RunDir(run_dir)
    try:
        ctx = Context(run, read_summary(run.summary or [], run.components, run.pair_values))
        return render(PAGE_TEMPLATE, title=f"sharedattr report: {run.name}", sections=all_sections(ctx))
    except UserError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:  # readable files, wrong content
        if debugging():
            raise
        raise UserError(
            f"{run.path}: the run folder's files do not fit together or lack columns ({type(err).__name__}: "
            f"{str(err)[:200]}); run `sharedattr run` again into this folder to rewrite them "
            "(--debug shows where)"
        ) from None


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` atomically; return its path."""
    html = build_report(run_dir)
    return atomic_write_text(Path(run_dir) / REPORT_FILE, html)
