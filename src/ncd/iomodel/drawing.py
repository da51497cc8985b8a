"""Drawings in the IO notation: relabelled wires in their level's colour, a per-level cost table,
and the pseudocode diagram of a schedule (its loops, and the arrays live in each step).

The diagram itself is laid out by the renderer (:func:`ncd.render.layout`); this module only
adds marks on top of that drawing and paints it with the renderer's painters.  Each level has a
colour; a grouped axis gets a double bar ``‖`` (parallel groups) and a streamed axis a chevron
``›`` (sequential chunks) beside its label, with its new size written under it.

>>> import ncd
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> att = ncd.online_softmax(ncd.zoo.attention())
>>> r = ncd.io(att, h, group={"smem": {"y": 4}}, stream={"smem": {"x": 2}})
>>> "s=2" in io_svg(att, r) and "chunks" in pseudocode_svg(r)
True
"""

from __future__ import annotations

from typing import Any

from ncd.errors import InputError
from ncd.iomodel.costs import live_columns, moves
from ncd.iomodel.report import IOReport, _fmt, _time
from ncd.ir.diagram import Diagram
from ncd.ir.size import size_text
from ncd.render import Style, layout
from ncd.render.model import Drawing, Path, Polygon, Rect, Text

__all__ = ["LEVEL_COLOURS", "level_colour", "io_drawing", "io_svg", "draw_io", "pseudocode_drawing",
           "pseudocode_svg", "draw_pseudocode"]

#: Stroke and fill colours per level name (top to bottom of the usual GPU hierarchy).
LEVEL_COLOURS: dict[str, tuple[str, str]] = {
    "hbm": ("#3d6fb6", "#dbe6f5"),
    "l2": ("#3f8f4f", "#dcefdc"),
    "smem": ("#c46f00", "#fbe6c9"),
    "registers": ("#b03a48", "#f6d9dc"),
}
_SPARE = [("#6b4fa0", "#e6def3"), ("#777777", "#e8e8e8")]


def level_colour(report: IOReport, level: str) -> tuple[str, str]:
    if level in LEVEL_COLOURS:
        return LEVEL_COLOURS[level]
    others = [lv for lv in report.hierarchy.levels if lv not in LEVEL_COLOURS]
    return _SPARE[others.index(level) % len(_SPARE)]


def _marks(report: IOReport) -> dict[str, tuple[str, str, str]]:
    """axis -> (level, kind, chunk text) of the innermost relabelling of that axis."""
    out: dict[str, tuple[str, str, str]] = {}
    for lp in report.schedule.nest:
        out[lp.axis] = (lp.level, lp.kind, size_text(lp.chunk))
    return out


def io_drawing(diagram: Diagram, report: IOReport, **options: Any) -> Drawing:
    """The diagram's drawing with relabelled wires marked and the per-level cost table below it."""
    drawing = layout(diagram, Style.from_options(**options))
    marks = _marks(report)
    labels = [t for t in drawing.of(Text) if t.role == "label" and t.string in marks]
    first_x = {name: min(t.x for t in labels if t.string == name) for name in {t.string for t in labels}}
    items: list[Any] = list(drawing.items)
    for it in labels:  # painted last, over fences and wires: highlight, the label again, the mark, the size
        level, kind, chunk = marks[it.string]
        stroke, _ = level_colour(report, level)
        x0, y0, x1, y1 = it.bounds
        items.append(Rect(x0 - 1.5, y0 - 3.5, x1 - x0 + 3, y1 - y0 + 4.5, fill=None, stroke=stroke, width=0.8,
                          radius=2, role="legend"))  # an outline keeps the item axis's overline visible
        mx, my = x1 + 2.5, it.y - 0.3 * (y1 - y0)
        if kind == "group":
            items += [Path.through([(mx + dx, my - 4), (mx + dx, my + 2)], stroke=stroke, width=1.4, role="legend")
                      for dx in (0.0, 2.4)]
        else:
            items.append(Polygon(((mx, my - 4), (mx + 3.5, my - 1), (mx, my + 2)), fill=stroke, stroke=None,
                                 role="legend"))
        if abs(it.x - first_x[it.string]) < 1e-6:
            items.append(Text.plain(x1 + 8, it.y - 1, f"{'g' if kind == 'group' else 's'}={chunk}", 6.5,
                                    role="legend"))
    drawing.items = items
    _table(drawing, report)
    return drawing


