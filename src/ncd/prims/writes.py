"""Writing a tensor's entries into another at positions: ``x[..., i[j]] = s[j]`` (``torch.scatter`` with a source,
``index_put`` of rows each at its own positions: Informer's ``context[arange(b)[:, None], top_u, :] = attn_output``).

``ScatterWrite("t", "j [t]")`` is ``t, j [t], j -> t``: ``x`` with the entries of ``t`` at the positions ``i`` set to
the entries of ``s`` (woven over every other axis; where two positions coincide, one of the written entries, as
torch's).  It is linear in ``x`` and ``s`` together: the cotangent of ``x`` is the output's with the written entries
zeroed (:class:`~ncd.prims.gather.ScatterOp`), that of ``s`` the output's read at the positions
(:class:`~ncd.prims.gather.GatherOp`).  Drawn as a labelled box (family ``opaque``, the importer's).

``ScatterWrite("t", "j [t]", reduce="sum")`` adds the entries there instead (``torch.scatter_add``,
``scatter_reduce(..., "sum")``): ``x`` passes its cotangent whole, the source reads it at the positions.

>>> import ncd
>>> from ncd.prims.writes import ScatterWrite
>>> str((ncd.Identity.of("b t m, b j [t], b j m") >> ScatterWrite("t", "j [t]")).cod)
'b t m'
>>> import torch
>>> d = ncd.Identity.of("t, j [t], j") >> ScatterWrite("t", "j [t]", reduce="sum")
>>> x, i, s = torch.zeros(4), torch.tensor([1, 1, 3]), torch.ones(3)
>>> d.to_torch(t=4, j=3)(x, i, s)
tensor([0., 2., 0., 1.])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Dtype, Segment, Type, TypeLike, as_type, parse_axis
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size
from ncd.prims.gather import GatherOp, ScatterOp
from ncd.prims.structure import route

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ScatterWriteOp", "ScatterWrite"]


@dataclass(frozen=True)
class ScatterWriteOp(Primitive):
    """``x`` with the entries of ``axis`` at the positions of an index segment ``positions`` set to the entries of a
    source on the positions' own axes (``torch.scatter(x, dim, i, s)``)."""

    axis: Axis
    positions: Segment
    #: ``""``: the entries are set; ``"sum"``: added (``scatter_add``)
    reduce: str = ""
    #: what ``x`` and the source hold: numbers, or integers (``"index"``) of ranges ``range`` (``x``) and
    #: ``source_range`` (a count scattered into zeros: glm5_next's ``zeros(int32).scatter_add_(-1, i, valid.int())``)
    dtype: Dtype = "float"
    range: Size | None = None
    source_range: Size | None = None

    op: ClassVar[str] = "scatter_write"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"  # linear in (x, s) together: its backward is the rule below

    def __post_init__(self) -> None:
        GatherOp(self.axis, self.positions)  # the same checks as a gather at those positions
        if self.reduce not in REDUCTIONS:
            raise ParseError(f"scatter along axis {self.axis.name}: unknown reduction {self.reduce!r}; known:"
                             f" {', '.join(repr(r) for r in REDUCTIONS)}")
        for name in ("range", "source_range"):
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, sympy.Integer(getattr(self, name)))
        if self.dtype not in ("float", "index"):
            raise ParseError(f"scatter along axis {self.axis.name}: writes numbers or integers, not {self.dtype} values")
        if (self.dtype == "index") != (self.source_range is not None):
            raise ParseError(f"scatter along axis {self.axis.name}: a source range is for integers, and theirs alone")
        Segment((), self.dtype, self.range)  # a range exactly for integers
        Segment((), self.dtype, self.source_range)

    def fields(self) -> dict[str, Any]:
        """The fields, ``reduce`` and the integers' ``dtype`` and ranges only when set (the JSON of every plain write
        is unchanged)."""
        fields = Primitive.fields(self)
        for name in ("reduce", "range", "source_range"):
            if not fields[name]:
                del fields[name]
        if self.dtype == "float":
            del fields["dtype"]
        return fields

    def result_range(self) -> Size | None:
        """The range of the written integers: ``x``'s or the source's (set), or ``x``'s plus every position's source
        entry at its largest (added: ``Π J`` entries may land on one)."""
        if self.range is None or self.source_range is None:
            return None
        if not self.reduce:
            return sympy.Max(self.range, self.source_range)
        return self.range + (self.source_range - 1) * sympy.Mul(*(a.size for a in self.positions.axes))

    def signature(self) -> tuple[Type, Type]:
        x = Segment((self.axis,), self.dtype, self.range)
        source = Segment(self.positions.axes, self.dtype, self.source_range)
        return Type((x, self.positions, source)), Type((Segment((self.axis,), self.dtype, self.result_range()),))

    def label(self) -> str:
        return f"{self.axis.name}[i] {REDUCTIONS[self.reduce]} s"


