"""The axis text of movement boxes read into axes (``"k h -> m"``, ``"t:8"``), and the size checks they share.

Used by the constructors and primitives of :mod:`ncd.prims.movement`, :mod:`ncd.prims.concat` and
:mod:`ncd.prims.slicing`.
"""

from __future__ import annotations

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, parse_type
from ncd.ir.size import Size, _laurent_polynomial, simplified, size, size_text, sizes_equal, whole


def _product(axes: tuple[Axis, ...]) -> Size:
    total: Size = sympy.Integer(1)
    for a in axes:
        total = total * a.size
    return total


def _contradicts(a: Size, b: Size) -> bool:
    """Provably different (checked again once sizes are bound)."""
    x, y = whole(a), whole(b)
    if x is not None and y is not None:
        return x != y  # (whole numbers: as Python ints)
    if sizes_equal(a, b):
        return False
    diff = a - b
    if diff.free_symbols and _laurent_polynomial(diff):
        return False  # distinct monomials, one holding a symbol (``t + 32`` against 40): not a constant, no algebra
    diff = simplified(diff)
    return not diff.free_symbols and diff != 0


def _sizes(axes: tuple[Axis, ...]) -> str:
    return " ".join(f"{a.name}={size_text(a.size)}" for a in axes)


def _default_sized(axis: Axis) -> bool:
    """Written without a size (``"m"``, not ``"m:512"``): its size is its own name."""
    try:
        return not axis.parts and sizes_equal(axis.size, size(axis.name))
    except Exception:
        return False


def _one_axis(text: str, what: str) -> Axis:
    seg = _segment(text, what)
    if len(seg) != 1:
        raise ParseError(f"{what}: {text!r} must be a single axis")
    return seg.axes[0]


def _segment(text: str, what: str) -> Segment:
    if not isinstance(text, str):
        raise ParseError(f"{what}: expected axis text, not {type(text).__name__} {text!r}")
    typ = parse_type(text)
    if len(typ) != 1:
        raise ParseError(f"{what}: {text!r} must be one segment (no commas)")
    if typ[0].dtype != "float":
        raise ParseError(f"{what}: {text!r} must name axes only")
    return typ[0]


def _distinct(seg: Segment, what: str) -> None:
    if len(set(seg.names)) != len(seg.names):
        raise ParseError(f"{what}: an axis occurs twice in '{seg}'")
