"""Concatenation: segments joined along one axis each (``⧺``); the output size is the sum (a movement box).

* ``Concat("c, c -> d")`` joins segments along one axis each; the output size is the sum.
  Without ``->`` the output keeps the common name: ``Concat("c, c")`` gives ``c:2*c``.
* Whole segments may be written when they share their other axes: ``Concat("c x y, c x y -> d x y")``.

Its transpose slices the cotangent once per input (:class:`~ncd.prims.slicing.SliceOp`).

>>> import ncd
>>> str(ncd.Concat("c, c").cod)
'c:2*c'
>>> str(ncd.Concat("c x, c x -> d x").cod)
'd:2*c x'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError, derived_size
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Axis, Dtype, Segment, Type, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, IMPORT, LOWERING
from ncd.ir.size import Size, size_text, sizes_equal
from ncd.prims.kinds import transpose
from ncd.prims.movement_specs import _contradicts, _default_sized, _segment, _sizes
from ncd.prims.slicing import SliceOp

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["ConcatOp", "Concat", "joined_range"]


@dataclass(frozen=True)
class ConcatOp(Primitive):
    """Concatenate along one axis into ``output``, whose size is the sum of ``inputs``; linear.

    Input ``j`` is the segment ``before + (inputs[j],) + after``; the output is
    ``before + (output,) + after`` (``before`` and ``after`` are the axes every input shares).
    """

    inputs: tuple[Axis, ...]
    output: Axis
    before: Segment = SCALAR
    after: Segment = SCALAR
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
        if _contradicts(total, self.output.size) or self.output.size.is_Integer and total.free_symbols:
            # (an output of a whole number joining a wire sized by a symbol holds the number at one size only: it
            # derives the inputs' sum, ``cat([x[:, :1], x], 1)`` of a symbol ``t``'s wire ``t + 1``, followed by
            # ncd.trace.symbolic)
            raise derived_size(SizeError(
                f"concat into {self.output.name}: the output has size {size_text(self.output.size)} but the inputs"
                f" {_sizes(self.inputs)} add up to {size_text(total)}"
            ), (self.output.name, self.output.size, total))

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


# -- constructor -----------------------------------------------------------------------------
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

    >>> from ncd.ir.size import size
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


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(ConcatOp, aten=("aten.cat", "aten.concat", "aten.stack"))


# -- lowering, costs and transpose -------------------------------------------------------------
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


@COST.rule(ConcatOp)
def cost_concat(prim: ConcatOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.new(ctx.out_axes[0], grad=any(t.grad for t in ctx.inputs), dtype=prim.dtype)]


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
        woven: Diagram = cut
        for a in reversed(prim.after.axes):
            woven = Weave(woven, a, (1,), (1,))
        for a in reversed(prim.before.axes):
            woven = Weave(woven, a, (0,), (0,))
        parts.append(woven)
        start = start + axis.size
    out = Segment(prim.before.axes + (prim.output,) + prim.after.axes)
    return Seq.of(route([out], [0] * len(parts)), Par.of(*parts))
