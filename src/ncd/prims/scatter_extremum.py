"""The largest (smallest) of the entries written at each position: ``torch.scatter_reduce(x, d, i, s, "amax" | "amin",
include_self)``.

``ScatterExtremum("t", "j [t]", "amax")`` is ``t, j [t], j -> t``: ``x`` with each entry at a position of ``i`` replaced
by the largest of the source entries written there and (``include_self``, the default) its own (a graph network's
max-aggregation of messages; woven over every other axis).  It lowers to the one ``scatter_reduce`` call, so it is
bit-equal to the model.  Its backward (:class:`ScatterExtremumGradOp`, ``∂``) is autograd's: the cotangent of each
position split evenly among the entries equal to its result (``x``'s own only when ``include_self``).
Drawn as a labelled box ``t[i] max= s``.

>>> import ncd, torch
>>> d = ncd.Identity.of("t, j [t], j") >> ScatterExtremum("t", "j [t]", "amax")
>>> x, i, s = torch.zeros(4), torch.tensor([1, 1, 3]), torch.tensor([2.0, 5.0, -1.0])
>>> d.to_torch(t=4, j=3)(x, i, s)
tensor([0., 5., 0., 0.])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, Type, TypeLike, parse_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.prims.gather import GatherOp

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["ScatterExtremumOp", "ScatterExtremumGradOp", "ScatterExtremum", "EXTREMA"]

#: the reductions and the symbol drawn
EXTREMA = {"amax": "max=", "amin": "min="}


@dataclass(frozen=True)
class ScatterExtremumOp(Primitive):
    """``x`` (along ``axis``) with the entries at the positions of an index segment ``positions`` reduced (``reduce``:
    ``amax`` or ``amin``) with the source entries written there (on the positions' own axes); ``include_self``: ``x``'s
    own entry takes part."""

    axis: Axis
    positions: Segment
    reduce: str = "amax"
    include_self: bool = True

    op: ClassVar[str] = "scatter_extremum"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        GatherOp(self.axis, self.positions)  # the same checks as a gather at those positions
        if self.reduce not in EXTREMA:
            raise ParseError(f"scatter along axis {self.axis.name}: reduces by {' or '.join(EXTREMA)}, not"
                             f" {self.reduce!r}")
        if not isinstance(self.include_self, bool):
            raise ParseError(f"scatter along axis {self.axis.name}: include_self={self.include_self!r} must be True or"
                             " False")

    def inputs(self) -> tuple[Segment, Segment, Segment]:
        return Segment((self.axis,)), self.positions, Segment(self.positions.axes)

    def signature(self) -> tuple[Type, Type]:
        return Type(self.inputs()), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return f"{self.axis.name}[i] {EXTREMA[self.reduce]} s" + ("" if self.include_self else " (not x)")

    def hint(self) -> str:
        return "reduced"


@dataclass(frozen=True)
class ScatterExtremumGradOp(ScatterExtremumOp):
    """The backward of :class:`ScatterExtremumOp` (same fields): ``(x, i, s, result, cotangent) -> (∂x, ∂s)``."""

    op: ClassVar[str] = "scatter_extremum_grad"
    family: ClassVar[str] = "derivative"

    def signature(self) -> tuple[Type, Type]:
        x, i, s = self.inputs()
        return Type((x, i, s, x, x)), Type((x, s))

    def label(self) -> str:
        return "∂" + super().label()

    def hint(self) -> str:
        return "d_reduced"


def ScatterExtremum(axis: str | Axis, positions: TypeLike = "", reduce: str = "amax", include_self: bool = True) -> Box:
    """The largest (``"amax"``) or smallest (``"amin"``) of a source's entries written along ``axis`` at the positions
    of an index segment (default: one position, ``[axis]``), and ``x``'s own (``include_self``)."""
    from ncd.prims.writes import positions_along

    ax = parse_axis(axis) if isinstance(axis, str) else axis
    return Box.make(ScatterExtremumOp(ax, positions_along(ax, positions), reduce, include_self))


# -- lowering ----------------------------------------------------------------------------------------------------------
def _flat(prim: ScatterExtremumOp, ctx: RuleContext, vars: list[str]) -> list[str]:
    """The inputs with the positions' own axes flattened (``x`` and those of its shape as they are), broadcast over
    the woven axes in front."""
    n = len(prim.positions.axes)
    flat = []
    for k, var in enumerate(vars):
        if k in (1, 2):
            v = ctx.em.fresh("positions" if k == 1 else "source")
            ctx.em.line(f"{v} = {var}.flatten(-{n})" if n else f"{v} = {var}.unsqueeze(-1)")
            flat.append(v)
        else:
            flat.append(var)
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({', '.join(f'{v}.shape[:-1]' for v in flat)})")
    return [f"{v}.expand(*{lead}, {v}.shape[-1])" for v in flat]


@LOWERING.rule(ScatterExtremumOp)
def lower_scatter_extremum(prim: ScatterExtremumOp, ctx: RuleContext) -> list[str]:
    """``x.scatter_reduce(-1, i, s, reduce, include_self=...)`` with the positions' axes flattened."""
    x, i, s = _flat(prim, ctx, [a.var for a in ctx.args])
    return [f"{x}.scatter_reduce(-1, {i}, {s}, {prim.reduce!r}, include_self={prim.include_self})"]


@LOWERING.rule(ScatterExtremumGradOp)
def lower_scatter_extremum_grad(prim: ScatterExtremumGradOp, ctx: RuleContext) -> list[str]:
    """Autograd's formula: each position's cotangent split evenly among the entries equal to its result (``x``'s own
    counted even without ``include_self``, as autograd counts it, then given none)."""
    x, i, s, out, g = _flat(prim, ctx, [a.var for a in ctx.args])
    own, theirs, share = ctx.em.fresh("own"), ctx.em.fresh("theirs"), ctx.em.fresh("share")
    ctx.em.line(f"{own} = {x} == {out}")
    ctx.em.line(f"{theirs} = {s} == {out}.gather(-1, {i})")
    ctx.em.line(f"{share} = {g} / {own}.to({g}.dtype).scatter_add(-1, {i}, {theirs}.to({g}.dtype))")
    d_x = f"{own} * {share}" if prim.include_self else f"({own} * {share}).scatter(-1, {i}, 0.0)"
    n = len(prim.positions.axes)
    shape = ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in prim.positions.axes)
    d_s = f"{theirs} * {share}.gather(-1, {i})"
    return [d_x, f"({d_s}).unflatten(-1, ({shape},))" if n > 1 else d_s if n else f"({d_s}).squeeze(-1)"]


