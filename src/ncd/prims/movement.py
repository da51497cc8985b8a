"""Movement: binding (flattening) and unbinding axes, concatenation, indexing, slicing, size-1 axes.

Each box touches only the axes it moves, so it is woven over every other wire:
``"b k h x" >> Bind("k h -> m")`` gives ``"b m x"``.

* ``Bind("k h -> m")`` (alias ``Flatten``) joins axes into one of size ``k*h`` (``"k h -> (k h)"``
  keeps the parts visible; ``Bind("k h")`` means the same).  A written size must equal
  the product.
* ``Unbind("m -> k h")`` splits an axis; the sizes must multiply to its size.  When the
  input is written without a size (``"m"``) its size *becomes* ``k*h``; when it has one and
  exactly one output has none (``"m:512 -> k h:8"``), that output is solved for.
* ``Concat("c, c -> d")`` joins segments along one axis each; the output size is the sum.
  Without ``->`` the output keeps the common name: ``Concat("c, c")`` gives ``c:2*c``.
* ``Index(axis, i)`` removes ``axis`` keeping entry ``i``; ``Slice(axis, start, stop, step)``
  keeps a range (the output axis has the same name, or ``out=``).
* ``Squeeze(axis)`` removes a size-1 axis; ``Unsqueeze(axis, position)`` inserts one
  before the axis named ``position`` (``after=`` for after it; neither: at the end).

Concatenation lives in :mod:`ncd.prims.concat`, indexing and slicing (and their transpose ``Insert``) in
:mod:`ncd.prims.slicing`; every name is also imported from here.

>>> import ncd
>>> str((ncd.Identity.of("b k h") >> ncd.Bind("k h -> m")).cod)
'b m:h*k'
>>> str(ncd.Concat("c, c").cod)
'c:2*c'
>>> str((ncd.Identity.of("c x y") >> ncd.Unsqueeze("s", "x")).cod)
'c s:1 x y'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Axis, Segment, Type
from ncd.ir.diagram import Box, Diagram, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import size_text, sizes_equal
from ncd.prims.concat import Concat, ConcatOp
from ncd.prims.concat import joined_range as joined_range
from ncd.prims.movement_specs import _contradicts, _default_sized, _distinct, _one_axis, _product, _segment, _sizes
from ncd.prims.slicing import Index, IndexOp, Slice, SliceOp
from ncd.prims.slicing import Insert as Insert
from ncd.prims.slicing import InsertOp as InsertOp
from ncd.prims.slicing import slice_size as slice_size

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = [
    "BindOp", "UnbindOp", "ConcatOp", "IndexOp", "SliceOp", "SqueezeOp", "UnsqueezeOp",
    "Bind", "Flatten", "Unbind", "Concat", "Index", "Slice", "Squeeze", "Unsqueeze",
]



@dataclass(frozen=True)
class BindOp(Primitive):
    """Bind (flatten) the axes ``inputs`` into the single axis ``output`` (row-major)."""

    inputs: Segment
    output: Axis

    op: ClassVar[str] = "bind"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if not self.inputs.axes:
            raise ParseError("bind: needs at least one axis to bind")
        _distinct(self.inputs, "bind")
        total = _product(self.inputs.axes)
        if _contradicts(total, self.output.size):
            raise SizeError(
                f"bind '{' '.join(self.inputs.names)} -> {self.output.name}': the output axis {self.output.name} has size"
                f" {size_text(self.output.size)} but {_sizes(self.inputs.axes)} multiply to {size_text(total)}"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type((self.inputs,)), Type((Segment((self.output,)),))

    def label(self) -> str:
        return "▮"


@dataclass(frozen=True)
class UnbindOp(Primitive):
    """Split the axis ``input`` into the axes ``outputs`` (row-major)."""

    input: Axis
    outputs: Segment

    op: ClassVar[str] = "unbind"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if not self.outputs.axes:
            raise ParseError("unbind: needs at least one output axis")
        _distinct(self.outputs, "unbind")
        total = _product(self.outputs.axes)
        if _contradicts(total, self.input.size):
            raise SizeError(
                f"unbind '{self.input.name} -> {' '.join(self.outputs.names)}': {_sizes(self.outputs.axes)} multiply to"
                f" {size_text(total)}, not to the size {size_text(self.input.size)} of {self.input.name}"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.input,)),)), Type((self.outputs,))

    def label(self) -> str:
        return "▯"


@dataclass(frozen=True)
class SqueezeOp(Primitive):
    """Remove the size-1 axis ``axis``."""

    axis: Axis

    op: ClassVar[str] = "squeeze"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        _size_one(self.axis, "squeeze")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,)),)), SCALAR_TYPE

    def label(self) -> str:
        return "↢"


@dataclass(frozen=True)
class UnsqueezeOp(Primitive):
    """Insert the size-1 axis ``axis`` at ``position`` in the segment ``around`` (0 or 1 axes)."""

    axis: Axis
    around: Segment
    position: int = 0

    op: ClassVar[str] = "unsqueeze"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        _size_one(self.axis, "unsqueeze")
        if not 0 <= self.position <= len(self.around):
            raise ParseError(f"unsqueeze: position {self.position} is outside '{self.around}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.around,)), Type((self.around.insert(self.position, self.axis),))

    def label(self) -> str:
        return "↣"


def _size_one(axis: Axis, what: str) -> None:
    if not sizes_equal(axis.size, sympy.Integer(1)):
        raise SizeError(f"{what}: axis {axis.name} must have size 1, not {size_text(axis.size)}")


def _one(axis: Axis) -> Axis:
    return axis if not _default_sized(axis) else axis.resized(1)


# -- constructors ------------------------------------------------------------------------
def Bind(spec: str, name: str | None = None) -> Box:
    """Bind axes into one: ``Bind("k h -> m")`` (size ``k*h``), ``Bind("k h -> (k h)")`` or ``Bind("k h")``."""
    left, arrow, right = spec.partition("->") if isinstance(spec, str) else (spec, "", "")
    inputs = _segment(left, "bind")
    if not arrow:
        right = "(" + " ".join(str(a) for a in inputs) + ")"
    output = _one_axis(right.strip(), "bind")
    if _default_sized(output):
        output = output.resized(_product(inputs.axes))
    return Box.make(BindOp(inputs, output), name)


Flatten = Bind


def Unbind(spec: str, name: str | None = None) -> Box:
    """Split one axis into several: ``Unbind("m -> k h")``; the sizes must multiply to the input's."""
    left, arrow, right = spec.partition("->") if isinstance(spec, str) else (spec, "", "")
    if not arrow:
        raise ParseError(f"unbind spec {spec!r} must have the form 'm -> k h'")
    source = _one_axis(left.strip(), "unbind")
    outputs = _segment(right, "unbind")
    if _default_sized(source):
        source = source.resized(_product(outputs.axes))
    else:
        free = [k for k, a in enumerate(outputs) if _default_sized(a)]
        if len(free) == 1:
            others = _product(tuple(a for k, a in enumerate(outputs) if k != free[0]))
            solved = sympy.simplify(source.size / others)
            outputs = outputs.with_axes(a.resized(solved) if k == free[0] else a for k, a in enumerate(outputs))
    return Box.make(UnbindOp(source, outputs), name)


