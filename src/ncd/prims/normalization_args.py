"""The arguments every normalisation takes: the axes it normalises over (:func:`axes_segment`), its ``eps``
(:func:`_check_eps`), and the options its lowering writes where they differ from torch's defaults (:func:`_options`).
Layer and RMS normalisation (:mod:`ncd.prims.normalization`) and batch normalisation (:mod:`ncd.prims.batchnorm`) share
them.
"""

from __future__ import annotations

from ncd.errors import ParseError
from ncd.ir.axes import Segment, parse_type

__all__ = ["axes_segment"]


def axes_segment(axes: str | Segment, what: str) -> Segment:
    """One segment of distinct float axes, read from text such as ``"c x y"``."""
    if isinstance(axes, Segment):
        seg = axes
    else:
        if not isinstance(axes, str):
            raise ParseError(f"{what}: axes must be text such as 'm' or 'c x y', not {type(axes).__name__} {axes!r}")
        typ = parse_type(axes)
        if len(typ) != 1:
            raise ParseError(f"{what}: axes {axes!r} must be one segment (no commas)")
        seg = typ[0]
    if not seg.axes:
        raise ParseError(f"{what}: needs at least one axis to normalise over")
    if seg.dtype != "float":
        raise ParseError(f"{what}: normalises float tensors, not '{seg}'")
    if len(set(seg.names)) != len(seg.names):
        raise ParseError(f"{what}: an axis occurs twice in '{seg}'")
    return seg


def _check_eps(eps: float, what: str) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ParseError(f"{what}: eps must be a finite non-negative number, not {eps!r}")


def _options(**pairs: tuple[object, object]) -> str:
    """``, key=value`` for every option that differs from its default."""
    return "".join(f", {k}={v!r}" for k, (v, default) in pairs.items() if v != default)
