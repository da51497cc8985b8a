"""Selection entry by entry: ``where(c, a, b)`` — ``a`` where the boolean ``c`` holds, else ``b`` — and the logic
of boolean masks (``~m``, ``m & n``, ``m | n``, ``m ^ n``).

``Where()`` has scalar domains ``[bool], 1, 1 -> 1``: composed after a mask and two tensors it is
woven over their axes, and an axis only some of them carry is broadcast (a padding mask over the
keys, a fill value that is one number).  ``x.masked_fill(mask, v)`` is ``where(mask, v, x)``.
Its backward routes the gradient to the branch each entry came from (``where`` again, with zeros).
``Logic("and")`` combines boolean masks entry by entry (``Logic("not")`` takes one); no gradient flows
through booleans.

One module holds every rule of the family: declaration, lowering, costs, backward, drawing and
import (recognised by :mod:`ncd.trace.boxes_selection`).

>>> import ncd
>>> str((ncd.Identity.of("b t [bool], b t m, m") >> ncd.Where()).cod)
'b t m'
>>> str((ncd.Identity.of("b t [bool], t [bool]") >> ncd.Logic("and")).cod)
'b t [bool]'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment, Type
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING, BoxBackward
from ncd.prims.binary import Entrywise, draw_meeting

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["WhereOp", "Where", "LogicOp", "Logic", "LOGIC"]

CONDITION = Segment((), "bool")


@dataclass(frozen=True)
class WhereOp(Entrywise):
    """``c ? a : b`` entry by entry: ``[bool], 1, 1 -> 1``, woven over the axes of all three."""

    op: ClassVar[str] = "where"
    family: ClassVar[str] = "selection"
    operands: ClassVar[tuple[Segment, ...]] = (CONDITION, SCALAR, SCALAR)
    symbol: ClassVar[str] = "?:"


def Where() -> Box:
    """``torch.where(c, a, b)``: ``a`` where the boolean ``c`` holds, else ``b`` (broadcast over the axes some lack)."""
    return Box.make(WhereOp())


@LOWERING.rule(WhereOp)
def lower_where(prim: WhereOp, ctx: RuleContext) -> list[str]:
    c, a, b = ctx.args
    return [f"torch.where({c.var}, {a.var}, {b.var})"]


@COST.rule(WhereOp)
def cost_where(prim: WhereOp, ctx: CostContext) -> list[Tensor]:
    """One selection per entry; autograd keeps the condition (to route the gradient back)."""
    c, a, b = ctx.inputs
    n = ctx.numel()
    if a.grad or b.grad:
        ctx.save(c)
    ctx.other(n, n * (int(a.grad) + int(b.grad)))
    return [ctx.output(0)]


@BACKWARD.rule(WhereOp)
def backward_where(prim: WhereOp, box: Box, builder: object) -> BoxBackward:
    """``∂a = where(c, g, 0)`` and ``∂b = where(c, 0, g)``."""
    from ncd.prims.structure import ZerosOp, route

    zero = Box(ZerosOp(SCALAR_TYPE))
    fan = route([CONDITION, SCALAR], [0, 1, 0, 1])  # (c, g) -> (c, g, c, g)
    select = Box(WhereOp())
    both = Seq.of(fan, Par.of(Identity(Type((CONDITION, SCALAR))), zero, Identity(Type((CONDITION,))), zero, Identity(SCALAR_TYPE)),
                  Par.of(select, select))
    return BoxBackward((("in", 0),), both)


# equal wires of the three tensors meet at dots under ``?:`` (the mask's wires on top)
SCALAR_DRAWING.rule(WhereOp)(draw_meeting)


# -- the logic of boolean masks ------------------------------------------------------------------------
#: operator -> (arity, torch expression, glyph)
LOGIC: dict[str, tuple[int, str, str]] = {"not": (1, "~{0}", "¬"), "and": (2, "{0} & {1}", "∧"), "or": (2, "{0} | {1}", "∨"),
                                          "xor": (2, "{0} ^ {1}", "⊻")}
Operator = Literal["not", "and", "or", "xor"]


@dataclass(frozen=True)
class LogicOp(Primitive):
    """``¬m``, ``m ∧ n``, ``m ∨ n``, ``m ⊻ n`` on booleans: ``[bool]… -> [bool]``, woven over the axes of the operands."""

    operator: Operator = "and"

    op: ClassVar[str] = "logic"
    family: ClassVar[str] = "selection"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts

    def __post_init__(self) -> None:
        if self.operator not in LOGIC:
            raise ParseError(f"logic: unknown operator {self.operator!r} (not, and, or, xor)")

    def signature(self) -> tuple[Type, Type]:
        return Type((CONDITION,) * LOGIC[self.operator][0]), Type((CONDITION,))

    def label(self) -> str:
        return LOGIC[self.operator][2]


def Logic(operator: Operator) -> Box:
    """Boolean masks combined entry by entry: ``"not"`` (one mask), ``"and"``, ``"or"``, ``"xor"`` (two)."""
    return Box.make(LogicOp(operator))


@LOWERING.rule(LogicOp)
def lower_logic(prim: LogicOp, ctx: RuleContext) -> list[str]:
    return ["(" + LOGIC[prim.operator][1].format(*(a.var for a in ctx.args)) + ")"]


@COST.rule(LogicOp)
def cost_logic(prim: LogicOp, ctx: CostContext) -> list[Tensor]:
    """One operation per entry on booleans (no gradient, nothing kept)."""
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.output(0, dtype="bool")]


@BACKWARD.rule(LogicOp)
def backward_logic(prim: LogicOp, box: Box, builder: object) -> BoxBackward:
    """Booleans carry no cotangent: nothing flows back."""
    from ncd.analysis.backward import cot

    return BoxBackward((), Identity(cot(box.cod)))


@SCALAR_DRAWING.rule(LogicOp)
def draw_logic(prim: LogicOp, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``¬`` above the wires (as an elementwise function); two masks meet at dots under ``∧``, ``∨`` or ``⊻``."""
    from ncd.render.pictograms import glyph_through, meeting
    from ncd.render.typeset import Piece

    if prim.operator == "not":
        return glyph_through(ctx, dom, (Piece("¬"),), name="logic")
    return meeting(ctx, dom, cod, (Piece(prim.label()),), prim.op)


IMPORT.known(WhereOp, LogicOp, by="ncd.trace.boxes_selection")
