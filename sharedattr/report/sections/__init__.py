"""The report's sections, in one ordered registry: each module of this package builds one section.

:data:`REGISTRY` lists them in page order, each a :class:`~sharedattr.report.sections.view.SectionKind` (anchor,
title, ``build(ctx)`` and ``shown(run)``): summary and verdict, readout fit quality, category selectivity,
driver/reference pairs, attribution maps, the method × metric tables, a plain-language reading of who won,
synthesis (when the run has a ``synthesis/`` folder) and timings. A section reads the run folder only through
:class:`~sharedattr.report.rundir.RunDir`, whose rows are typed (:mod:`sharedattr.runtime.run_files`).
"""

from __future__ import annotations

from sharedattr.report.reading import Reading
from sharedattr.report.rundir import RunDir
from sharedattr.report.sections import (
    attribution,
    fit,
    pairs,
    reading,
    scores,
    selectivity,
    summary,
    synthesis,
    timings,
)
from sharedattr.report.sections.context import Context
from sharedattr.report.sections.view import Figure, Image, Section, SectionKind

REGISTRY: tuple[SectionKind, ...] = (
    summary.SECTION,
    fit.SECTION,
    selectivity.SECTION,
    pairs.SECTION,
    attribution.SECTION,
    scores.SECTION,
    reading.SECTION,
    synthesis.SECTION,
    timings.SECTION,
)
"""Every section, in page order."""
SECTIONS: list[tuple[str, str]] = [(kind.anchor, kind.title) for kind in REGISTRY]
"""``(anchor, title)`` of every section, in page order."""
SYNTHESIS_REGISTRY: tuple[SectionKind, ...] = (synthesis.OVERVIEW, synthesis.SECTION)
"""The sections of a ``sharedattr synthesize`` folder's report, in page order."""

__all__ = [
    "REGISTRY",
    "SECTIONS",
    "SYNTHESIS_REGISTRY",
    "Context",
    "Figure",
    "Image",
    "Section",
    "SectionKind",
    "all_sections",
]


def all_sections(run: RunDir, reading: Reading, registry: tuple[SectionKind, ...] | None = None) -> list[Section]:
    """Every section of ``registry`` (default :data:`REGISTRY`) the run shows (:attr:`SectionKind.shown`), in page
    order, built on one :class:`Context` of ``run`` and the ``reading`` of its scores."""
    shown = [kind for kind in (REGISTRY if registry is None else registry) if kind.shown(run)]
    ctx = Context(run, reading, [(kind.anchor, kind.title) for kind in shown])
    return [kind.build(ctx) for kind in shown]
