"""The report's Jinja2 environment: templates under ``sharedattr/report/templates/``, auto-escaped.

Everything a run can put in a string (experiment names, neuron and stimulus ids, method and
metric labels, error notes) is escaped by the templates; nothing is marked safe. The only
values that pass through escaping unchanged are the base64 ``data:`` URIs of the images
(:func:`data_uri`) and the numbers formatted by :func:`num` and :func:`mean_sem`, whose
characters need no escaping. The inline JSON the explorer reads (``<script type="application/json">``) is written by
Jinja's ``tojson``, which writes ``<``, ``>``, ``&`` and ``'`` as ``\u003c`` …, so no string can close the
element; the page's script (``templates/explorer.js``, inlined by :data:`PAGE_TEMPLATE`) puts strings on the page as
text only.
"""

from __future__ import annotations

import base64
import math
from functools import cache
from typing import Any

import jinja2

PAGE_TEMPLATE = "page.html.j2"
OPEN_ROWS = 24
"""A table of up to this many rows is shown open; a longer one starts collapsed (``<details>``, the ``collapsible``
macro of ``templates/macros.html.j2``)."""


def num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``–`` for NaN or None."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def mean_sem(mean: float, sem: float) -> str:
    """``mean ± sem`` (just the mean when the sem is undefined)."""
    return num(mean) if not math.isfinite(sem) else f"{num(mean)} ± {num(sem)}"


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@cache
def environment() -> jinja2.Environment:
    """The report's environment: the package's templates, auto-escaping on, undefined names an error; the global
    ``open_rows`` is :data:`OPEN_ROWS`."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sharedattr.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.globals["open_rows"] = OPEN_ROWS
    return env


def render(template: str, **context: Any) -> str:
    """Render template ``template`` of the report's environment."""
    return environment().get_template(template).render(**context)
