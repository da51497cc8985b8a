"""Drawing options and the paper's visual constants (sizes in points, colours).

>>> Style().pitch
16.0
>>> Style.from_options(pitch=20).pitch
20.0
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ncd.errors import InputError, ParseError
from ncd.ir.names import check_text
from ncd.render.fonts import FAMILIES

__all__ = ["Style", "FENCE_COLOURS", "fence_colour", "FONT_STACK", "SERIF_STACK", "SYMBOL_STACK", "PAGES"]

FONT_STACK = FAMILIES["sans"]
SYMBOL_STACK = FAMILIES["symbols"]
SERIF_STACK = FAMILIES["serif"]

#: Pale fills like the paper's fenced regions (purple, orange, green, pink, blue, yellow, grey).
FENCE_COLOURS = ("#dcd8ee", "#f8e0c6", "#dcefd8", "#f7dde0", "#d9e8f6", "#f5f1c9", "#e7e7e7")


def fence_colour(name: str, avoid: str | None = None) -> str:
    """A stable colour for a block name (the same block always gets the same fill), never ``avoid``
    (the enclosing fence's colour, so nested fences stay visible)."""
    k = zlib.crc32(name.encode()) % len(FENCE_COLOURS)
    if FENCE_COLOURS[k] == avoid:
        k = (k + 1) % len(FENCE_COLOURS)
    return FENCE_COLOURS[k]


#: Page formats for ``page=``: the widest row (points) and the widest width:height ratio wanted.
#: A column row is also narrow enough for its smallest text to print at ≥ 6 pt in a 468 pt column
#: (7.7 pt scripts: 600 pt).
PAGES: dict[str, tuple[float, float]] = {"column": (640.0, 3.0), "slide": (1200.0, 3.5), "none": (float("inf"), float("inf"))}


@dataclass(frozen=True)
class Style:
    """Everything ``ncd.draw(..., **options)`` accepts besides the path.

    ``depth``: blocks nested ``depth`` or more fences deep are drawn as 3-D component boxes;
    ``fold``: runs of identical blocks are drawn once with their count; ``labels``: ``"all"``
    (in every gap, each wire a box there makes or takes), ``"ends"`` (only the diagram's inputs and
    outputs) or ``"none"``; ``legend``:
    derived sizes shown in a legend box (``{"n_b": "n_1/4"}``); ``title``: a heading;
    ``costs``: ``True`` (or a dict of sizes) writes each block's forward FLOPs and parameters
    under its title, as ``ncd.cost`` counts them (``ncd.draw`` turns it into ``(path, text)`` pairs);
    ``page``: ``"column"`` (default) wraps a drawing that is too wide for a 6.5-inch column into
    rows joined by continuation arrows, a block too wide for a row drawn as its box with its
    definition (``box = contents``) below; ``"slide"`` allows rows twice as wide (wide slides);
    ``"none"`` draws one long row.
    """

    pitch: float = 16.0
    segment_gap: float = 12.0
    label_size: float = 11.0
    text_size: float = 12.0
    letter_size: float = 19.0
    margin: float = 10.0
    depth: int | None = None
    fold: bool = True
    labels: Literal["all", "ends", "none"] = "all"
    legend: tuple[tuple[str, str], ...] = ()
    title: str | None = None
    costs: tuple[tuple[str, str], ...] = ()
    scale: float = 2.0
    embed_fonts: bool = True
    page: Literal["column", "slide", "none"] = "column"
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @staticmethod
    def from_options(**options: Any) -> Style:
        known = {f.name for f in fields(Style)} - {"extra"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"draw: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "legend" in options:
            options["legend"] = _legend(options["legend"])
        if options.get("labels", "all") not in ("all", "ends", "none"):
            raise InputError(f"draw: labels={options['labels']!r}; use 'all', 'ends' or 'none'")
        if options.get("page", "column") not in PAGES:
            raise InputError(f"draw: page={options['page']!r}; use 'column', 'slide' or 'none'")
        depth = options.get("depth")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise InputError(f"draw: depth={depth!r} must be a whole number ≥ 0 (or None)")
        for key in ("fold", "embed_fonts"):
            if key in options and not isinstance(options[key], bool):
                raise InputError(f"draw: {key}={options[key]!r:.60} must be True or False")
        if options.get("title") is not None:
            options["title"] = _text(options["title"], "title")
        for key in ("pitch", "segment_gap", "label_size", "text_size", "letter_size", "margin", "scale"):
            if key in options:
                options[key] = _length(key, options[key])
        return Style(**options)


def _length(key: str, value: Any) -> float:
    """A size option as a finite number of points (or, for ``scale``, pixels per point): positive, or ``≥ 0`` for
    the margin; anything else is an :class:`~ncd.errors.InputError` naming the option."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    lowest = 0.0 if key == "margin" else None
    if number is None or not math.isfinite(number) or (number < 0 if lowest is not None else number <= 0):
        want = "a finite number ≥ 0" if lowest is not None else "a finite number > 0"
        raise InputError(f"draw: {key}={value!r:.60} must be {want}")
    return number


def _text(value: Any, what: str) -> str:
    """``value`` if it is text a drawing can hold (no control characters, lone surrogates or direction overrides,
    within ``ncd.limits``' string limit), else an :class:`~ncd.errors.InputError` naming the option."""
    try:
        return check_text(value, f"draw: {what}")
    except ParseError as error:
        raise InputError(str(error)) from None


def _legend(legend: Any) -> tuple[tuple[str, str], ...]:
    """The ``legend=`` option as ``(symbol, size)`` pairs of text: a dict or pairs, sizes written as text or numbers."""
    items = legend.items() if isinstance(legend, dict) else legend if legend else ()
    try:
        pairs = [tuple(item) for item in items]
    except TypeError:
        raise InputError(f"draw: legend={legend!r:.60} must map symbols to sizes, e.g. {{'n_b': 'n_1/4'}}") from None
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise InputError(f"draw: legend entry {pair!r:.60} must be a (symbol, size) pair")
        key, value = pair
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            value = str(value) if hasattr(value, "free_symbols") else value  # a sympy size reads as its text
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InputError(f"draw: legend size {value!r:.60} for {key!r:.40} must be text or a number")
        out.append((_text(key, "legend symbol"), _text(str(value), "legend size")))
    return tuple(out)
