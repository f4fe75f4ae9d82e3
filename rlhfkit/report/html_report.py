"""Self-contained HTML pages (evaluate.py's and run health's report.html): one file, no scripts, no links.

Images are embedded as base64 `data:` URIs and the style sheet is inline, so the page opens offline, from an e-mail
attachment or a copied folder. Every text that comes from data (prompts, answers, numbers) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.answers td { white-space: pre-wrap; max-width: 40em; }
.meta { color: #666; font-size: 0.85em; }
.finding { margin: 0.4em 0; padding: 0.4em 0.7em; border-left: 4px solid #c0392b; background: #fdf2f1; }
.ok { border-left-color: #27ae60; background: #f0faf3; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def escape(value) -> str:
    """`value` as text safe inside HTML (None becomes an empty string)."""
    return "" if value is None else html.escape(str(value))


def png_data_uri(path: str) -> str | None:
    """The PNG file at `path` as a `data:image/png;base64,...` URI, or None if the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def image(path: str, alt: str) -> str:
    """An `<img>` with the PNG at `path` embedded, or an empty string when there is no such file."""
    uri = png_data_uri(path)
    return f'<p><img src="{uri}" alt="{escape(alt)}"></p>' if uri else ""


def table(headers: list[str], rows: list[list], css_class: str = "", numeric: set[int] | None = None,
          raw: set[int] | None = None) -> str:
    """An HTML table: `headers` (text) and `rows` (one list of cells each).

    Cells are escaped, except those of the column indices in `raw` (already HTML); columns in `numeric` are
    right-aligned. Floats are shown with 3 decimals.
    """
    numeric, raw = numeric or set(), raw or set()

    def cell(i, value):
        text = value if i in raw else escape(f"{value:.3f}" if isinstance(value, float) else value)
        return f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, sections: list[str]) -> str:
    """A whole HTML document: `title` as `<title>` and `<h1>`, then the `sections` (HTML strings) in order."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>\n" + "\n".join(sections)
            + "\n</body></html>\n")


def write_page(path: str, title: str, sections: list[str]) -> str:
    """Write `page(title, sections)` to `path` (UTF-8) and return `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page(title, sections))
    return path
