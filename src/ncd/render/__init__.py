"""Drawing neural circuit diagrams: layout first (a backend-free :class:`Drawing`), then painters.

``ncd.draw(diagram, path, **options)`` picks the writer from the file extension
(:data:`WRITERS`: ``.svg``, ``.png``, ``.pdf``, ``.tex``/``.tikz``; other interpreters may
register more, e.g. ``.html``).  ``Diagram._repr_svg_`` uses :func:`to_svg`.

>>> import ncd
>>> svg = to_svg(ncd.Identity.of("b ~t m") >> ncd.Linear("m -> n", bias=True))
>>> svg.startswith("<svg") and "L" in svg
True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ncd.errors import InputError
from ncd.ir.checks import describe, expect_diagram
from ncd.ir.diagram import Diagram
from ncd.render.layout import layout, no_collector
from ncd.render.model import Drawing
from ncd.render.style import Style

__all__ = ["draw", "to_svg", "to_tikz", "to_png", "to_pdf", "layout", "Drawing", "Style", "WRITERS", "register_writer"]

Writer = Callable[[Diagram, str, Style], None]

#: Writers by file extension (lower case, with the dot).  ``register_writer`` adds one.
WRITERS: dict[str, Writer] = {}


def register_writer(*extensions: str) -> Callable[[Writer], Writer]:
    """Register ``fn(diagram, path, style)`` as the writer for ``extensions`` (e.g. ``".html"``)."""

    def add(fn: Writer) -> Writer:
        for ext in extensions:
            WRITERS[ext.lower()] = fn
        return fn

    return add


def _check(value: Any) -> Diagram:
    diagram = expect_diagram(value, "draw")
    if len(diagram.dom) == 0 and len(diagram.cod) == 0 and next(diagram.boxes(), None) is None:
        raise InputError(f"draw: the diagram is empty ({describe(diagram)}: no wires and no boxes), so there is nothing"
                         " to draw")
    return diagram


def to_svg(diagram: Diagram, **options: Any) -> str:
    """The diagram as self-contained SVG text."""
    style = Style.from_options(**options)
    from ncd.render.svg import paint_svg

    with no_collector():
        return paint_svg(layout(_check(diagram), style), embed_fonts=style.embed_fonts)


def to_tikz(diagram: Diagram, *, standalone: bool = True, **options: Any) -> str:
    """TikZ/PGF source (a ``standalone`` document by default; ``standalone=False`` for a bare ``tikzpicture``)."""
    style = Style.from_options(**options)
    from ncd.render.tikz import paint_tikz

    with no_collector():  # (painting a large drawing makes tens of thousands of strings: no collector passes)
        return paint_tikz(layout(_check(diagram), style), standalone=standalone)


def to_png(diagram: Diagram, **options: Any) -> bytes:
    """PNG bytes rendered from the SVG with cairosvg (``scale`` pixels per point, default 2)."""
    style = Style.from_options(**options)
    from ncd.render.raster import svg_to_png
    from ncd.render.svg import paint_svg

    with no_collector():
        svg = paint_svg(layout(_check(diagram), style))
    return svg_to_png(svg, style.scale)


def to_pdf(diagram: Diagram, **options: Any) -> bytes:
    """PDF bytes rendered from the SVG with cairosvg."""
    style = Style.from_options(**options)
    from ncd.render.raster import svg_to_pdf
    from ncd.render.svg import paint_svg

    with no_collector():
        svg = paint_svg(layout(_check(diagram), style))
    return svg_to_pdf(svg)


@register_writer(".svg")
def _write_svg(diagram: Diagram, path: str, style: Style) -> None:
    from ncd.render.svg import paint_svg

    with no_collector():
        text = paint_svg(layout(diagram, style), embed_fonts=style.embed_fonts)
    _write(path, text)


@register_writer(".tex", ".tikz")
def _write_tikz(diagram: Diagram, path: str, style: Style) -> None:
    from ncd.render.tikz import paint_tikz

    with no_collector():
        text = paint_tikz(layout(diagram, style), standalone=path.lower().endswith(".tex"))
    _write(path, text)


@register_writer(".png")
def _write_png(diagram: Diagram, path: str, style: Style) -> None:
    from ncd.render.raster import svg_to_png
    from ncd.render.svg import paint_svg

    with no_collector():
        svg = paint_svg(layout(diagram, style))
    _write(path, svg_to_png(svg, style.scale))


@register_writer(".pdf")
def _write_pdf(diagram: Diagram, path: str, style: Style) -> None:
    from ncd.render.raster import svg_to_pdf
    from ncd.render.svg import paint_svg

    with no_collector():
        svg = paint_svg(layout(diagram, style))
    _write(path, svg_to_pdf(svg))


def _write(path: str, data: str | bytes) -> None:
    if isinstance(data, bytes):
        with open(path, "wb") as fb:
            fb.write(data)
    else:
        with open(path, "w", encoding="utf-8") as ft:
            ft.write(data)


def _prepare(target: str) -> None:
    """Create the missing folders of ``target``; an ``InputError`` naming it when it cannot be written there."""
    if os.path.isdir(target):
        raise InputError(f"draw: cannot write {target!r}: it is a folder; give a file name such as "
                         f"{os.path.join(target, 'diagram.svg')!r}")
    parent = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise InputError(f"draw: cannot write {target!r}: cannot create its folder {parent!r} "
                         f"({error.strerror or type(error).__name__})") from None


def draw(diagram: Diagram, path: str | os.PathLike[str], **options: Any) -> str:
    """Draw ``diagram`` to ``path``; the extension chooses the format (``.svg .png .pdf .tex .tikz``).

    Options: ``page`` (``"column"``: wrap into rows that fit a 6.5-inch column, the default;
    ``"slide"``: wider rows; ``"none"``: one row), ``depth``, ``fold``, ``labels``, ``legend``, ``title``, ``scale`` (PNG pixels per
    point), ``embed_fonts`` (SVG), ``costs`` (``True`` or sizes: each block's FLOPs and parameters
    under its title), ``pitch`` and other sizes — see :class:`Style`.  Returns the path.

    Missing folders of ``path`` are created (``ncd.draw(d, "out/figures/gpt2.svg")`` on a fresh checkout writes
    it); a path that cannot be written (a folder there, a file where a folder should be) is an ``InputError`` raised
    before anything is drawn.
    """
    _check(diagram)
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"draw: the path must be a file name such as 'gpt2.svg', not {type(path).__name__} {path!r:.60}")
    target = os.fspath(path)
    ext = os.path.splitext(target)[1].lower()
    writer = WRITERS.get(ext)
    if writer is None:  # the viewer registers ".html"; imported here, so that render does not import viewer
        import ncd.viewer  # noqa: F401

        writer = WRITERS.get(ext)
    if writer is None:
        known = ", ".join(sorted(WRITERS))
        raise InputError(f"draw: cannot write {target!r}: unknown extension {ext or '(none)'!r}; known: {known}")
    _prepare(target)
    costs = options.get("costs")
    if costs is not None and not isinstance(costs, tuple):
        from ncd.analysis.annotate import annotations as block_annotations

        sizes = dict(costs) if isinstance(costs, dict) else {}
        options["costs"] = tuple(block_annotations(diagram, **sizes).items()) if costs else ()
    writer(_check(diagram), target, Style.from_options(**options))
    return target