def _table(drawing: Drawing, report: IOReport) -> None:
    """The per-level cost table under the drawing (and a legend of the marks)."""
    y = drawing.height + 14
    x = 12.0
    cols = [("level", 0), ("transfers (el)", 62), ("bytes", 150), ("memory (el)", 222), ("capacity", 300),
            ("fits", 372), ("time", 400)]
    for text, dx in cols:
        drawing.items.append(Text.plain(x + dx, y, text, 8, bold=True, role="text"))
    for lvl in report.hierarchy.levels:
        y += 13
        stroke, fill = level_colour(report, lvl)
        drawing.items.append(Rect(x - 2, y - 8.5, 56, 11, fill=fill, stroke=stroke, width=0.6, radius=2, role="legend"))
        fits = {True: "yes", False: "NO", None: "?"}[report.feasible[lvl]]
        row = [lvl, _fmt(report.transfers[lvl]), _fmt(report.bytes(lvl)), _fmt(report.memory[lvl]),
               f"{report.capacity[lvl]:,}", fits, _time(report.transfer_times.get(lvl))]
        for (_, dx), text in zip(cols, row):
            drawing.items.append(Text.plain(x + dx, y, text, 8, role="text"))
    y += 15
    foot = (f"{report.dtype}, q={report.q}; compute {_time(report.compute_time)}; time {_time(report.time)}:"
            f" {report.bound or '?'}-bound   ‖ grouped (parallel)   › streamed (sequential)")
    drawing.items.append(Text.plain(x, y, foot, 8, role="text"))
    drawing.width = max(drawing.width, x + 470)
    drawing.height = y + 10


def io_svg(diagram: Diagram, report: IOReport, **options: Any) -> str:
    from ncd.render.svg import paint_svg

    return paint_svg(io_drawing(diagram, report, **options))


def _write(svg: str, path: str) -> None:
    if path.lower().endswith(".svg"):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(svg)
    elif path.lower().endswith(".png"):
        from ncd.render.raster import svg_to_png

        with open(path, "wb") as handle:
            handle.write(svg_to_png(svg, 2.0))
    else:
        raise InputError(f"IO drawings are written as .svg or .png, not {path!r}")


def draw_io(diagram: Diagram, report: IOReport, path: str, **options: Any) -> None:
    """Write the IO drawing of ``diagram`` under ``report``'s relabelling to ``path`` (.svg or .png)."""
    _write(io_svg(diagram, report, **options), path)


