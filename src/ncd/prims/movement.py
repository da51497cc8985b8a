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
from ncd.ir.axes import Axis, AxisLike, Dtype, Segment, Type, as_axis, parse_axis, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size, SizeLike, evaluate, simplified, size, size_text, sizes_equal
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = [
    "BindOp", "UnbindOp", "ConcatOp", "IndexOp", "SliceOp", "SqueezeOp", "UnsqueezeOp",
    "Bind", "Flatten", "Unbind", "Concat", "Index", "Slice", "Squeeze", "Unsqueeze",
]

SCALAR = Segment(())


def _product(axes: tuple[Axis, ...]) -> Size:
    total: Size = sympy.Integer(1)
    for a in axes:
        total = total * a.size
    return total


def _contradicts(a: Size, b: Size) -> bool:
    """Provably different (checked again once sizes are bound)."""
    if sizes_equal(a, b):
        return False
    diff = simplified(a - b)
    return not diff.free_symbols and diff != 0


def _sizes(axes: tuple[Axis, ...]) -> str:
    return " ".join(f"{a.name}={size_text(a.size)}" for a in axes)


def _default_sized(axis: Axis) -> bool:
    """Written without a size (``"m"``, not ``"m:512"``): its size is its own name."""
    try:
        return not axis.parts and sizes_equal(axis.size, size(axis.name))
    except Exception:
        return False


def _one_axis(text: str, what: str) -> Axis:
    seg = _segment(text, what)
    if len(seg) != 1:
        raise ParseError(f"{what}: {text!r} must be a single axis")
    return seg.axes[0]


def _segment(text: str, what: str) -> Segment:
    if not isinstance(text, str):
        raise ParseError(f"{what}: expected axis text, not {type(text).__name__} {text!r}")
    typ = parse_type(text)
    if len(typ) != 1:
        raise ParseError(f"{what}: {text!r} must be one segment (no commas)")
    if typ[0].dtype != "float":
        raise ParseError(f"{what}: {text!r} must name axes only")
    return typ[0]


def _distinct(seg: Segment, what: str) -> None:
    if len(set(seg.names)) != len(seg.names):
        raise ParseError(f"{what}: an axis occurs twice in '{seg}'")


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
class ConcatOp(Primitive):
    """Concatenate along one axis into ``output``, whose size is the sum of ``inputs``; linear.

    Input ``j`` is the segment ``before + (inputs[j],) + after``; the output is
    ``before + (output,) + after`` (``before`` and ``after`` are the axes every input shares).
    """

    inputs: tuple[Axis, ...]
    output: Axis
    before: Segment = Segment(())
    after: Segment = Segment(())
    dtype: Dtype = "float"  # what the tensors hold: positions (``index``) or flags (``bool``) join too
    range: Size | None = None  # the output's range of positions: every input's unless ``ranges`` says otherwise
    ranges: tuple[Size, ...] = ()  # each input's range of positions, none above ``range``

    op: ClassVar[str] = "concat"
    weave_policy = weaving.same_weave
    family: ClassVar[str] = "movement"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if len(self.inputs) < 2:
            raise ParseError(f"concat: joins at least two segments, not {len(self.inputs)}")
        total: Size = sympy.Integer(0)
        for a in self.inputs:
            total = total + a.size
        if _contradicts(total, self.output.size):
            raise SizeError(
                f"concat into {self.output.name}: the output has size {size_text(self.output.size)} but the inputs"
                f" {_sizes(self.inputs)} add up to {size_text(total)}"
            )

        if self.ranges and (len(self.ranges) != len(self.inputs) or self.range is None or any(
                (r - self.range).is_positive for r in self.ranges)):
            raise SizeError(f"concat into {self.output.name}: input ranges {', '.join(size_text(r) for r in self.ranges)}"
                            f" must be one per input and none above the output's {size_text(self.range or 0)}")

    def _wrap(self, axis: Axis, rng: Size | None) -> Segment:
        return Segment(self.before.axes + (axis,) + self.after.axes, self.dtype, rng)

    def signature(self) -> tuple[Type, Type]:
        ranges = self.ranges or (self.range,) * len(self.inputs)
        return Type(tuple(self._wrap(a, r) for a, r in zip(self.inputs, ranges))), Type((self._wrap(self.output, self.range),))

    @property
    def position(self) -> int:
        return len(self.before)

    def label(self) -> str:
        return "⧺"


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
        where = f"slice {size_text(self.start)}:{size_text(self.stop)}:{size_text(self.step)} of axis {self.axis.name}"
        n = self.axis.size
        if not self.step.free_symbols and not self.step >= 1:
            raise SizeError(f"{where}: the step must be a positive whole number")
        if not (self.start.free_symbols or self.stop.free_symbols) and not 0 <= self.start < self.stop:
            raise SizeError(f"{where}: needs 0 <= start < stop")
        if not (self.stop.free_symbols or n.free_symbols) and self.stop > n:
            raise SizeError(f"{where}: stop {size_text(self.stop)} is past the size {size_text(n)} of {self.axis.name}")
        if _contradicts(self.output.size, slice_size(self.start, self.stop, self.step)):
            raise SizeError(f"{where}: the output axis {self.output.name} has size {size_text(self.output.size)}, but the"
                            f" slice keeps {size_text(slice_size(self.start, self.stop, self.step))} entries")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,), self.dtype, self.range),)), Type((Segment((self.output,), self.dtype, self.range),))

    def label(self) -> str:
        step = "" if self.step == 1 else f":{size_text(self.step)}"
        return f"[{size_text(self.start)}:{size_text(self.stop)}{step}]"


