"""Softmax over one named axis (drawn as a triangle on that axis's wire).

>>> import ncd
>>> s = ncd.Softmax("x")
>>> str((ncd.Identity.of("h y x") >> s).cod)
'h y x'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.ir import weaving
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive

__all__ = ["SoftmaxOp", "Softmax"]


@dataclass(frozen=True)
class SoftmaxOp(Primitive):
    """Softmax normalising along ``axis``; every other axis is broadcast."""

    axis: Axis
    log: bool = False

    op: ClassVar[str] = "softmax"
    weave_policy = weaving.always
    family: ClassVar[str] = "softmax"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        t = Type((Segment((self.axis,)),))
        return t, t

    def label(self) -> str:
        return "log◁" if self.log else "◁"


def Softmax(axis: AxisLike, log: bool = False) -> Box:
    """Softmax along ``axis`` (``log=True`` for log-softmax); broadcast over the other axes."""
    return Box.make(SoftmaxOp(as_axis(axis), bool(log)))