# -- the pseudocode diagram ------------------------------------------------------------------
def pseudocode_drawing(report: IOReport) -> Drawing:
    """The loop nest at the bottom level: nested loops, what moves where, and the live arrays per operation."""
    h = report.hierarchy
    bottom = h.levels[-1]
    sched, prog = report.schedule, report.program
    loops = sched.loops(bottom)
    d = Drawing(0, 0, [])
    y = 18.0
    d.items.append(Text.plain(10, y, f"{h.name}: {sched.describe()}", 9, bold=True, role="title"))
    last_group = max((i for i, lp in enumerate(loops) if lp.kind == "group"), default=-1)

    def depth(names: tuple[str, ...]) -> int:
        runs = [i for i, lp in enumerate(loops) if lp.kind == "stream" and lp.count != 1 and lp.axis in names]
        return max(runs + [last_group])

    at: dict[tuple[int, str], list[str]] = {}
    for m in moves(prog, sched, bottom):
        where = "before" if m.kind in ("read", "spill read", "state read") else "after"
        name = m.array.name if m.kind == "read" else "out"
        verb = {"read": "load", "write": "write", "spill read": "read back", "state read": "read back m, l of",
                "state write": "write m, l of"}[m.kind]
        at.setdefault((depth(m.array.names), where), []).append(
            f"{verb} {name}[{' '.join(m.array.names)}]  tile {_fmt(m.tile)}")
    lines: list[tuple[float, str]] = []
    frames: list[tuple[float, int, int, str]] = []

    def emit(i: int, indent: float) -> None:
        lines.extend((indent, t) for t in at.get((i, "before"), []))
        if i + 1 < len(loops):
            lp = loops[i + 1]
            head = ("parallel for" if lp.kind == "group" else "for") + \
                f" {lp.axis} in {_fmt(lp.count)} chunks of {_fmt(lp.chunk)}   [{lp.level}]"
            lines.append((indent, head))
            first = len(lines)
            emit(i + 1, indent + 14)
            frames.append((indent + 3, first, len(lines) - 1, lp.level))
        else:
            lines.append((indent, "compute " + ", ".join(op.label for op in prog.ops)))
        lines.extend((indent, t) for t in at.get((i, "after"), []))

    emit(-1, 10.0)
    y += 8
    for ind, text in lines:
        y += 13
        d.items.append(Text.plain(ind, y, text, 8, role="text"))
    for x, first, last, level in frames:  # a bracket in the loop's level colour along its body
        stroke, _ = level_colour(report, level)
        top, bot = 26 + 13 * first + 3, 26 + 13 * (last + 1) + 3
        d.items.append(Path.through([(x + 4, top), (x, top), (x, bot), (x + 4, bot)], stroke=stroke, width=1.2,
                                    role="fence"))
    text_w = max(t.x + t.width for t in d.of(Text)) + 20
    _columns(d, report, text_w, 34.0)
    return d


def _columns(d: Drawing, report: IOReport, x0: float, y0: float) -> None:
    """One column per operation of a step: the arrays live at the bottom level, heights ∝ elements."""
    bottom = report.hierarchy.levels[-1]
    cols = live_columns(report.program, report.schedule, bottom)
    try:
        sizes = [[(name, float(t)) for name, t in col] for col in cols]
    except TypeError:  # symbolic tiles: equal heights
        sizes = [[(name, 1.0) for name, _ in col] for col in cols]
    widest = max((sum(s for _, s in col) for col in sizes), default=1.0) or 1.0
    height = 150.0
    stroke, fill = level_colour(report, bottom)
    d.items.append(Text.plain(x0, y0 - 12, f"live in {bottom} per step (widest column = M = {_fmt(report.memory[bottom])})",
                              8, bold=True, role="text"))
    for j, (col, op) in enumerate(zip(sizes, report.program.ops)):
        x = x0 + j * 78
        y = y0 + height
        for name, s in col:
            hgt = max(height * s / widest, 9.0)
            y -= hgt
            d.items.append(Rect(x, y, 70, hgt, fill=fill, stroke=stroke, width=0.7, role="box"))
            d.items.append(Text.plain(x + 3, y + min(hgt, 12) - 3, f"{name}", 6.5, role="text"))
        d.items.append(Text.plain(x, y0 + height + 12, op.label, 7.5, role="text"))
    d.width = max(d.width, x0 + 78 * max(len(sizes), 1) + 10, max(t.x + t.width for t in d.of(Text)) + 10)
    d.height = max(d.height, y0 + height + 24, max(t.y for t in d.of(Text)) + 12)


def pseudocode_svg(report: IOReport) -> str:
    from ncd.render.svg import paint_svg

    return paint_svg(pseudocode_drawing(report))


def draw_pseudocode(report: IOReport, path: str) -> None:
    """Write the pseudocode diagram of ``report``'s schedule to ``path`` (.svg or .png)."""
    _write(pseudocode_svg(report), path)
