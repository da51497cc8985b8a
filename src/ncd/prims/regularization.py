"""Regularisation: dropout, a scalar map woven over every wire (identity in evaluation).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.Dropout(0.1)).cod)
'b t m'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT

__all__ = ["DropoutOp", "Dropout"]

SCALAR = Type((Segment(()),))


@dataclass(frozen=True)
class DropoutOp(Primitive):
    """Zero each entry with probability ``p`` in training and scale the rest by ``1/(1-p)``."""

    p: float = 0.5

    op: ClassVar[str] = "dropout"
    weave_policy = weaving.always
    family: ClassVar[str] = "regularization"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 <= self.p <= 1:
            raise ParseError(f"dropout: the probability p must lie in [0, 1], not {self.p!r}")

    def signature(self) -> tuple[Type, Type]:
        return SCALAR, SCALAR

    def label(self) -> str:
        return f"Drop({self.p:g})"

    def hint(self) -> str:
        return "dropout"


def Dropout(p: float = 0.5, name: str | None = None) -> Box:
    """Dropout with probability ``p``, woven over every axis; the identity when the module is in eval mode."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ParseError(f"dropout: the probability p must be a number in [0, 1], not {p!r}")
    return Box.make(DropoutOp(float(p)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.unsupported(DropoutOp, "traced in evaluation mode dropout is the identity; in training it stays an opaque call")
