"""Tensors that take no input: learned tensors (positions, class tokens) and fixed sinusoidal positions.

A learned tensor is a bold box with no input wires; adding it to the token stream is the
paper's learned positional encoding.

>>> import ncd
>>> pos = ncd.Parameter("~t m", name="P")
>>> str(pos.dom) == "" and str(pos.cod)
't̅ m'
>>> add = (ncd.Identity.of("~t m") @ ncd.Sinusoidal("~t m")) >> ncd.Add()
>>> str(add.cod)
't̅ m'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.prims.opaque import ParameterOp

__all__ = ["SinusoidalOp", "Sinusoidal", "Parameter"]


def _one_segment(type_: TypeLike, what: str) -> Segment:
    t = as_type(type_)
    if len(t) != 1 or not t[0].axes:
        raise ParseError(f"{what} takes one segment with at least one axis, e.g. '~t m', not '{t}'")
    return t[0]


@dataclass(frozen=True)
class SinusoidalOp(Primitive):
    """The fixed sinusoidal position encoding of *Attention Is All You Need* over ``position feature`` axes."""

    segment: Segment
    base: float = 10000.0

    op: ClassVar[str] = "sinusoidal"
    family: ClassVar[str] = "constant"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if len(self.segment) != 2:
            raise ParseError(f"sinusoidal positions need exactly two axes (position, feature), not '{self.segment}'")
        if isinstance(self.base, bool) or not isinstance(self.base, (int, float)) or not 0 < self.base < float("inf"):
            raise ParseError(f"sinusoidal positions need a finite positive base, not {self.base!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((self.segment,))

    def label(self) -> str:
        return "∿"

    def hint(self) -> str:
        return "positions"


def Sinusoidal(type_: TypeLike, base: float = 10000.0) -> Box:
    """Fixed sinusoidal positions ``PE[t, 2i] = sin(t / base^(2i/m))``, ``PE[t, 2i+1] = cos(...)``."""
    return Box.make(SinusoidalOp(_one_segment(type_, "Sinusoidal"), float(base)))


def Parameter(type_: TypeLike, name: str | None = None) -> Box:
    """A learned tensor with no input (bold): learned positions, a class token, a bias to add."""
    seg = _one_segment(type_, "Parameter")
    return Box.make(ParameterOp(seg, name or ""), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.unsupported(SinusoidalOp, "a traced positional table is a constant tensor: it imports as a constant box")
