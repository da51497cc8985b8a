"""A self-contained interactive viewer: one HTML file, no network, no server.

``ncd.draw(diagram, "model.html")`` (or ``ncd draw ... -o model.html``) writes a page showing
the diagram in the paper's notation — the renderer's own SVG — with pan and zoom, blocks
that expand and collapse on click, repeated blocks folded with their count, tooltips on
every wire (axis name and size) and box (primitive, parameters, types, costs), a search
box for blocks, boxes, primitives and axes, and export of what is shown to SVG or PNG.  In
a notebook a diagram displays as the same viewer (``Diagram._repr_html_``), inside a
sandboxed iframe.

The page holds the top view (blocks at or below the default ``depth``, 1 unless given,
collapsed) and one pre-rendered *definition panel* per distinct block — the block's fence
around its contents, as the paper draws a definition.  Clicking a collapsed block adds its
panel beside the drawing; any number can be open at once, and the script packs them into
rows that fit the window.  See ``docs/viewer.md``.

>>> import ncd
>>> page = to_html((ncd.Linear("m -> n") >> ncd.ReLU()).block("<b>Net</b>"))
>>> page.startswith("<!DOCTYPE html>") and "<b>Net" not in page and "&lt;b&gt;Net" in page
True
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ncd.errors import InputError, LimitError
from ncd.ir.diagram import Block, Diagram
from ncd.render import Style, register_writer
from ncd.render.layout import no_collector
from ncd.viewer.page import iframe, page
from ncd.viewer.views import Views, explore

__all__ = ["to_html", "write_html", "notebook_html", "explore", "Views"]


def _title(diagram: Diagram, style: Style) -> str:
    if style.title:
        return style.title
    return diagram.name if isinstance(diagram, Block) else "diagram"


def _html(diagram: Diagram, style: Style, costs: bool) -> str:
    if not isinstance(diagram, Diagram):
        raise InputError(f"viewer: expected an ncd diagram, not {type(diagram).__name__} {diagram!r:.60}")
    try:
        with no_collector():  # as the renderer: collector passes over a large drawing's records made it superlinear
            return page(explore(diagram, style, costs=costs), _title(diagram, style))
    except RecursionError:  # a file's sequences in sequences (not flattened as >> flattens them) 140 deep and more
        raise LimitError(f"viewer: {diagram.name if isinstance(diagram, Block) else 'the diagram'} is nested deeper"
                         f" than Python's recursion limit ({sys.getrecursionlimit()}) lets the viewer lay it out;"
                         " lower nesting in ncd.limits or raise sys.setrecursionlimit") from None


def to_html(diagram: Diagram, *, costs: bool = True, **options: Any) -> str:
    """The viewer page for ``diagram`` as HTML text (``options`` as for :func:`ncd.draw`; ``depth`` defaults to 1)."""
    return _html(diagram, Style.from_options(**options), costs)


def write_html(diagram: Diagram, path: str | os.PathLike[str], *, costs: bool = True, **options: Any) -> str:
    """Write the viewer page to ``path``; returns the path."""
    target = os.fspath(path)
    text = to_html(diagram, costs=costs, **options)  # (made first: a diagram it refuses leaves no empty file)
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(text)
    return target


def notebook_html(diagram: Diagram, *, height: int = 560, **options: Any) -> str:
    """The viewer for a notebook cell: the page in a sandboxed ``<iframe srcdoc>`` (works offline)."""
    return iframe(to_html(diagram, **options), height)


@register_writer(".html", ".htm")
def _write_html(diagram: Diagram, path: str, style: Style) -> None:
    text = _html(diagram, style, costs=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