def Squeeze(axis: str, name: str | None = None) -> Box:
    """Remove the size-1 axis ``axis`` (written without a size, it is read as size 1)."""
    return Box.make(SqueezeOp(_one(_one_axis(axis, "squeeze"))), name)


def Unsqueeze(axis: str, position: str | None = None, *, after: str | None = None, name: str | None = None) -> Box:
    """Insert a size-1 axis before the axis named ``position`` (or ``after=`` one; neither: at the end).

    The box touches only that neighbour, so it weaves over the rest of the segment.
    """
    new = _one(_one_axis(axis, "unsqueeze"))
    if position is not None and after is not None:
        raise ParseError("unsqueeze: give either position (the axis to insert before) or after, not both")
    if position is not None and not isinstance(position, str):
        raise ParseError(f"unsqueeze: position names the axis to insert before, not {type(position).__name__} {position!r}")
    anchor = position if position is not None else after
    around = SCALAR if anchor is None else Segment((_one_axis(anchor, "unsqueeze"),))
    return Box.make(UnsqueezeOp(new, around, 0 if position is not None else len(around)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
for _cls in (BindOp, UnbindOp, SqueezeOp, UnsqueezeOp):
    IMPORT.unsupported(_cls, "the importer writes reshapes as views (ncd.trace.idioms.reshape), not as this box")


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(BindOp)
def lower_bind(prim: BindOp, ctx: RuleContext) -> list[str]:
    dims = ctx.own_dims("dom", 0)
    x = ctx.args[0].var
    if len(dims) == 1:
        return [x]
    if dims[-1] == -1:
        return [f"{x}.flatten({dims[0]})"]
    return [f"{x}.flatten({dims[0]}, {dims[-1]})"]


@LOWERING.rule(UnbindOp)
def lower_unbind(prim: UnbindOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    sizes = tuple(ctx.int(a.size, f"axis {a.name}") for a in prim.outputs)
    x = ctx.args[0].var
    return [x if len(sizes) == 1 else f"{x}.unflatten({dim}, {sizes})"]


@LOWERING.rule(SqueezeOp)
def lower_squeeze(prim: SqueezeOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.squeeze({dim})"]


@LOWERING.rule(UnsqueezeOp)
def lower_unsqueeze(prim: UnsqueezeOp, ctx: RuleContext) -> list[str]:
    dim = ctx.own_dims("cod", 0)[prim.position]
    return [f"{ctx.args[0].var}.unsqueeze({dim})"]


# -- costs and backward ------------------------------------------------------------------------
def _replace(order: tuple[str, ...], old: list[str], new: list[str]) -> tuple[str, ...]:
    """``order`` with the run of ``old`` names (adjacent) replaced by ``new``."""
    present = [n for n in order if n in old]
    if not present:
        return order
    first = order.index(present[0])
    rest = [n for n in order if n not in old]
    return tuple(rest[:first] + new + rest[first:])


@COST.rule(BindOp)
def cost_bind(prim: BindOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    names = list(prim.inputs.names)
    if len(names) == 1 or x.merges([names]):
        return [replace(x, axes=ctx.out_axes[0], order=_replace(x.order, names, [prim.output.name]), dense=True)]
    return [ctx.output(0)]  # reshape of axes not adjacent in memory: a copy


@COST.rule(UnbindOp)
def cost_unbind(prim: UnbindOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    return [replace(x, axes=ctx.out_axes[0], order=_replace(x.order, [prim.input.name], list(prim.outputs.names)),
                    dense=True)]


@COST.rule(SqueezeOp)
def cost_squeeze(prim: SqueezeOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


@COST.rule(UnsqueezeOp)
def cost_unsqueeze(prim: UnsqueezeOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


# -- backward ------------------------------------------------------------------------------
@BACKWARD.rule(BindOp)
def backward_bind(prim: BindOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(UnbindOp(prim.output, prim.inputs)))


@BACKWARD.rule(UnbindOp)
def backward_unbind(prim: UnbindOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(BindOp(prim.outputs, prim.input)))


@BACKWARD.rule(SqueezeOp)
def backward_squeeze(prim: SqueezeOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(UnsqueezeOp(prim.axis, SCALAR, 0)))


@BACKWARD.rule(UnsqueezeOp)
def backward_unsqueeze(prim: UnsqueezeOp, box: Box, builder: Builder) -> BoxBackward:
    squeeze = Box(SqueezeOp(prim.axis))
    before, after = prim.around.axes[: prim.position], prim.around.axes[prim.position:]
    result: Diagram = squeeze
    for axis in reversed(after):
        result = Weave(result, axis, (1,), (0,))
    for axis in reversed(before):
        result = Weave(result, axis, (0,), (0,))
    return BoxBackward((), result)


