"""The report's Jinja2 environment: templates under ``sharedattr/report/templates/``, auto-escaped.

Everything a run can put in a string (experiment names, neuron and stimulus ids, method and
metric labels, error notes) is escaped by the templates; nothing is marked safe. The only
values that pass through escaping unchanged are the base64 ``data:`` URIs of the images
(:func:`data_uri`) and the numbers formatted by :func:`num` and :func:`mean_sem`, whose
characters need no escaping.
"""

from __future__ import annotations

import base64
import math
from functools import cache
from typing import Any

import jinja2

PAGE_TEMPLATE = "page.html.j2"


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
    """The report's environment: the package's templates, auto-escaping on, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sharedattr.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """Render template ``template`` of the report's environment."""
    return environment().get_template(template).render(**context)
