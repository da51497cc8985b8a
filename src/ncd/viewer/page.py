"""The HTML page: the views, the side tables, the stylesheet and the script, in one file.

The page needs no network and no server.  Its Content-Security-Policy allows no fetches at
all and only the viewer's own script (by hash), so even a label that slipped past escaping
could not run.  Data travel as JSON in a ``<script type="application/json">`` element with
``<``, ``>`` and ``&`` written as ``\\u`` escapes, so no label can close the element.  Each
view's SVG (the painter's, every text in it escaped) sits as it is in a data block of its own,
``<script type="image/svg+xml">``, which the browser never runs: no escaping, so the page is
half the size and built and parsed faster; an SVG that could end its block goes in the JSON.  A panel
drawn exactly as an earlier one but for its blocks' keys and records (a hybrid model's layers, equal but
not in a row, so not folded) travels as that panel and the replacements that make it, checked here.

>>> text = script_json({"name": "</script><script>alert(1)</script>"})
>>> "<" in text, json.loads(text)["name"][:9]
(False, '</script>')
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from typing import Any

from ncd.render.fonts import font_face_css
from ncd.render.svg import faces_used
from ncd.viewer.assets import CSS, SCRIPT
from ncd.viewer.views import View, Views

__all__ = ["page", "iframe", "script_json", "HELP"]

HELP = ("Click a 3-D box to expand its block (its definition opens beside the drawing; open as many as you like), "
        "click it again or the block's fence to collapse it. Hover a wire or a box for its sizes, types and costs. "
        "Drag to pan, wheel to zoom, / to search blocks, boxes and axes, Esc to collapse the last block, 0 to fit.")


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (and still valid JSON)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_UNSAFE = re.compile(r"</?script|<!--", re.IGNORECASE)


def _raw(svg: str) -> bool:
    """Whether a view's SVG can sit in the page as it is, in a data block (``<script type="image/svg+xml">``,
    never run): nothing in it can end the element or change how the browser reads it. The painter escapes
    every text, so this always holds for its drawings; anything else travels as JSON."""
    return _UNSAFE.search(svg) is None


def _pairs(views: Views, view: View) -> list[str]:
    """The hit regions of ``view``'s own block (its fence) and of the blocks drawn collapsed in it, as they are
    written in its SVG (``data-i`` their record, ``data-block`` their key): all that differs between two
    panels of equal blocks met in equal contexts."""
    blocks = views.catalogue.blocks
    return [f'data-i="{blocks[key]["info"]}" data-block="{key}"' for key in (view.key, *view.collapsed)]


def _shared(views: Views) -> dict[int, tuple[int, list[list[str]]]]:
    """``{panel: (earlier panel, replacements)}`` for each panel whose SVG is the earlier one's with its blocks'
    hit regions replaced, in order (``str.replace``, as the page's script does with ``split``/``join``).
    Panels are matched on their SVG with those regions written relative to their own key, and every match is
    checked by making its SVG from the earlier one's: a panel not made exactly keeps its own SVG."""
    first: dict[tuple[str, tuple[str, ...]], int] = {}
    shared: dict[int, tuple[int, list[list[str]]]] = {}
    for k, view in enumerate(views.views):
        if k == 0 or not all(c.startswith(view.key + "/") for c in view.collapsed):
            continue
        pairs = _pairs(views, view)
        relative = tuple(c[len(view.key):] for c in view.collapsed)
        template = view.svg
        for j, pair in enumerate(pairs):
            template = template.replace(pair, f"\x00{j}\x00")
        source = first.setdefault((template, relative), k)
        if source == k:
            continue
        replacements = [[a, b] for a, b in zip(_pairs(views, views.views[source]), pairs) if a != b]
        made = views.views[source].svg
        for a, b in replacements:
            made = made.replace(a, b)
        if made == view.svg and (view.width, view.height) == (views.views[source].width, views.views[source].height):
            shared[k] = (source, replacements)
    return shared


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src data: blob:; font-src data:")


def page(views: Views, title: str) -> str:
    """The complete, self-contained HTML document."""
    cat = views.catalogue
    shared = _shared(views)
    raw = [_raw(v.svg) and k not in shared for k, v in enumerate(views.views)]

    def drawn(k: int, v: View) -> dict[str, Any]:
        if k in shared:
            return {"as": shared[k][0], "r": shared[k][1]}
        return {"s": k} if raw[k] else {"svg": v.svg}

    payload = {
        "title": title,
        "depth": views.depth,
        "views": [{"key": v.key, "w": v.width, "h": v.height, "i": v.infos, **drawn(k, v)}
                  for k, v in enumerate(views.views)],
        "blocks": cat.blocks,
        "infos": cat.infos,
    }
    note = HELP
    if views.truncated:
        note += f" This model has more than {len(views.views)} distinct blocks: deeper ones stay collapsed."
    name = html.escape(title)
    used: dict[str, set[str]] = {}
    for v in views.views:
        for face, chars in (v.faces if v.faces is not None else faces_used(v.svg)).items():
            used.setdefault(face, set()).update(chars)
    fonts_css = font_face_css(used)  # subsets of the bundled fonts, once for every view
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_csp()}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta name=\"generator\" content=\"ncd viewer\">\n"
        f"<title>{name} — ncd</title>\n<style id=\"ncd-fonts\">{fonts_css}</style>\n<style>{CSS}</style>\n</head>\n<body>\n"
        "<header id=\"ncd-bar\">"
        f"<span id=\"ncd-name\" title=\"{name}\">{name}</span><nav id=\"ncd-crumbs\" aria-label=\"expanded blocks\"></nav>"
        "<div id=\"ncd-search-wrap\"><input id=\"ncd-search\" type=\"search\" placeholder=\"Find a block, box or axis…\" "
        "autocomplete=\"off\" aria-label=\"find a block, box or axis\"><ul id=\"ncd-results\" hidden></ul></div>"
        "<button id=\"ncd-fit\" title=\"fit to window (0)\">Fit</button>"
        "<button id=\"ncd-zoom-in\" title=\"zoom in\">+</button><button id=\"ncd-zoom-out\" title=\"zoom out\">−</button>"
        "<button id=\"ncd-export-svg\" title=\"save this view as SVG\">SVG</button>"
        "<button id=\"ncd-export-png\" title=\"save this view as PNG\">PNG</button></header>\n"
        "<main id=\"ncd-stage\"><div id=\"ncd-canvas\"></div></main>\n"
        f"<footer id=\"ncd-help\">{html.escape(note)}</footer>\n<div id=\"ncd-tip\" hidden></div>\n"
        f"<script type=\"application/json\" id=\"ncd-data\">{script_json(payload)}</script>\n"
        + "".join(f"<script type=\"image/svg+xml\" id=\"ncd-view-{k}\">{v.svg}</script>\n"
                  for k, v in enumerate(views.views) if raw[k])
        +
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )


def iframe(document: str, height: int = 560) -> str:
    """The page inside a sandboxed ``<iframe srcdoc>``: scripts and downloads only, isolated from the notebook."""
    return (f"<iframe srcdoc=\"{html.escape(document, quote=True)}\" sandbox=\"allow-scripts allow-downloads\" "
            f"style=\"width:100%;height:{int(height)}px;border:1px solid #ddd;border-radius:4px\" "
            "title=\"ncd diagram viewer\"></iframe>")
