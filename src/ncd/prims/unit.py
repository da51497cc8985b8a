"""The unit (cup) ``∪``: no inputs, two equal wires carrying the identity matrix.  A wiring of the linear family
(:mod:`ncd.prims.linear` still answers its names), with every rule of it here: lowering, cost, backward and import.

>>> import ncd
>>> u = ncd.Unit("a:3", "b:3")
>>> u.text(), str(u.dom), str(u.cod)
('∪', '', 'a:3 b:3')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, IMPORT, LOWERING
from ncd.ir.size import evaluate, size_text, sizes_equal
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import Expr, RuleContext

__all__ = ["UnitOp", "Unit"]


@dataclass(frozen=True)
class UnitOp(Primitive):
    """The cup: creates two equal wires carrying the identity matrix (no inputs)."""

    first: Axis
    second: Axis

    op: ClassVar[str] = "unit"
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if not sizes_equal(self.first.size, self.second.size):
            raise SizeError(
                f"unit: the two wires must have equal sizes, not {self.first.name}={size_text(self.first.size)}"
                f" and {self.second.name}={size_text(self.second.size)}"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((Segment((self.first, self.second)),))

    def label(self) -> str:
        return "∪"


def Unit(first: str, second: str) -> Box:
    """The cup: ``Unit("a", "b")`` creates wires ``a b`` holding the identity matrix."""
    a, b = parse_type(first)[0].axes, parse_type(second)[0].axes
    if len(a) != 1 or len(b) != 1:
        raise ParseError("unit takes one axis on each side, e.g. Unit('a', 'b:a')")
    return Box.make(UnitOp(a[0], b[0]))


@LOWERING.rule(UnitOp)
def lower_unit(prim: UnitOp, ctx: RuleContext) -> list[Expr]:
    return [ctx.call("torch.eye", evaluate(prim.first.size, what=f"axis {prim.first.name}"))]


@COST.rule(UnitOp)
def cost_unit(prim: UnitOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.new(ctx.out_axes[0], grad=False)]


@transpose(UnitOp)
def unit_transpose(prim: UnitOp, box: Box) -> Diagram:
    """The cup has no input: its cotangent is discarded."""
    from ncd.prims.structure import DeleteOp, cot

    return Box(DeleteOp(cot(box.cod)))


IMPORT.unsupported(UnitOp, "a constant one-hot wiring of the diagram language; traced models have no such call")
