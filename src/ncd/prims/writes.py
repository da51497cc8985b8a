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

``Put(...)`` writes a region instead (``x[:, 1, 2:5] = v``, ``torch.slice_scatter``/``select_scatter``, one box where
the importer drew slices of ``x`` around the region joined by ``cat``): per axis of ``x`` the whole axis, one entry
(the source has no such axis) or a range ``start:stop:step`` (the source's axis).  It is linear in ``x`` and the
source together: the cotangent of ``x`` is the output's with the region zeroed (``Put`` with ``fill=0``), the
source's the output's region.

>>> d = ncd.Identity.of("b t:4 m:3, b m:2") >> Put("b, t:4 1, m:3 1:3")
>>> str(d.cod), next(d.boxes()).prim.label()
('b t:4 m:3', '[:, 1, 1:3] ←')
>>> d.to_torch(b=1)(torch.zeros(1, 4, 3), torch.ones(1, 2))
tensor([[[0., 0., 0.],
         [0., 1., 1.],
         [0., 0., 0.],
         [0., 0., 0.]]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Dtype, Segment, Type, TypeLike, as_type, parse_axis
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, as_whole, size, size_ge, size_text
from ncd.prims.gather import GatherOp, ScatterOp
from ncd.prims.kinds import transpose
from ncd.prims.structure import route

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ScatterWriteOp", "ScatterWrite", "PutOp", "Put"]


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
    return Box.make(ScatterWriteOp(ax, positions_along(ax, positions), reduce))


def positions_along(axis: Axis, positions: TypeLike = "") -> Segment:
    """The index segment of positions along ``axis`` a scatter reads (``"j [t]"``; default: one position, ``[axis]``;
    no range given: ``axis``'s size)."""
    if not positions:
        return Segment((), "index", axis.size)
    typ = as_type(positions)
    pos = typ[0] if len(typ) == 1 else Segment(())
    return Segment(pos.axes, "index", pos.range if pos.range is not None else axis.size)


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




@dataclass(frozen=True)
class PutOp(Primitive):
    """``x`` (axes ``axes``) with a region replaced by a source: along axis ``k`` the entries ``starts[k]``,
    ``starts[k] + steps[k]``, ... of the source's axis ``outputs[k]`` (the whole axis when that is ``axes[k]`` itself,
    from 0 by 1), or the one entry ``starts[k]`` when ``outputs[k]`` is None (the source has no such axis).  The
    source's axes are the outputs that are not None, in ``x``'s order.  ``fill`` (0 only): the region zeroed, no source
    (the cotangent of ``x``)."""

    axes: tuple[Axis, ...]
    starts: tuple[Size, ...]
    steps: tuple[Size, ...]
    outputs: tuple[Axis | None, ...]
    fill: float | None = None
    dtype: Dtype = "float"
    range: Size | None = None

    op: ClassVar[str] = "put"
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "linear"  # in (x, source) together: its transpose is below

    def __post_init__(self) -> None:
        n = len(self.axes)
        for name in ("starts", "steps"):
            object.__setattr__(self, name, tuple(size(v) for v in getattr(self, name)))
        if not (len(self.starts) == len(self.steps) == len(self.outputs) == n) or not n:
            raise ParseError(f"put: one start, step and output per axis of x ({n}), not {len(self.starts)},"
                             f" {len(self.steps)} and {len(self.outputs)}")
        if self.fill not in (None, 0.0):
            raise ParseError(f"put: fills its region with 0 or writes a source, not {self.fill!r}")
        if self.fill is not None and self.dtype != "float":
            raise ParseError("put: a zeroed region is a cotangent's, of numbers")
        Segment((), self.dtype, self.range)  # a range exactly for integers
        for axis, start, step, out in zip(self.axes, self.starts, self.steps, self.outputs):
            if step.is_number and not (step.is_integer and size_ge(step, 1)):
                raise SizeError(f"{_where(axis)}: the step {size_text(step)} must be a positive whole number")
            if start.is_number and not (start.is_integer and size_ge(start, 0)):
                raise SizeError(f"{_where(axis)}: the start {size_text(start)} must be a whole number from 0")
            first, by = as_whole(start), as_whole(step)  # (whole numbers added and compared as Python ints)
            if out is not None and first == 0 and by == 1 and out.size == axis.size:
                continue  # the whole axis (its very size, symbolic or not): the last entry is one before its end
            last = first if out is None else first + by * (as_whole(out.size) - 1)
            past = last - as_whole(axis.size)
            if (type(past) is int or past.is_number) and size_ge(last, axis.size):
                raise SizeError(f"{_where(axis)}: the region ends at entry {size_text(last)}, past its end")

    def fields(self) -> dict[str, Any]:
        """The fields, ``fill``, ``dtype`` and ``range`` only when set."""
        fields = Primitive.fields(self)
        for name in ("fill", "range"):
            if fields[name] is None:
                del fields[name]
        if self.dtype == "float":
            del fields["dtype"]
        return fields

    def source(self) -> Segment:
        return Segment(tuple(a for a in self.outputs if a is not None), self.dtype, self.range)

    def whole(self, k: int) -> bool:
        """Whether the region spans axis ``k`` whole."""
        return self.outputs[k] is self.axes[k] or (self.outputs[k] == self.axes[k] and self.starts[k] == 0
                                                   and self.steps[k] == 1)

    def signature(self) -> tuple[Type, Type]:
        x = Segment(self.axes, self.dtype, self.range)
        return Type((x,) if self.fill is not None else (x, self.source())), Type((x,))

    def spans(self) -> list[str]:
        """Each axis' part of the region as Python's subscript writes it (``:``, ``1``, ``2:5``, ``0:8:2``)."""
        out = []
        for k, (start, step, axis) in enumerate(zip(self.starts, self.steps, self.outputs)):
            if axis is None:
                out.append(size_text(start))
            elif self.whole(k):
                out.append(":")
            else:
                stop = size_text(start + step * (axis.size - 1) + 1)
                out.append(f"{size_text(start)}:{stop}" + (f":{size_text(step)}" if step != 1 else ""))
        return out

    def label(self) -> str:
        return f"[{', '.join(self.spans())}] ← {'0' if self.fill is not None else ''}".rstrip()


def _where(axis: Axis) -> str:
    return f"put into axis {axis.name} of size {size_text(axis.size)}"


def Put(spec: str, fill: float | None = None) -> Box:
    """``x`` with a region replaced: ``"b, t:8 1, m 2:6"`` is ``x[:, 1, 2:6] = source`` for ``x: b t m`` (per axis of
    ``x``, comma-separated: nothing for the whole axis, one entry, or ``start:stop[:step]``); the source is ``b m``
    (its sliced axes keep their names, sized by the range).  ``fill=0``: the region zeroed, no source."""
    axes: list[Axis] = []
    starts: list[Size] = []
    steps: list[Size] = []
    outputs: list[Axis | None] = []
    for part in spec.split(","):
        words = part.split()
        if not 1 <= len(words) <= 2:
            raise ParseError(f"put {spec!r}: each axis is written 'name[:size] [entry | start:stop[:step]]', not {part!r}")
        axis = parse_axis(words[0])
        axes.append(axis)
        if len(words) == 1:
            starts.append(sympy.Integer(0))
            steps.append(sympy.Integer(1))
            outputs.append(axis)
            continue
        bounds = words[1].split(":")
        if len(bounds) == 1:
            starts.append(size(bounds[0]))
            steps.append(sympy.Integer(1))
            outputs.append(None)
            continue
        if len(bounds) not in (2, 3):
            raise ParseError(f"put {spec!r}: a range is start:stop[:step], not {words[1]!r}")
        a, b = size(bounds[0]), size(bounds[1])
        c = size(bounds[2]) if len(bounds) == 3 else sympy.Integer(1)
        if c.is_number and not (c.is_integer and c >= 1):  # (before the length: a step 0 divides by zero)
            raise SizeError(f"put into axis {axis.name}: the step {size_text(c)} must be a positive whole number")
        kept = b - a if c == 1 else sympy.ceiling((b - a) / c)
        starts.append(a)
        steps.append(c)
        outputs.append(Axis(axis.name, kept, axis.role))
    return Box.make(PutOp(tuple(axes), tuple(starts), tuple(steps), tuple(outputs), fill))


IMPORT.known(PutOp, aten=("aten.as_strided_scatter", "aten.slice_scatter", "aten.select_scatter"),
             by="ncd.trace.idioms_slicing")


def put_text(prim: PutOp, x: str, source: str, dims: list[int], whole: Any = int) -> str:
    """``x`` with the region of ``prim`` replaced by ``source`` (``dims``: ``x``'s dims of the axes, negative) as nested
    ``slice_scatter``/``select_scatter`` calls, the outermost cut axis first (only the region's slices are copied);
    ``whole``: a size as a whole number (the lowering's ``ctx.int``)."""
    cuts = []
    for k in range(len(prim.axes)):
        if not prim.whole(k):
            out = prim.outputs[k]
            start, step = whole(prim.starts[k]), whole(prim.steps[k])
            cuts.append((dims[k], out is None, start, start + step * (whole(out.size) - 1) + 1 if out is not None else 0,
                         step))
    return _scatter(x, source, cuts)


def _scatter(x: str, source: str, cuts: list[tuple[int, bool, int, int, int]]) -> str:
    if not cuts:
        return source
    (dim, index, start, stop, step), rest = cuts[0], cuts[1:]
    if index:
        inner = _scatter(f"{x}.select({dim}, {start})", source, rest) if rest else source
        return f"{x}.select_scatter({inner}, {dim}, {start})"
    text = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    inner = _scatter(f"{x}[..., {text}{', :' * (-dim - 1)}]", source, rest) if rest else source
    return f"{x}.slice_scatter({inner}, {dim}, {start}, {stop}, {step})"


@LOWERING.rule(PutOp)
def lower_put(prim: PutOp, ctx: RuleContext) -> list[str]:
    """Nested ``slice_scatter``/``select_scatter`` (a zeroed region: of zeros of the region's shape)."""
    x = ctx.args[0].var
    dims = ctx.own_dims("dom", 0)
    if prim.fill is None:
        return [put_text(prim, x, ctx.args[1].var, dims, lambda v: ctx.int(v, "put bound"))]
    region = x
    for k in range(len(prim.axes)):  # (left to right: the negative dims of the axes after a selected one stay theirs)
        if not prim.whole(k):
            start, step, out = ctx.int(prim.starts[k], "put bound"), ctx.int(prim.steps[k], "put bound"), prim.outputs[k]
            if out is None:
                region = f"{region}.select({dims[k]}, {start})"
            else:
                stop = start + step * (ctx.int(out.size, "put bound") - 1) + 1
                region = f"{region}[..., {start}:{stop}:{step}{', :' * (-dims[k] - 1)}]"
    return [put_text(prim, x, f"torch.zeros_like({region})", dims, lambda v: ctx.int(v, "put bound"))]


@COST.rule(PutOp)
def cost_put(prim: PutOp, ctx: CostContext) -> list[Tensor]:
    """A copy of ``x`` with the region written: no FLOPs, nothing kept for the backward (it is linear)."""
    return [ctx.new(ctx.out_axes[0], grad=any(t.grad for t in ctx.inputs), dtype=prim.dtype)]


def read_region(prim: PutOp) -> Diagram:
    """The region of ``prim`` read from a tensor of ``x``'s axes: an index or slice box per cut axis (the transpose
    of writing it), each woven over the other axes."""
    from ncd.prims.slicing import IndexOp, SliceOp

    axes = list(prim.axes)
    parts: list[Diagram] = []
    for k in range(len(prim.axes)):
        if prim.whole(k):
            continue
        at = axes.index(prim.axes[k])
        out = prim.outputs[k]
        if out is None:
            box: Diagram = Box(IndexOp(prim.axes[k], prim.starts[k], prim.dtype, prim.range))
            after = (1, 0)
        else:
            box = Box(SliceOp(prim.axes[k], prim.starts[k], prim.starts[k] + prim.steps[k] * (out.size - 1) + 1,
                              prim.steps[k], out, prim.dtype, prim.range))
            after = (1, 1)
        for a in reversed(axes[at + 1:]):
            box = Weave(box, a, (after[0],), (after[1],))
        for a in reversed(axes[:at]):
            box = Weave(box, a, (0,), (0,))
        parts.append(box)
        if out is None:
            del axes[at]
        else:
            axes[at] = out
    return Seq.of(*parts) if parts else Identity(Type((Segment(prim.axes, prim.dtype, prim.range),)))


@transpose(PutOp)
def transpose_put(prim: PutOp, box: Box) -> Diagram:
    """The cotangent with the region zeroed (to ``x``) and the cotangent's region (to the source)."""
    zeroed = Box(PutOp(prim.axes, prim.starts, prim.steps, prim.outputs, 0.0))
    if prim.fill is not None:
        return zeroed
    return Seq.of(route([Segment(prim.axes)], [0, 0]), Par.of(zeroed, read_region(prim)))