#: how the written entries meet ``x``'s and the symbol drawn (``""``: set)
REDUCTIONS = {"": "←", "sum": "+="}


def ScatterWrite(axis: str | Axis, positions: TypeLike = "", reduce: str = "") -> Box:
    """Write a source's entries along ``axis`` at the positions of an index segment (default: one position,
    ``[axis]``): ``"t, j [t], j -> t"`` (``reduce``: add them, ``"sum"``, or reduce them with ``x``'s there)."""
    ax = parse_axis(axis) if isinstance(axis, str) else axis
    if positions:
        typ = as_type(positions)
        pos = typ[0] if len(typ) == 1 else Segment(())
        pos = Segment(pos.axes, "index", pos.range if pos.range is not None else ax.size)
    else:
        pos = Segment((), "index", ax.size)
    return Box.make(ScatterWriteOp(ax, pos, reduce))


IMPORT.known(ScatterWriteOp, by="ncd.trace.indexing")


@LOWERING.rule(ScatterWriteOp)
def lower_scatter_write(prim: ScatterWriteOp, ctx: RuleContext) -> list[str]:
    """``x.scatter(-1, i, s)`` with the positions' (and the source's) own axes flattened, all three broadcast over the
    woven axes in front."""
    x, positions, source = ctx.args[0].var, ctx.args[1].var, ctx.args[2].var
    n = len(prim.positions.axes)
    i, s = ctx.em.fresh("positions"), ctx.em.fresh("source")
    ctx.em.line(f"{i} = {positions}.flatten(-{n})" if n else f"{i} = {positions}.unsqueeze(-1)")
    ctx.em.line(f"{s} = {source}.flatten(-{n})" if n else f"{s} = {source}.unsqueeze(-1)")
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({x}.shape[:-1], {i}.shape[:-1], {s}.shape[:-1])")
    call = "scatter_add" if prim.reduce == "sum" else "scatter"
    return [f"{x}.expand(*{lead}, {x}.shape[-1]).{call}(-1, {i}.expand(*{lead}, {i}.shape[-1]),"
            f" {s}.expand(*{lead}, {s}.shape[-1]))"]


@COST.rule(ScatterWriteOp)
def cost_scatter_write(prim: ScatterWriteOp, ctx: CostContext) -> list[Tensor]:
    """A copy of ``x`` with entries written: no FLOPs counted; for the backward (zeros scattered into the cotangent,
    the cotangent gathered) autograd keeps the positions."""
    x, i, s = ctx.inputs
    if x.grad or s.grad:
        ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
    return [ctx.new(ctx.out_axes[0], grad=x.grad or s.grad, dtype=x.dtype)]


@BACKWARD.rule(ScatterWriteOp)
def backward_scatter_write(prim: ScatterWriteOp, box: Box, builder: Builder) -> BoxBackward:
    """``(i, g) ↦ (g with zeros at i, g read at i)``: the written entries' cotangent goes to the source; of a sum,
    ``(g, g read at i)``; of integers, nothing."""
    if prim.dtype != "float":  # integers (a count): no gradient flows in or out
        return BoxBackward((), Identity(Type(())))
    segments = [prim.positions, Segment((prim.axis,))]
    if prim.reduce == "sum":
        return BoxBackward((("in", 1),), Seq.of(route(segments, [1, 1, 0]), Par.of(
            Identity(Type((segments[1],))), Box(GatherOp(prim.axis, prim.positions, wraps=False)))))
    spread = route(segments, [1, 0, 1, 0])
    return BoxBackward((("in", 1),), Seq.of(spread, Par.of(Box(ScatterOp(prim.axis, prim.positions, 0.0)),
                                                           Box(GatherOp(prim.axis, prim.positions, wraps=False)))))