# -- costs and backward ------------------------------------------------------------------------------------------------
@COST.rule(ScatterExtremumOp)
def cost_scatter_extremum(prim: ScatterExtremumOp, ctx: CostContext) -> list[Tensor]:
    """A copy of ``x`` with entries reduced: the FLOP counter counts none; autograd keeps ``x``, the positions, the
    source and the result."""
    x, i, s = ctx.inputs
    out = ctx.new(ctx.out_axes[0], grad=x.grad or s.grad, dtype=x.dtype)
    if x.grad or s.grad:
        ctx.save(x, i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"), s, out)
    ctx.other(s.numel, 4 * s.numel + 3 * x.numel if ctx.grad else sympy.Integer(0))
    return [out]


@COST.rule(ScatterExtremumGradOp)
def cost_scatter_extremum_grad(prim: ScatterExtremumGradOp, ctx: CostContext) -> list[Tensor]:
    """Two new tensors, nothing kept (no second derivatives)."""
    ctx.other(4 * ctx.inputs[2].numel + 3 * ctx.inputs[0].numel, sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


@BACKWARD.rule(ScatterExtremumOp)
def backward_scatter_extremum(prim: ScatterExtremumOp, box: Box, builder: object) -> BoxBackward:
    """Both gradients from the stored ``x``, positions, source and result and the cotangent: one ``∂`` box."""
    grad = ScatterExtremumGradOp(prim.axis, prim.positions, prim.reduce, prim.include_self)
    return BoxBackward((("in", 0), ("in", 1), ("in", 2), ("out", 0)), Box(grad))


BACKWARD.unsupported(ScatterExtremumGradOp, SECOND_ORDER)


# -- drawing -----------------------------------------------------------------------------------------------------------
@DRAWING.rule(ScatterExtremumOp, ScatterExtremumGradOp)
def draw_scatter_extremum(prim: ScatterExtremumOp, ctx: Layout, box: Box) -> Frag:
    """A box labelled ``t[i] max= s``."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), name=prim.op)


# -- import recognition: ncd.trace.indexing_scatter --------------------------------------------------------------------
IMPORT.known(ScatterExtremumOp, aten=("aten.scatter_reduce",), by="ncd.trace.indexing_scatter")
IMPORT.unsupported(ScatterExtremumGradOp, NOT_TRACED)
