"""What a section of the report is: the view its template renders, and the kind of section that builds it.

A view holds plain strings, formatted numbers and :class:`Image` data URIs; the markup lives in
the templates (``templates/<anchor>.html.j2``), which escape every value. A section whose input
file is missing shows a note (``templates/empty.html.j2``) instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sharedattr.report.html import data_uri

if TYPE_CHECKING:
    from sharedattr.report.rundir import RunDir
    from sharedattr.report.sections.context import Context

MAX_TABLE_ROWS = 60
"""Rows of the fit and selectivity tables."""


@dataclass(frozen=True)
class Image:
    """An inline PNG: its ``data:`` URI, alt text, and optionally a width and the ``thumb`` style."""

    uri: str
    alt: str
    width: int | None = None
    thumb: bool = False

    @classmethod
    def of(cls, png: bytes, alt: str, width: int | None = None, thumb: bool = False) -> Image:
        return cls(data_uri(png), alt, width, thumb)


@dataclass(frozen=True)
class Figure:
    """An inline PNG with a caption underneath."""

    image: Image
    caption: str

    @classmethod
    def of(cls, png: bytes, caption: str, alt: str) -> Figure:
        return cls(Image.of(png, alt), caption)


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor and title, and the view its template renders (``v`` there)."""

    anchor: str
    title: str
    view: dict[str, Any] = field(default_factory=dict)
    template: str = ""

    @property
    def template_name(self) -> str:
        return self.template or f"{self.anchor}.html.j2"


def always(run: RunDir) -> bool:
    """Every run shows the section."""
    return True


@dataclass(frozen=True)
class SectionKind:
    """An entry of the report's registry (:data:`sharedattr.report.sections.REGISTRY`): the section's anchor and
    title, ``build(ctx)``, which makes its :class:`Section`, and ``shown(run)``, whether the run has one at all."""

    anchor: str
    title: str
    build: Callable[[Context], Section]
    shown: Callable[[RunDir], bool] = always

    def section(self, view: dict[str, Any], template: str = "") -> Section:
        """This kind's section showing ``view`` (with ``templates/<anchor>.html.j2``, or ``template``)."""
        return Section(self.anchor, self.title, view, template)

    def empty(self, why: str) -> Section:
        """This kind's section when it has nothing to show: only why (``templates/empty.html.j2``)."""
        return Section(self.anchor, self.title, {"note": why}, "empty.html.j2")


def count(value: int | None) -> str:
    """An integer cell as the page shows it: empty for None (an optional column the file lacks)."""
    return "" if value is None else str(value)
