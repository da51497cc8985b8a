"""Ranking along an axis: the ``k`` largest entries (``torch.topk``) and sorting (``torch.sort``, ``argsort``).

Both give two tensors along a new axis of positions: the entries, and where they came from
(an index segment whose range is the ranked axis), as a mixture-of-experts router picks its
experts::

    TopK("e", 2, "j")  :  e  ->  j:2, j:2 [e]
    Sort("t", "s")     :  t  ->  s:t, s:t [t]

Everything else is woven past them.  The entries are a gather of the input at the positions,
so their transpose is the scatter-add :class:`~ncd.prims.derivative.GatherTransposeOp` at the
positions the forward pass returned (no gradient flows into positions).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> str((ncd.Identity.of("b t e") >> ncd.TopK("e", 2, "j")).cod)
'b t j:2, b t j:2 [e]'
>>> str(ncd.Sort("t", "s", descending=True).cod)
's:t, s:t [t]'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.size import Size, size_text

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["TopKOp", "SortOp", "TopK", "Sort"]


@dataclass(frozen=True)
class TopKOp(Primitive):
    """The ``k`` largest (``largest=False``: smallest) entries of ``axis``, in order, along ``output``, and their positions."""

    axis: Axis
    output: Axis
    largest: bool = True

    op: ClassVar[str] = "topk"
    family: ClassVar[str] = "ranking"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_weave

    def __post_init__(self) -> None:
        where = f"{self.op} along {self.axis.name}"
        if self.output.name == self.axis.name:
            raise ParseError(f"{where}: the positions need an axis of their own, not {self.axis.name} again")
        k, n = self.output.size, self.axis.size
        if not (k.free_symbols or n.free_symbols) and not 1 <= k <= n:
            raise SizeError(f"{where}: k={size_text(k)} must be between 1 and the size {size_text(n)} of {self.axis.name}")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,)),)), Type((Segment((self.output,)), Segment((self.output,), "index", self.axis.size)))

    def label(self) -> str:
        return f"top{size_text(self.output.size)} {self.axis.name}" + ("" if self.largest else " ↑")


@dataclass(frozen=True)
class SortOp(Primitive):
    """The entries of ``axis`` sorted (ascending unless ``descending``) along ``output``, and their positions."""

    axis: Axis
    output: Axis
    descending: bool = False
    stable: bool = False

    op: ClassVar[str] = "sort"
    family: ClassVar[str] = "ranking"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_weave

    def __post_init__(self) -> None:
        if self.output.name == self.axis.name:
            raise ParseError(f"sort along {self.axis.name}: the positions need an axis of their own, not"
                             f" {self.axis.name} again")
        if not (self.output.size.free_symbols or self.axis.size.free_symbols) and self.output.size != self.axis.size:
            raise SizeError(f"sort along {self.axis.name} of size {size_text(self.axis.size)}: the output axis"
                            f" {self.output.name} has size {size_text(self.output.size)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,)),)), Type((Segment((self.output,)), Segment((self.output,), "index", self.axis.size)))

    def label(self) -> str:
        return f"sort {self.axis.name}" + (" ↓" if self.descending else "")


def _axis(value: AxisLike) -> Axis:
    return as_axis(value)


def TopK(axis: AxisLike, k: int | Size, output: str, largest: bool = True) -> Box:
    """The ``k`` largest entries of ``axis`` along a new axis ``output``, and their positions (``torch.topk``)."""
    ax = _axis(axis)
    return Box.make(TopKOp(ax, Axis(output, sympy.sympify(k)), largest))


def Sort(axis: AxisLike, output: str, descending: bool = False, stable: bool = False) -> Box:
    """The entries of ``axis`` sorted along a new axis ``output`` (of the same size), and their positions."""
    ax = _axis(axis)
    return Box.make(SortOp(ax, Axis(output, ax.size, ax.role), descending, stable))


# -- lowering -----------------------------------------------------------------------------------
def lower_topk(prim: TopKOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    k = ctx.int(prim.output.size, f"axis {prim.output.name}")
    name = ctx.em.fresh("topk")
    options = "" if prim.largest else ", largest=False"
    ctx.em.line(f"{name} = torch.topk({ctx.args[0].var}, {k}, dim={d}{options})")
    return [f"{name}.values", f"{name}.indices"]


def lower_sort(prim: SortOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    name = ctx.em.fresh("sort")
    options = (", descending=True" if prim.descending else "") + (", stable=True" if prim.stable else "")
    ctx.em.line(f"{name} = torch.sort({ctx.args[0].var}, dim={d}{options})")
    return [f"{name}.values", f"{name}.indices"]


# -- costs and backward -------------------------------------------------------------------------
def cost_ranking(prim: TopKOp | SortOp, ctx: CostContext) -> list[Tensor]:
    """No FLOPs counted; autograd keeps the positions (the entries' gradient is scattered back there)."""
    x = ctx.inputs[0]
    values = ctx.new(ctx.out_axes[0], grad=x.grad)
    positions = ctx.new(ctx.out_axes[1], grad=False, dtype="index")
    if x.grad:
        ctx.save(positions)
    ctx.other(ctx.inputs[0].numel, ctx.numel() if x.grad else sympy.Integer(0))
    return [values, positions]


def backward_ranking(prim: TopKOp | SortOp, box: Box, builder: object) -> BoxBackward:
    """The entries are the input gathered at the positions: their cotangent is scattered back (``gather ᵀ``)."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.derivative import GatherTransposeOp

    positions = Segment((prim.output,), "index", prim.axis.size)
    return BoxBackward((("out", 1),), Box(GatherTransposeOp(prim.axis, positions)))


# -- drawing ------------------------------------------------------------------------------------
def draw_ranking(prim: TopKOp | SortOp, ctx: Layout, box: Box) -> Frag:
    """A box naming the ranking (``top2 e``, ``sort t ↓``), with the entries and their positions as two tensors."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#eef3e2", name=prim.op)


def _register() -> None:
    from ncd.prims._rules import register_family

    register_family(TopKOp, lower_topk, cost_ranking, backward_ranking, draw_ranking)
    register_family(SortOp, lower_sort, cost_ranking, backward_ranking, draw_ranking)


_register()
