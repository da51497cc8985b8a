"""Counting: the sum of positions or flags along one axis (``mask.sum(-1)``: how many entries are True).

``Count("t [bool]")`` reads flags over ``t`` and gives how many are True, a position ``[t+1]``; ``Count("t [5]")``
sums positions below 5 over ``t``, a position below ``4·t + 1``.  Woven over every other axis.  It counts integers,
so no gradient flows through it (and it costs no FLOPs: ``torch.sum`` of integers is not a floating-point
operation).  The importer reads ``sum`` of a live integer or boolean tensor over one axis as it (XLM's sequence
lengths, ``(input_ids != pad).sum(1)``).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd, torch
>>> from ncd.prims.counting import Count
>>> d = ncd.Identity.of("b t [bool]") >> Count("t [bool]")
>>> str(d.cod)
'b [t + 1]'
>>> m = torch.rand(2, 5) > 0.5
>>> torch.equal(d.to_torch(b=2, t=5)(m), m.sum(-1))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING
from ncd.prims.gather import backward_index_computation

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["CountOp", "Count"]


@dataclass(frozen=True)
class CountOp(Primitive):
    """The sum over the one axis of ``source`` (flags, or positions with a range): a position below the most it can
    reach plus one."""

    source: Segment

    op: ClassVar[str] = "count"
    family: ClassVar[str] = "counting"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if len(self.source.axes) != 1 or self.source.dtype not in ("index", "bool"):
            raise ParseError(f"count: sums flags or positions over one axis (e.g. 't [bool]', 't [5]'), not"
                             f" '{self.source}'")

    @property
    def range(self) -> sympy.Expr:
        """One more than the largest sum: ``n·(r−1) + 1`` for ``n`` entries below ``r`` (flags: ``r = 2``)."""
        r = sympy.Integer(2) if self.source.dtype == "bool" else self.source.range
        assert r is not None
        return self.source.axes[0].size * (r - 1) + 1

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((Segment((), "index", self.range),))

    def label(self) -> str:
        return f"# {self.source.axes[0].name}"


def Count(source: TypeLike) -> Box:
    """How many flags are True along the one axis of ``source`` (``"t [bool]"``), or the sum of its positions
    (``"t [5]"``): ``x.sum(-1)`` of integers."""
    typ = as_type(source)
    if len(typ) != 1:
        raise ParseError(f"count: give one segment, e.g. 't [bool]', not {source!r}")
    return Box.make(CountOp(typ[0]))


@LOWERING.rule(CountOp)
def lower_count(prim: CountOp, ctx: RuleContext) -> list[str]:
    return [f"{ctx.args[0].var}.sum(-1)"]


@COST.rule(CountOp)
def cost_count(prim: CountOp, ctx: CostContext) -> list[Tensor]:
    """A sum of integers: no FLOPs counted, nothing kept (no gradient flows through integers)."""
    return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]


BACKWARD.rule(CountOp)(backward_index_computation)


@DRAWING.rule(CountOp)
def draw_count(prim: CountOp, ctx: Layout, box: Box) -> Frag:
    """A tag ``# t`` on the counted wire (it ends there)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#fdf3d0", name=prim.op, min_w=16.0)


IMPORT.known(CountOp, aten=("aten.sum",), by="ncd.trace.boxes_integer")
