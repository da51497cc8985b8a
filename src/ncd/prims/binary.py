"""What the entrywise primitives of several tensors share: ``a ÷ b``, ``max(a, b)``, complex ``a ⊙ b``, ``c ? a : b``.

Each is declared on scalar segments (``1, 1 -> 1``) and woven over the axes of its operands (an axis only
some carry is broadcast).  :class:`Entrywise` holds that declaration once — the operands' and the result's
segments, the signature, the woven layouts lowered in place, the label — and :func:`draw_meeting` the drawing
(equal wires of the operands meet at dots under the label, the first operand's on top).  :func:`output_like`
is the cost rules' choice of output: laid out like the first operand when that operand carries every wire of
the output, else a new tensor.  Each family module keeps its own primitive, rules and docs.

>>> from ncd.prims.division import DivideOp
>>> from ncd.prims.selection import WhereOp
>>> issubclass(DivideOp, Entrywise), str(DivideOp().signature()[0]), str(WhereOp().signature()[0])
(True, '(), ()', '[bool], (), ()')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Segment, Type
from ncd.ir.primitive import Kind, Primitive

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.diagram import Box
    from ncd.render.layout import Frag, Layout

__all__ = ["Entrywise", "SCALAR", "output_like", "draw_meeting"]

#: one float entry: the segment of every operand of an entrywise primitive but conditions and complex numbers


@dataclass(frozen=True)
class Entrywise(Primitive):
    """Base of the primitives acting entry by entry on several tensors woven together (subclasses set ``op``,
    ``family`` and ``symbol``; ``operands`` and ``result`` where they are not float entries)."""

    operands: ClassVar[tuple[Segment, ...]] = (SCALAR, SCALAR)
    result: ClassVar[Segment] = SCALAR
    #: the label drawn where the operands meet (``÷``)
    symbol: ClassVar[str] = ""

    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts
    zero_dim_operands = True

    def signature(self) -> tuple[Type, Type]:
        return Type(self.operands), Type((self.result,))

    def label(self) -> str:
        return self.symbol


def output_like(ctx: CostContext) -> Tensor:
    """The output of an entrywise box: like the first operand when it carries every wire of the output (autograd's
    result takes its layout), else a new tensor."""
    first = ctx.inputs[0]
    full = all(x.name in first.names for x in ctx.out_axes[0])
    return ctx.like(0, first) if full else ctx.output(0)


def draw_meeting(prim: Entrywise, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """Like the product ``⊙``: equal wires of the operands meet at dots under the label (the first operand's on top)."""
    from ncd.render.pictograms import meeting
    from ncd.render.typeset import Piece

    return meeting(ctx, dom, cod, (Piece(prim.label()),), prim.op)