def slice_size(start: Size, stop: Size, step: Size) -> Size:
    return (stop - start) if step == 1 else sympy.ceiling((stop - start) / step)


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
        return Type((Segment((self.axis,)),)), Type((SCALAR,))

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


def Concat(spec: str, name: str | None = None) -> Box:
    """Concatenate segments along one axis: ``Concat("c, c -> d")``, ``Concat("x:3, x:5")``.

    Whole segments may be written when they share their other axes:
    ``Concat("c x y, c x y -> d x y")`` joins along the one axis that differs (here ``c``).
    Segments of positions of one range join too: ``Concat("p [4], p [4] -> q")`` holds positions ``[4]``.
    """
    left, arrow, right = spec.partition("->") if isinstance(spec, str) else (spec, "", "")
    typ = parse_type(left)
    if len(typ) < 2 or any(not seg.axes for seg in typ):
        raise ParseError(f"concat spec {spec!r}: give at least two segments of axes, e.g. 'c, c -> d' or 'c x, c x -> d x'")
    dtype, ranges = typ[0].dtype, tuple(seg.range for seg in typ)
    if any(seg.dtype != dtype for seg in typ):
        raise ParseError(f"concat spec {spec!r}: the segments hold different kinds of values ("
                         + ", ".join(f"'{seg}'" for seg in typ) + ")")
    kind = joined_range(dtype, ranges, f"concat spec {spec!r}")
    width = len(typ[0])
    if arrow:
        out = _segment(right, "concat")
    elif width == 1:
        if len({seg.axes[0].name for seg in typ}) != 1:
            raise ParseError(f"concat spec {spec!r}: the inputs have different names; name the output, e.g. '{left} -> c'")
        out = Segment((Axis(typ[0].axes[0].name, sum((seg.axes[0].size for seg in typ), sympy.Integer(0)),
                            typ[0].axes[0].role),))
    else:
        raise ParseError(f"concat spec {spec!r}: with several axes, write the output, e.g. 'c x, c x -> d x'")
    if any(len(seg) != width for seg in typ) or len(out) != width:
        raise ParseError(f"concat spec {spec!r}: every segment needs the same number of axes")
    columns = [[seg.axes[i] for seg in typ] + [out.axes[i]] for i in range(width)]
    differs = [i for i, col in enumerate(columns)
               if len({a.name for a in col}) > 1 or not all(a.same(col[0]) for a in col[:-1])]
    if width == 1:
        differs = [0]
    if len(differs) != 1:
        what = "no axis" if not differs else "axes " + ", ".join(columns[i][0].name for i in differs)
        raise ParseError(f"concat spec {spec!r}: {what} differ between the segments; exactly one axis is joined"
                         " (give the output axis a new name, e.g. 'c x, c x -> d x')")
    p = differs[0]
    inputs = tuple(seg.axes[p] for seg in typ)
    output = out.axes[p]
    if _default_sized(output):
        output = output.resized(sum((a.size for a in inputs), sympy.Integer(0)))
    for i, col in enumerate(columns):
        written = col[-1]  # the output's axis may be written by name only: it takes the inputs' size
        if i != p and not (all(a.same(col[0]) for a in col[:-1]) and (written.same(col[0]) or _default_sized(written))):
            raise ParseError(f"concat spec {spec!r}: axis {col[0].name} must be the same in every segment")
    shared = typ[0].axes
    return Box.make(ConcatOp(inputs, output, Segment(shared[:p]), Segment(shared[p + 1:]), *kind), name)


