"""Tiny HTML templating: escaped text by default, :class:`Html` for markup that is already safe.

Everything a run can put in a string (experiment names, neuron and stimulus ids, method
labels) goes through :func:`esc`; only the helpers here produce :class:`Html`. Images are
inlined as ``data:`` URIs, so a page needs no other file and no network.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any


class Html(str):
    """A string of markup that is safe to insert as is (never escaped again)."""


def esc(value: Any) -> Html:
    """``value`` as safe markup: :class:`Html` unchanged, anything else ``str()``-ed and escaped."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    """Concatenate escaped ``parts`` (``sep`` is markup)."""
    return Html(sep.join(esc(p) for p in parts))


def tag(name: str, content: Any = "", **attrs: Any) -> Html:
    """``<name attrs>content</name>``; attribute values are escaped, ``class_`` → ``class``, None dropped."""
    rendered = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    if isinstance(content, (list, tuple)):
        content = join(content)
    return Html(f"<{name}{rendered}>{esc(content)}</{name}>")


def num(x: float, digits: int = 3) -> str:
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


def img(png: bytes, alt: str, *, width: int | None = None, class_: str | None = None) -> Html:
    """An inline PNG image."""
    w = f' width="{width}"' if width else ""
    c = f' class="{esc(class_)}"' if class_ else ""
    return Html(f'<img src="{data_uri(png)}" alt="{esc(alt)}"{w}{c}>')


def figure(png: bytes, caption: Any, alt: str | None = None) -> Html:
    """An inline PNG with a caption underneath."""
    return Html(f"<figure>{img(png, alt or str(caption))}<figcaption>{esc(caption)}</figcaption></figure>")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numeric: Iterable[int] = (),
          row_classes: Sequence[str | None] | None = None, class_: str | None = None,
          caption: Any | None = None) -> Html:
    """A table: ``header`` cells, then ``rows`` of cells (each escaped unless :class:`Html`).

    Columns in ``numeric`` are right-aligned; ``row_classes`` gives each body row a CSS class.
    """
    right = set(numeric)

    def cell(t: str, i: int, c: Any) -> str:
        return f'<{t} class="num">{esc(c)}</{t}>' if i in right else f"<{t}>{esc(c)}</{t}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes is not None else None
        tr = f'<tr class="{esc(cls)}">' if cls else "<tr>"
        body.append(tr + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>\n")
    cap = f"<caption>{esc(caption)}</caption>" if caption is not None else ""
    cls = f' class="{esc(class_)}"' if class_ else ""
    return Html(f"<table{cls}>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(body)}</tbody></table>")


def note(text: Any) -> Html:
    """A muted note (e.g. why a section is empty)."""
    return tag("p", text, class_="note")


def section(anchor: str, title: str, *content: Any) -> Html:
    """``<section id=anchor><h2>title</h2>content…</section>``."""
    return Html(f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n' + "\n".join(esc(c) for c in content)
                + "\n</section>")


CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2330; background: #fff; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1200px; margin: 0 auto; padding: 18px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 2px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ec; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p { margin: 6px 0; }
.sub { color: #5b6475; font-size: 13px; margin-bottom: 12px; word-break: break-all; }
.facts { display: grid; grid-template-columns: repeat(5, 1fr); gap: 8px; margin: 10px 0 14px; }
.fact { background: #f5f7fa; border-radius: 6px; padding: 7px 11px; }
.fact .k { display: block; color: #5b6475; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.fact .v { display: block; font-size: 15px; font-weight: 600; overflow-wrap: anywhere; }
.verdict { border-left: 5px solid #3867d6; background: #f0f4fc; padding: 10px 16px; border-radius: 0 6px 6px 0; }
.verdict h3 { margin: 0 0 4px; font-size: 16px; }
#summary > h2 { margin: 10px 0 4px; font-size: 17px; border: 0; padding: 0; }
.verdict ul { margin: 4px 0; padding-left: 20px; }
.verdict li { margin: 3px 0; }
nav.toc { font-size: 13px; margin-top: 12px; color: #5b6475; }
nav.toc a { color: #3867d6; text-decoration: none; margin-right: 12px; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: #f5f7fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pb td { background: #fbf7e9; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #5b6475; font-size: 13px; margin-top: 4px; }
img.thumb { image-rendering: pixelated; border: 1px solid #d5d9e0; display: block; }
.note { color: #5b6475; font-style: italic; }
.win { color: #1e7b34; font-weight: 600; } .loss { color: #b23a30; font-weight: 600; } .tie { color: #6b6b6b; }
.bar { background: #3867d6; height: 10px; border-radius: 2px; display: inline-block; }
.n { color: #8a92a3; font-size: 11px; }
ul.reading li { margin: 4px 0; }
.scroll { overflow-x: auto; }
table.grid { border-collapse: separate; border-spacing: 3px 2px; margin: 4px 0 16px; }
table.grid th { background: none; border: 0; padding: 0 2px; text-align: center; font-size: 12px; font-weight: 500;
                color: #5b6475; }
table.grid th.method { color: #1d2330; font-weight: 700; border-bottom: 2px solid #c9d3e6; }
table.grid th.method + th.method, table.grid th[colspan] { padding: 2px 6px; }
table.grid td { border: 0; padding: 0 1px; vertical-align: top; }
table.grid td:nth-child(2) { padding-right: 14px; }
table.grid td:nth-child(2n+3) { padding-left: 10px; }
table.grid .lbl { font-size: 11px; color: #3d4554; white-space: pre-line; line-height: 1.25; max-width: 96px;
                  overflow-wrap: anywhere; margin: 1px 0 6px; }
table.grid td.na { color: #8a92a3; font-size: 11px; text-align: center; vertical-align: middle; }
"""


def page(title: str, body: Any) -> Html:
    """A complete, self-contained HTML document."""
    return Html(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{esc(body)}\n</main>\n"
        "</body>\n</html>\n"
    )
