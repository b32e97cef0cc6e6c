"""Building blocks of miaudit's self-contained HTML pages: escaping, number formats, tables, inline
images (PNG as data URIs) and the page shell with its inline stylesheet. No page here loads anything
from the network."""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #dde;padding-bottom:.2em}
.meta{color:#667;font-size:.9em}
.summary{background:#eef4ff;border-left:4px solid #3a6fd8;padding:12px 16px;margin:16px 0}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:8px 14px;margin:8px 0}
.alert{background:#fde8e8;border-left:4px solid #c92a2a;padding:8px 14px;margin:8px 0}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}th,td{border:1px solid #dde;padding:4px 8px;text-align:left}
th{background:#f0f2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}pre{background:#f6f7f9;padding:10px;overflow:auto;font-size:.82em}
iframe{width:100%;height:320px;border:1px solid #dde}figure{margin:10px 0}figcaption{color:#667;font-size:.85em}
.wide{overflow-x:auto}
"""


def esc(value: Any) -> str:
    """HTML-escaped ``str(value)`` (quotes included)."""
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def with_ci(value: Any, ci: Sequence[float] | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def image(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def figure(run_dir: Path, name: str, make: Callable[[Path], Any], alt: str, caption: str) -> str:
    """The run's own PNG ``name`` if present, else one drawn by ``make(path)``."""
    path = run_dir / name
    if path.is_file():
        return image(path.read_bytes(), alt, caption)
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / name
        make(made)
        return image(made.read_bytes(), alt, caption)


def table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """HTML table; cells are already escaped / formatted HTML."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def key_values(mapping: dict[str, Any]) -> str:
    """A two-column table of the scalar entries of ``mapping``; entries without a value (``None``) are left out."""
    rows = [[esc(k.replace("_", " ")), f"{v:.4g}" if isinstance(v, float) else num(v)]
            for k, v in mapping.items() if v is not None and not isinstance(v, (dict, list))]
    return table(["", ""], rows) if rows else "<p>-</p>"


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


__all__ = ["CSS", "esc", "figure", "with_ci", "num", "pct", "image", "key_values", "page", "table"]
