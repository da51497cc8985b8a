"""What one rank holds: a diagram, primitive, type or axis with the placed axes divided by their mesh sizes.

>>> import ncd
>>> str(resize(ncd.parse_type("t h:16 k"), {"h": 8}))
't h:2 k'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ncd.ir.axes import Axis
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.interpreter import Rebuild
from ncd.ir.primitive import Primitive, map_axes, map_fields, map_values

__all__ = ["resize"]


def resize(value: Any, divisors: Mapping[str, int]) -> Any:
    """``value`` (a diagram, primitive, type, axis) with the named axes divided: what one rank holds."""
    if not divisors:
        return value

    def divided(axis: Axis) -> Axis:
        if axis.name in divisors and divisors[axis.name] > 1:
            return axis.resized(axis.size / divisors[axis.name])
        return axis

    def one(value: Any) -> Any:
        if isinstance(value, Primitive):
            return map_fields(value, one)
        if isinstance(value, Diagram):
            return _Resize(divisors).fold(value)
        return map_axes(value, divided)

    return map_values(value, one)


class _Resize(Rebuild):
    """A diagram with the named axes divided (:func:`resize` of every type, axis and primitive in it)."""

    def __init__(self, divisors: Mapping[str, int]) -> None:
        self.divisors = divisors

    def identity(self, node: Identity) -> Diagram:
        return Identity(resize(node.type, self.divisors), node.source)

    def box(self, box: Box) -> Diagram:
        return Box(resize(box.prim, self.divisors), box.label, box.source)

    def seq(self, node: Seq) -> Diagram:
        return Seq(tuple(self.part(node, k, p) for k, p in enumerate(node.parts)))

    def par(self, node: Par) -> Diagram:
        return Par(tuple(self.part(node, k, p) for k, p in enumerate(node.parts)))

    def weave(self, node: Weave) -> Diagram:
        return Weave(self.part(node, 0, node.inner), resize(node.axis, self.divisors), node.dom_pos, node.cod_pos)
