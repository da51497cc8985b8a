"""The derivative primitive of the gather family (backward diagrams): :class:`GatherTransposeOp` (``gather tᵀ``), the
transpose of :class:`ncd.prims.gather.GatherOp`, a scatter-add at the gathered positions, with its rules; and the cost
of a scatter-add (:func:`cost_scatter_add`, max pooling's backward too).  :mod:`ncd.prims.gather` imports every name
back (it imports this module; this one imports it where it is called).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.ir.axes import Axis, AxisLike, Segment, Type, TypeLike, as_axis
from ncd.ir.diagram import Box, Diagram, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, IMPORT, LOWERING, NOT_TRACED
from ncd.prims.kinds import transpose
from ncd.prims.structure import route

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["GatherTransposeOp", "GatherTranspose", "cost_scatter_add"]


@dataclass(frozen=True)
class GatherTransposeOp(Primitive):
    """``(i, g) ↦ ∂x``: the transpose of :class:`ncd.prims.gather.GatherOp` — each cotangent entry added back at its
    position along ``axis`` (a scatter-add; positions taken twice add up, untaken ones get zero)."""

    axis: Axis
    positions: Segment
    wraps: bool = False  # a negative position counts from the end (the transpose of a gather that ``wraps``)

    op: ClassVar[str] = "gather_transpose"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        from ncd.prims.gather import GatherOp

        GatherOp(self.axis, self.positions)  # the same checks as the gather it transposes

    def signature(self) -> tuple[Type, Type]:
        return Type((self.positions, Segment(self.positions.axes))), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return f"gather {self.axis.name}ᵀ"


def GatherTranspose(axis: AxisLike, positions: TypeLike = "") -> Box:
    """The transpose of ``Gather(axis, positions)``: ``(positions, cotangent) -> axis`` by scatter-add."""
    from ncd.prims.gather import Gather

    prim = Gather(axis if isinstance(axis, (str, Axis)) else as_axis(axis), positions).prim
    return Box.make(GatherTransposeOp(prim.axis, prim.positions))  # type: ignore[attr-defined]


def cost_scatter_add(prim: Primitive, ctx: CostContext) -> list[Tensor]:
    """``zeros.scatter_add(-1, i, g)`` (a gather's transpose, max pooling's backward): no FLOPs counted; autograd keeps
    the positions (a gather routes the gradient back)."""
    i, g = ctx.inputs
    if g.grad:
        ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
    ctx.other(g.numel, g.numel)
    return [ctx.output(0)]


COST.rule(GatherTransposeOp)(cost_scatter_add)


@transpose(GatherTransposeOp, stored=(0,))
def transpose_gather_transpose(prim: GatherTransposeOp, box: Box) -> Diagram:
    """The transpose of a scatter-add at positions is the gather at the same positions."""
    from ncd.prims.gather import GatherOp

    segments = [prim.positions, Segment((prim.axis,))]
    return Seq.of(route(segments, [1, 0]), Box(GatherOp(prim.axis, prim.positions)))


@LOWERING.rule(GatherTransposeOp)
def lower_gather_transpose(prim: GatherTransposeOp, ctx: RuleContext) -> list[str]:
    """``zeros(..., t).scatter_add(-1, i, g)`` with the positions' axes flattened (woven axes in front, broadcast); a
    negative position counts from the end where the prim ``wraps``."""
    t = ctx.int(prim.axis.size, f"axis {prim.axis.name}")
    n = len(prim.positions.axes)
    i, g = ctx.em.fresh("positions"), ctx.em.fresh("cotangent")
    ctx.em.line(f"{i}, {g} = torch.broadcast_tensors({ctx.args[0].var}, {ctx.args[1].var})")
    if prim.wraps:
        ctx.em.line(f"{i} = {i}.where({i} >= 0, {i} + {t})")
    lead, flat = (f"{g}.shape[:-{n}]", f".flatten(-{n})") if n else (f"{g}.shape", ".unsqueeze(-1)")
    zeros = f"torch.zeros(*{lead}, {t}, dtype={g}.dtype, device={g}.device)"
    return [f"{zeros}.scatter_add(-1, {i}{flat}, {g}{flat})"]


IMPORT.unsupported(GatherTransposeOp, NOT_TRACED)
