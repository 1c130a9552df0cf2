"""A self-contained HTML report of a finished run or synthesis: ``<run_dir>/report.html``.

The page has no external references: figures are inlined as base64 PNG ``data:`` URIs and
the CSS is inline; it is rendered from the Jinja2 templates in ``templates/``, which escape every
string a run can put on it. Its sections are those of :data:`sharedattr.report.sections.REGISTRY`, in that order;
they read the folder only through :class:`~sharedattr.report.rundir.RunDir` and the run folder's contract
(:mod:`sharedattr.runtime.run_files`). The page is a function of the folder's files (and the stimuli its spec
names): no absolute path, no time, so a rebuild gives the same bytes.
Rebuild it with ``sharedattr report RUN_DIR`` (:func:`rebuild_report`), which first checks the folder against
the ``manifest.json`` its run wrote last.
"""

from __future__ import annotations

from pathlib import Path

from sharedattr.report.html import PAGE_TEMPLATE, render
from sharedattr.report.reading import read_summary
from sharedattr.report.rundir import RunDir
from sharedattr.report.sections import SECTIONS, SYNTHESIS_REGISTRY, all_sections
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_text
from sharedattr.runtime.manifest import update_manifest, verify_manifest
from sharedattr.runtime.run_files import FOLDER_KINDS, REPORT_FILE, SYNTHESIZE_KIND, folder_kind
from sharedattr.runtime.run_folder import run_lock

SHOWN_PROBLEMS = 5
"""How many of a folder's changed files the refusal of :func:`rebuild_report` names (then the count)."""

__all__ = ["REPORT_FILE", "SECTIONS", "build_report", "rebuild_report", "write_report"]


def build_report(run_dir: str | Path) -> str:
    """The report of the run in ``run_dir`` as an HTML string: of a ``sharedattr run`` folder, every section of
    :data:`~sharedattr.report.sections.REGISTRY`; of a ``sharedattr synthesize`` folder (told apart by the files
    only it holds, :func:`~sharedattr.runtime.run_files.folder_kind`), its overview and synthesis section
    (:data:`~sharedattr.report.sections.SYNTHESIS_REGISTRY`).

    Raises :class:`~sharedattr.runtime.errors.MissingFileError` when ``run_dir`` or its ``spec.json`` is
    missing, and a :class:`~sharedattr.runtime.run_files.RunFolderError` naming the file when one is damaged (not
    UTF-8, rows that do not match the header, a cell not of its column's type, broken JSON or safetensors) or lacks
    a column of the run folder's contract; any other missing file only leaves a note in its section. Nothing else
    is caught: any other exception is a bug, and propagates as one.
    """
    run = RunDir(run_dir)
    if run.kind == SYNTHESIZE_KIND:  # a `sharedattr synthesize` folder: its synthesis, no attribution
        sections = all_sections(run, read_summary([]), SYNTHESIS_REGISTRY)
        return render(PAGE_TEMPLATE, title=f"sharedattr synthesis report: {run.name}", sections=sections)
    sections = all_sections(run, read_summary(run.summary or [], run.components, run.pair_values))
    return render(PAGE_TEMPLATE, title=f"sharedattr report: {run.name}", sections=sections)


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` atomically; return its path. No check of the folder: this is the run's own
    call, made before it writes ``manifest.json``; ``sharedattr report`` calls :func:`rebuild_report`."""
    html = build_report(run_dir)
    return atomic_write_text(Path(run_dir) / REPORT_FILE, html)


def rebuild_report(run_dir: str | Path) -> Path:
    """``sharedattr report RUN_DIR``: check the finished run or synthesize folder, rewrite its ``report.html`` and
    record the page in its ``manifest.json``; return the page's path. A folder that holds neither kind's files
    (:data:`~sharedattr.runtime.run_files.FOLDER_KINDS`) is a :class:`UserError` naming them.

    Under the folder's run lock (a live run there is refused). The folder must hold ``spec.json`` and the
    ``manifest.json`` its run wrote last (without it, the run did not finish), and every file must be as the run
    wrote it: a file changed, missing or added since (``report.html`` excepted: it is what is rebuilt) is a
    :class:`UserError` naming the first :data:`SHOWN_PROBLEMS` and their count, so hand-edited results or a
    folder mixing two runs' files is never rendered. The manifest's entry for ``report.html`` is then updated
    atomically, so :func:`~sharedattr.runtime.manifest.verify_manifest` stays clean.
    """
    folder = Path(run_dir)
    RunDir(folder)  # a missing folder or spec.json first: the clearest message for a wrong folder
    if folder_kind(folder) is None:
        marks = ", ".join(m for kind_marks in FOLDER_KINDS.values() for m in kind_marks)
        raise UserError(
            f"{folder}: not the output folder of `sharedattr run` or `sharedattr synthesize` (it holds none of "
            f"{marks}); give the folder that command's --out named (for `sharedattr demo --out X`: X/results)"
        )
    with run_lock(folder):
        problems = verify_manifest(folder, skip=(REPORT_FILE,))
        if problems:
            more = f" and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
            raise UserError(
                f"{folder}: {len(problems)} file(s) differ from what its run wrote (manifest.json): "
                f"{'; '.join(problems[:SHOWN_PROBLEMS])}{more}; run the same command again into this folder: it "
                "rewrites them, reusing every finished item"
            )
        path = write_report(folder)
        update_manifest(folder, [REPORT_FILE])
    return path
