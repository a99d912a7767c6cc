"""HTML building blocks of the processing report: one self-contained page, nothing fetched.

Every piece of text goes through :func:`html.escape`; images are embedded as base64 ``data:``
URIs, the style sheet is inline, and no element refers to an external URL, so the page opens the
same from a laptop, a mail attachment or an archive. Numbers in tables are shown rounded and
carry their full value in a ``data-value`` attribute (``repr`` of the float) for programs.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["Section", "esc", "fmt", "num_cell", "table", "figure", "png_data_uri", "figure_png", "note",
           "render_page", "slug", "IMG_PREFIX"]

#: how every embedded image starts (tests count these)
IMG_PREFIX = '<img src="data:image/png;base64,'

CSS = """
:root { --ink: #1d2430; --muted: #5b6577; --line: #d9dee7; --accent: #2c6e8f; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--bg); line-height: 1.45; font-size: 15px; }
header { background: #1f3b4d; color: #fff; padding: 22px 40px 18px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 2px 0; color: #cfe0ea; font-size: 13.5px; }
main { max-width: 1180px; margin: 0 auto; padding: 10px 40px 40px; }
nav { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 20px; margin: 18px 0; }
nav h2 { font-size: 15px; margin: 4px 0 6px; border: none; padding: 0; }
nav ol { margin: 0; padding-left: 22px; columns: 2; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 24px 18px;
          margin: 18px 0; }
h2 { font-size: 20px; margin: 14px 0 10px; padding-bottom: 6px; border-bottom: 2px solid var(--accent); }
h3 { font-size: 16px; margin: 18px 0 8px; color: #24455a; }
figure { margin: 14px 0 20px; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
figcaption { font-size: 13px; color: var(--muted); margin: 6px auto 0; max-width: 900px; text-align: left; }
figcaption b { color: var(--ink); }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; }
caption { caption-side: top; text-align: left; font-size: 13px; color: var(--muted); padding: 0 0 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px; text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
.note { background: #fff8e6; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 10px 0;
        font-size: 13.5px; }
.muted { color: var(--muted); font-size: 13px; }
pre { background: #f3f5f8; border: 1px solid var(--line); padding: 10px 12px; overflow-x: auto;
      font-size: 12.5px; line-height: 1.35; white-space: pre-wrap; word-break: break-word; }
code { font-size: 12.5px; }
details summary { cursor: pointer; color: var(--accent); font-size: 13px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 8px 0 12px; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 10px 0 30px; }
"""


@dataclass
class Section:
    """One section of the page: an anchor id, a title and its HTML body (already escaped)."""

    id: str
    title: str
    body: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> "Section":
        self.body.extend(parts)
        return self


def esc(text: Any) -> str:
    """``html.escape`` of ``str(text)`` (quotes included)."""
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    """An HTML id from free text."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in str(text))
    return "-".join(p for p in out.split("-") if p) or "section"


def fmt(value: float, digits: int = 4) -> str:
    """A number for display: ``digits`` significant digits, ``–`` for NaN/None."""
    if value is None:
        return "–"
    v = float(value)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}"


def num_cell(value: float | None, digits: int = 4, extra: str = "") -> str:
    """A right-aligned table cell showing ``fmt(value)`` with the full value in ``data-value``."""
    if value is None or not math.isfinite(float(value)):
        return '<td class="num" data-value="nan">–</td>'
    v = float(value)
    return f'<td class="num" data-value="{esc(repr(v))}">{esc(fmt(v, digits))}{extra}</td>'


def table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None,
          table_id: str | None = None) -> str:
    """An HTML table; ``header`` is plain text (escaped here), each row a list of ready ``<td>``/``<th>`` cells."""
    parts = [f'<table{f" id={chr(34)}{esc(table_id)}{chr(34)}" if table_id else ""}>']
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (white background)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def figure(png: bytes, caption: str, alt: str, number: int, fig_id: str | None = None,
           max_width_px: int | None = None) -> str:
    """A numbered ``<figure>`` with the PNG embedded and its caption (caption text escaped)."""
    style = f' style="max-width:{int(max_width_px)}px"' if max_width_px else ""
    ident = f' id="{esc(fig_id)}"' if fig_id else ""
    return (f"<figure{ident}>{IMG_PREFIX}{png_data_uri(png).split(',', 1)[1]}\" "
            f"alt=\"{esc(alt)}\"{style}><figcaption><b>Figure {number}.</b> {esc(caption)}</figcaption></figure>")


def note(text: str) -> str:
    """A highlighted short note (escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def render_page(title: str, subtitle_lines: Sequence[str], sections: Sequence[Section], footer: str) -> str:
    """The whole page: header, table of contents (one entry per section), sections, footer."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    head = "".join(f"<p>{esc(line)}</p>" for line in subtitle_lines)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{"".join(s.body)}</section>'
                   for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{head}</header><main>"
            f"<nav aria-label=\"Contents\"><h2>Contents</h2><ol>{toc}</ol></nav>{body}"
            f"<footer>{esc(footer)}</footer></main></body></html>\n")
