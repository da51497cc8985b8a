"""Ranking along an axis: the ``k`` largest entries (``torch.topk``) and sorting (``torch.sort``, ``argsort``).

Both give two tensors along a new axis of positions: the entries, and where they came from
(an index segment whose range is the ranked axis), as a mixture-of-experts router picks its
experts::

    TopK("e", 2, "j")  :  e  ->  j:2, j:2 [e]
    Sort("t", "s")     :  t  ->  s:t, s:t [t]

Everything else is woven past them.  The entries are a gather of the input at the positions,
so their transpose is the scatter-add :class:`~ncd.prims.gather_derivative.GatherTransposeOp` at the
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
from ncd.ir.axes import Axis, AxisLike, Dtype, Segment, Type, TypeLike, as_axis, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING
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
    """The ``k`` largest (``largest=False``: smallest) entries of ``axis``, in order, along ``output``, and their positions.

    ``ordered=False`` is ``torch.topk(..., sorted=False)``: the same ``k`` entries in the order torch's kernel leaves
    them (the lowering makes that very call, so the lowered module returns what the model returned).

    ``ties`` says which tied entry a top-1's gradient reaches, as the recorded call gives it: ``"one"`` (``torch.topk``:
    all of it to the one position topk returns), ``"first"`` (``x.max(dim)``: to the position max returns) or
    ``"even"`` (``x.amax(dim)``: shared evenly among the tied entries).  The lowering makes that very call.
    """

    axis: Axis
    output: Axis
    largest: bool = True
    dtype: Dtype = "float"  # what is ranked: floats, or indices below ``range``
    range: Size | None = None
    ordered: bool = True
    ties: str = "one"

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
        if self.ties not in ("one", "first", "even"):
            raise ParseError(f"{where}: ties must be 'one', 'first' or 'even', not {self.ties!r}")
        if self.ties != "one" and (k != 1 or not self.ordered):
            raise ParseError(f"{where}: only a sorted top-1 (a max or min) shares its ties {self.ties!r}")

    def signature(self) -> tuple[Type, Type]:
        return _ranked(self)

    def label(self) -> str:
        return (f"top{size_text(self.output.size)} {self.axis.name}" + ("" if self.largest else " ↑")
                + ("" if self.ordered else " unsorted"))


@dataclass(frozen=True)
class SortOp(Primitive):
    """The entries of ``axis`` sorted (ascending unless ``descending``) along ``output``, and their positions."""

    axis: Axis
    output: Axis
    descending: bool = False
    stable: bool = False
    dtype: Dtype = "float"  # what is sorted: floats, or indices below ``range``
    range: Size | None = None

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
        return _ranked(self)

    def label(self) -> str:
        return f"sort {self.axis.name}" + (" ↓" if self.descending else "")


def _ranked(prim: TopKOp | SortOp) -> tuple[Type, Type]:
    if prim.dtype not in ("float", "index"):
        raise ParseError(f"{prim.op} along {prim.axis.name}: ranks floats or indices, not {prim.dtype}")
    source = Segment((prim.axis,), prim.dtype, prim.range)
    values = Segment((prim.output,), prim.dtype, prim.range)
    return Type((source,)), Type((values, Segment((prim.output,), "index", prim.axis.size)))


def _source(value: AxisLike | TypeLike, what: str) -> Segment:
    """One axis, of floats (``"e"``) or of indices (``"t [9]"``)."""
    if isinstance(value, Axis):
        return Segment((value,))
    if isinstance(value, str) and "[" not in value:
        return Segment((as_axis(value),))
    typ = as_type(value)
    if len(typ) != 1 or len(typ[0]) != 1:
        raise ParseError(f"{what} ranks along one axis, not '{typ}'")
    return typ[0]


def TopK(axis: AxisLike | TypeLike, k: int | Size, output: str, largest: bool = True, ordered: bool = True) -> Box:
    """The ``k`` largest entries of ``axis`` (``"e"``, or indices ``"e [9]"``) along a new axis ``output``, and their
    positions (``torch.topk``; ``ordered=False`` is its ``sorted=False``)."""
    src = _source(axis, "top-k")
    return Box.make(TopKOp(src.axes[0], Axis(output, sympy.sympify(k)), largest, src.dtype, src.range, ordered))


def Sort(axis: AxisLike | TypeLike, output: str, descending: bool = False, stable: bool = False) -> Box:
    """The entries of ``axis`` (``"t"``, or indices ``"t [9]"``) sorted along a new axis ``output`` (of the same size),
    and their positions."""
    src = _source(axis, "sort")
    ax = src.axes[0]
    return Box.make(SortOp(ax, Axis(output, ax.size, ax.role), descending, stable, src.dtype, src.range))


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(TopKOp)
def lower_topk(prim: TopKOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    k = ctx.int(prim.output.size, f"axis {prim.output.name}")
    if prim.ties != "one":  # a top-1 made by x.max(dim) or x.amax(dim): the same call, its gradient at ties
        x, best = ctx.args[0].var, "max" if prim.largest else "min"
        if prim.ties == "even":
            return [f"torch.a{best}({x}, {d}, keepdim=True)", f"torch.arg{best}({x}, {d}, keepdim=True)"]
        name = ctx.em.fresh(best)
        ctx.em.line(f"{name} = torch.{best}({x}, {d}, keepdim=True)")
        return [f"{name}.values", f"{name}.indices"]
    name = ctx.em.fresh("topk")
    options = ("" if prim.largest else ", largest=False") + ("" if prim.ordered else ", sorted=False")
    ctx.em.line(f"{name} = torch.topk({ctx.args[0].var}, {k}, dim={d}{options})")
    return [f"{name}.values", f"{name}.indices"]


@LOWERING.rule(SortOp)
def lower_sort(prim: SortOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    name = ctx.em.fresh("sort")
    options = (", descending=True" if prim.descending else "") + (", stable=True" if prim.stable else "")
    ctx.em.line(f"{name} = torch.sort({ctx.args[0].var}, dim={d}{options})")
    return [f"{name}.values", f"{name}.indices"]


# -- costs and backward -------------------------------------------------------------------------
@COST.rule(TopKOp, SortOp)
def cost_ranking(prim: TopKOp | SortOp, ctx: CostContext) -> list[Tensor]:
    """No FLOPs counted; autograd keeps the positions (the entries' gradient is scattered back there), or for an
    amax (``ties="even"``: ``torch.amax``, whose backward finds the tied entries anew) its input and its result."""
    x = ctx.inputs[0]
    values = ctx.new(ctx.out_axes[0], grad=x.grad, dtype=prim.dtype)
    positions = ctx.new(ctx.out_axes[1], grad=False, dtype="index")
    if x.grad and isinstance(prim, TopKOp) and prim.ties == "even":
        ctx.save(x, values)
    elif x.grad:
        ctx.save(positions)
    ctx.other(ctx.inputs[0].numel, ctx.numel() if x.grad else sympy.Integer(0))
    return [values, positions]


@BACKWARD.rule(TopKOp, SortOp)
def backward_ranking(prim: TopKOp | SortOp, box: Box, builder: object) -> BoxBackward:
    """The entries are the input gathered at the positions: their cotangent is scattered back (``gather ᵀ``), at the
    position the call returned (``torch.topk``, ``x.max(dim)``).  An amax's (``ties="even"``) is shared evenly among
    the tied entries, ``∂x = g · [x = y] / Σ [x = y]`` (the reductions' ``maxᵀ``), as autograd shares it."""
    from ncd.analysis.backward import BoxBackward
    from ncd.ir.diagram import Identity, Par, Seq
    from ncd.prims.gather_derivative import GatherTransposeOp

    if prim.dtype != "float":  # indices ranked: no gradient flows
        return BoxBackward((), Identity(Type(())))
    if isinstance(prim, TopKOp) and prim.ties == "even":
        from ncd.prims.movement import SqueezeOp
        from ncd.prims.reduction import ReductionBackwardOp

        source = Segment((prim.axis,))
        unit = Box(SqueezeOp(prim.output))  # the maximum and its gradient: one number each
        shared = Box(ReductionBackwardOp(source, "amax" if prim.largest else "amin"))
        return BoxBackward((("in", 0), ("out", 0)), Seq.of(Par.of(Identity(Type((source,))), unit, unit), shared))
    positions = Segment((prim.output,), "index", prim.axis.size)
    return BoxBackward((("out", 1),), Box(GatherTransposeOp(prim.axis, positions)))


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(TopKOp, SortOp)
def draw_ranking(prim: TopKOp | SortOp, ctx: Layout, box: Box) -> Frag:
    """A box naming the ranking (``top2 e``, ``sort t ↓``), with the entries and their positions as two tensors."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#eef3e2", name=prim.op)


# -- import recognition: the recognisers of ncd.trace.boxes_ranking (ncd.ir.rules' import cell) ----------

IMPORT.known(SortOp, TopKOp, by="ncd.trace.boxes_ranking")
