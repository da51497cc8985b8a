"""Indexing and slicing one axis (movement boxes), and their transpose: the input written back among zeros.

* ``Index(axis, i)`` removes ``axis`` keeping entry ``i``; ``Slice(axis, start, stop, step)``
  keeps a range (the output axis has the same name, or ``out=``).
* ``Insert`` (``[]ᵀ``, a derivative primitive) is their transpose in backward diagrams.

>>> import ncd
>>> str((ncd.Identity.of("b t:8") >> ncd.Slice("t:8", 2, 6)).cod)
'b t:4'
>>> str((ncd.Identity.of("b t:8") >> ncd.Index("t:8", -1)).cod)
'b'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.analysis.layout import gap
from ncd.errors import SizeError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Axis, AxisLike, Dtype, Segment, Type, as_axis, parse_axis
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER
from ncd.ir.size import Size, SizeLike, evaluate, size, size_ge, size_gt, size_le, size_lt, size_text, whole
from ncd.prims.kinds import transpose
from ncd.prims.movement_specs import _contradicts, _default_sized, _one_axis

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["IndexOp", "SliceOp", "Index", "Slice", "slice_size", "InsertOp", "Insert"]


@dataclass(frozen=True)
class IndexOp(Primitive):
    """Keep entry ``index`` of ``axis`` and remove the axis (a tag on the end of the wire)."""

    axis: Axis
    index: Size
    dtype: Dtype = "float"  # what the tensor holds (an index segment keeps its range: LayoutLM's bbox[..., 0])
    range: Size | None = None

    op: ClassVar[str] = "index"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        i, n = self.index, self.axis.size
        if not i.free_symbols and not i.is_integer:
            raise SizeError(f"index: position {size_text(i)} on axis {self.axis.name} is not a whole number")
        if not (i.free_symbols or n.free_symbols) and not -n <= i < n:
            raise SizeError(f"index {size_text(i)} is out of range for axis {self.axis.name} of size {size_text(n)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,), self.dtype, self.range),)), Type((Segment((), self.dtype, self.range),))

    def label(self) -> str:
        return f"[{size_text(self.index)}]"


@dataclass(frozen=True)
class SliceOp(Primitive):
    """Keep ``start:stop:step`` of ``axis``; the result is the axis ``output``."""

    axis: Axis
    start: Size
    stop: Size
    step: Size
    output: Axis
    dtype: Dtype = "float"  # what the sliced tensor holds (an index segment keeps its range)
    range: Size | None = None

    op: ClassVar[str] = "slice"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        start, stop, step, n = self.start, self.stop, self.step, self.axis.size  # (whole numbers compared as ints)
        if not step.free_symbols and not size_ge(step, 1):
            raise SizeError(f"{self._where()}: the step must be a positive whole number")
        if not (start.free_symbols or stop.free_symbols) and not (size_le(0, start) and size_lt(start, stop)):
            raise SizeError(f"{self._where()}: needs 0 <= start < stop")
        if not (stop.free_symbols or n.free_symbols) and size_gt(stop, n):
            raise SizeError(f"{self._where()}: stop {size_text(stop)} is past the size {size_text(n)} of {self.axis.name}")
        if _contradicts(self.output.size, slice_size(start, stop, step)):
            raise SizeError(f"{self._where()}: the output axis {self.output.name} has size {size_text(self.output.size)},"
                            f" but the slice keeps {size_text(slice_size(start, stop, step))} entries")

    def _where(self) -> str:
        return f"slice {size_text(self.start)}:{size_text(self.stop)}:{size_text(self.step)} of axis {self.axis.name}"

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,), self.dtype, self.range),)), Type((Segment((self.output,), self.dtype, self.range),))

    def label(self) -> str:
        step = "" if self.step == 1 else f":{size_text(self.step)}"
        return f"[{size_text(self.start)}:{size_text(self.stop)}{step}]"


def slice_size(start: Size, stop: Size, step: Size) -> Size:
    """The entries ``start:stop:step`` keeps (of Python ints when all are whole numbers and the step is positive)."""
    a, b, c = whole(start), whole(stop), whole(step)
    if a is not None and b is not None and c is not None and c >= 1:
        return sympy.Integer(-((a - b) // c))
    return (stop - start) if step == 1 else sympy.ceiling((stop - start) / step)


# -- constructors ------------------------------------------------------------------------
def Index(axis: str, i: SizeLike, name: str | None = None) -> Box:
    """Keep entry ``i`` of ``axis`` and remove the axis (``i`` may be negative or symbolic)."""
    return Box.make(IndexOp(_one_axis(axis, "index"), size(i)), name)


def Slice(axis: str, start: SizeLike, stop: SizeLike, step: SizeLike = 1, out: str | None = None, name: str | None = None) -> Box:
    """Keep ``start:stop:step`` of ``axis``; the output axis keeps the name (or is called ``out``)."""
    source = _one_axis(axis, "slice")
    a, b, c = size(start), size(stop), size(step)
    if c.is_number and c < 1:
        raise SizeError(f"slice {size_text(a)}:{size_text(b)}:{size_text(c)} of axis {source.name}: the step must be a"
                        " positive whole number")
    kept = slice_size(a, b, c)
    if kept.is_number and kept < 1:
        raise SizeError(f"slice {size_text(a)}:{size_text(b)}:{size_text(c)} of axis {source.name} keeps nothing:"
                        " the stop must be past the start")
    output = Axis(source.name, kept, source.role) if out is None else parse_axis(out)
    if out is not None and _default_sized(output):
        output = output.resized(kept)
    return Box.make(SliceOp(source, a, b, c, output), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(SliceOp, aten=("aten.slice", "aten.split", "aten.split_with_sizes", "aten.chunk"))


IMPORT.known(IndexOp, aten=("aten.select",))


# -- derivative primitives of the family (backward diagrams) -----------------------------------
@dataclass(frozen=True)
class InsertOp(Primitive):
    """The transpose of indexing / slicing ``axis``: the input placed at ``start:stop:step``, zeros elsewhere.

    ``source`` is the sliced axis (``None``: a single index, the input is a scalar).
    """

    axis: Axis
    start: Size
    stop: Size
    step: Size
    source: Axis | None = None

    op: ClassVar[str] = "insert"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        dom = SCALAR if self.source is None else Segment((self.source,))
        return Type((dom,)), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return "[]ᵀ"


def Insert(axis: AxisLike, start: int, stop: int | None = None, step: int = 1, source: AxisLike | None = None) -> Box:
    """Zeros along ``axis`` with the input written at ``start`` (a scalar) or ``start:stop:step`` (axis ``source``)."""
    return Box.make(InsertOp(as_axis(axis), size(start), size(start + 1 if stop is None else stop), size(step),
                             None if source is None else as_axis(source)))


# -- lowering, costs and transposes -------------------------------------------------------------
@LOWERING.rule(IndexOp)
def lower_index(prim: IndexOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.select({dim}, {ctx.int(prim.index, 'index')})"]


@LOWERING.rule(SliceOp)
def lower_slice(prim: SliceOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    start, stop, step = (ctx.int(v, "slice bound") for v in (prim.start, prim.stop, prim.step))
    text = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    rest = ", :" * (-dim - 1)
    return [f"{ctx.args[0].var}[..., {text}{rest}]"]


@COST.rule(IndexOp)
def cost_index(prim: IndexOp, ctx: CostContext) -> list[Tensor]:
    """A view: where the picked dim was, its other entries are a gap unless it was outermost or of one entry."""
    x = ctx.inputs[0]
    if prim.axis.name in x.order[1:] and prim.axis.size != 1:
        x = replace(x, order=tuple(gap() if n == prim.axis.name else n for n in x.order))
    return [x.relabel(ctx.out_axes[0])]


@COST.rule(SliceOp)
def cost_slice(prim: SliceOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    order = [prim.output.name if n == prim.axis.name else n for n in x.order]
    if prim.output.name in order:  # a view: the entries left out are gaps beside the sliced dim (no merge across them)
        at = order.index(prim.output.name)
        if prim.step != 1:
            order.insert(at + 1, gap())
        if at > 0 and (prim.step != 1 or prim.output.size != prim.axis.size):
            order.insert(at, gap())
    return [replace(x, axes=ctx.out_axes[0], order=tuple(order), dense=True)]


@transpose(IndexOp)
def transpose_index(prim: IndexOp, box: Box) -> Diagram:
    """The transpose of picking one entry: the cotangent written there, zeros elsewhere."""
    n = prim.axis.size
    index = prim.index if not (prim.index.is_number and prim.index < 0) else prim.index + n
    return Box(InsertOp(prim.axis, index, index + 1, sympy.Integer(1)))


@transpose(SliceOp)
def transpose_slice(prim: SliceOp, box: Box) -> Diagram:
    return Box(InsertOp(prim.axis, prim.start, prim.stop, prim.step, prim.output))


@LOWERING.rule(InsertOp)
def lower_insert(prim: InsertOp, ctx: RuleContext) -> list[str]:
    n = evaluate(prim.axis.size, what=f"axis {prim.axis.name}")
    start, stop, step = (evaluate(v, what="insert bound") for v in (prim.start, prim.stop, prim.step))
    g = ctx.args[0].var
    value = f"{g}[..., None]" if prim.source is None else g
    where = f"torch.arange({start}, {stop}, {step}, device={g}.device)"
    return [f"torch.zeros(*{value}.shape[:-1], {n}, dtype={g}.dtype, device={g}.device).index_copy(-1, {where}, {value})"]


@COST.rule(InsertOp)
def cost_insert(prim: InsertOp, ctx: CostContext) -> list[Tensor]:
    """``zeros.index_copy(-1, positions, x)``: autograd keeps the int64 positions and ``x``."""
    x = ctx.inputs[0]
    count = sympy.Integer(1) if prim.source is None else prim.source.size
    if x.grad:
        ctx.save(ctx.new((Axis("positions", count),), grad=False, dtype="index"), x)
    return [ctx.output(0)]


BACKWARD.unsupported(InsertOp, SECOND_ORDER)


IMPORT.unsupported(InsertOp, NOT_TRACED)