def joined_range(dtype: Dtype, ranges: tuple[Size | None, ...], what: str) -> tuple[Dtype, Size | None, tuple[Size, ...]]:
    """``ConcatOp``'s ``dtype, range, ranges`` for inputs of ``dtype`` with ``ranges``: positions of different ranges join
    into the largest (which must be known).

    >>> joined_range("index", (size(3), size(5)), "concat")
    ('index', 5, (3, 5))
    """
    if dtype != "index" or all(sizes_equal(r, ranges[0]) for r in ranges if r is not None):
        return dtype, ranges[0], ()
    if not all(r is not None and r.is_number for r in ranges):
        raise ParseError(f"{what}: positions of ranges {', '.join(size_text(r or 0) for r in ranges)} join only when"
                         " the ranges are equal or numbers")
    known = tuple(r for r in ranges if r is not None)
    return dtype, max(known, key=int), known


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
    around = Segment(()) if anchor is None else Segment((_one_axis(anchor, "unsqueeze"),))
    return Box.make(UnsqueezeOp(new, around, 0 if position is not None else len(around)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(SliceOp, aten=("aten.slice", "aten.split", "aten.split_with_sizes", "aten.chunk"))
IMPORT.known(ConcatOp, aten=("aten.cat", "aten.concat", "aten.stack"))
IMPORT.known(IndexOp, aten=("aten.select",))
for _cls in (BindOp, UnbindOp, SqueezeOp, UnsqueezeOp):
    IMPORT.unsupported(_cls, "the importer writes reshapes as views (ncd.trace.idioms.reshape), not as this box")


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
        dom = Segment(()) if self.source is None else Segment((self.source,))
        return Type((dom,)), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return "[]ᵀ"


def Insert(axis: AxisLike, start: int, stop: int | None = None, step: int = 1, source: AxisLike | None = None) -> Box:
    """Zeros along ``axis`` with the input written at ``start`` (a scalar) or ``start:stop:step`` (axis ``source``)."""
    return Box.make(InsertOp(as_axis(axis), size(start), size(start + 1 if stop is None else stop), size(step),
                             None if source is None else as_axis(source)))


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


@LOWERING.rule(ConcatOp)
def lower_concat(prim: ConcatOp, ctx: RuleContext) -> list[str]:
    dim = ctx.own_dims("cod", 0)[prim.position]
    names = [v.var for v in ctx.args]
    # A learned tensor (a class token) has no batch dimensions while the stream has some:
    # broadcast the leading dimensions first (a no-op view when they already agree).
    n = len(ctx.markers("cod", 0))
    batch = ctx.em.fresh("batch")
    ctx.em.line(f"{batch} = torch.broadcast_shapes({', '.join(f'{v}.shape[:-{n}]' for v in names)})")
    keep = ", ".join(["-1"] * n)
    return [f"torch.cat([{', '.join(f'{v}.expand(*{batch}, {keep})' for v in names)}], dim={dim})"]


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


@COST.rule(IndexOp)
def cost_index(prim: IndexOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


@COST.rule(SliceOp)
def cost_slice(prim: SliceOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    order = tuple(prim.output.name if n == prim.axis.name else n for n in x.order)
    return [replace(x, axes=ctx.out_axes[0], order=order, dense=True)]


@COST.rule(ConcatOp)
def cost_concat(prim: ConcatOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.new(ctx.out_axes[0], grad=any(t.grad for t in ctx.inputs), dtype=prim.dtype)]


# -- backward ------------------------------------------------------------------------------
@BACKWARD.rule(BindOp)
def backward_bind(prim: BindOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(UnbindOp(prim.output, prim.inputs)))


@BACKWARD.rule(UnbindOp)
def backward_unbind(prim: UnbindOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(BindOp(prim.outputs, prim.input)))


@BACKWARD.rule(SqueezeOp)
def backward_squeeze(prim: SqueezeOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(UnsqueezeOp(prim.axis, Segment(()), 0)))


@BACKWARD.rule(UnsqueezeOp)
def backward_unsqueeze(prim: UnsqueezeOp, box: Box, builder: Builder) -> BoxBackward:
    from ncd.analysis.backward import woven_scalar

    squeeze = Box(SqueezeOp(prim.axis))
    before, after = prim.around.axes[: prim.position], prim.around.axes[prim.position:]
    result: Diagram = squeeze
    from ncd.ir.diagram import Weave

    for axis in reversed(after):
        result = Weave(result, axis, (1,), (0,))
    for axis in reversed(before):
        result = Weave(result, axis, (0,), (0,))
    _ = woven_scalar
    return BoxBackward((), result)


@transpose(ConcatOp)
def transpose_concat(prim: ConcatOp, box: Box) -> Diagram:
    """The transpose of a concatenation: one slice of the cotangent per input (positions have none)."""
    from ncd.analysis.backward import route

    if prim.dtype != "float":
        return Identity(Type(()))
    start = sympy.Integer(0)
    parts = []
    for axis in prim.inputs:
        cut = Box(SliceOp(prim.output, start, start + axis.size, sympy.Integer(1), axis))
        from ncd.ir.diagram import Weave

        woven: Diagram = cut
        for a in reversed(prim.after.axes):
            woven = Weave(woven, a, (1,), (1,))
        for a in reversed(prim.before.axes):
            woven = Weave(woven, a, (0,), (0,))
        parts.append(woven)
        start = start + axis.size
    out = Segment(prim.before.axes + (prim.output,) + prim.after.axes)
    return Seq.of(route([out], [0] * len(parts)), Par.of(*parts))


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
