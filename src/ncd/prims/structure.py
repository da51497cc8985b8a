"""Structural operations: copy, delete, addition, crossings, renames, and save/load of skip tensors
(declared in :mod:`ncd.prims.saving`, imported from here).

>>> import ncd
>>> r = ncd.residual(ncd.Linear("m -> m"))
>>> str(r.dom), str(r.cod)
('m', 'm')
>>> str(ncd.Transpose("y x -> x y").cod)
'x y'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, TypeMismatchError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment, Type, TypeLike, as_type, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import evaluate
from ncd.prims.kinds import transpose
from ncd.prims.linear import split_spec
from ncd.prims.saving import Load, LoadOp, Save, SaveOp  # declared there (save and load), imported from here too

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = [
    "CopyOp",
    "DeleteOp",
    "AddOp",
    "SwapOp",
    "TransposeOp",
    "SaveOp",
    "LoadOp",
    "ZerosOp",
    "Zeros",
    "cot",
    "route",
    "woven_scalar",
    "RenameOp",
    "Rename",
    "Copy",
    "Delete",
    "Add",
    "Swap",
    "Transpose",
    "Save",
    "Load",
    "residual",
]



@dataclass(frozen=True)
class CopyOp(Primitive):
    """Copy a tuple ``n`` times (a dot where wires split)."""

    type: Type
    n: int = 2

    op: ClassVar[str] = "copy"
    weave_policy = weaving.always
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ParseError(f"copy makes at least two copies, not {self.n!r}")

    def signature(self) -> tuple[Type, Type]:
        return self.type, Type(self.type.segments * self.n)

    def label(self) -> str:
        return "•"


@dataclass(frozen=True)
class DeleteOp(Primitive):
    """Discard a tuple."""

    type: Type

    op: ClassVar[str] = "delete"
    weave_policy = weaving.always
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def signature(self) -> tuple[Type, Type]:
        return self.type, Type(())

    def label(self) -> str:
        return "⊸"


@dataclass(frozen=True)
class AddOp(Primitive):
    """Sum of ``n`` equal-typed tensors (wires meeting at dots under a ``+``); scalar, so it weaves."""

    n: int = 2

    op: ClassVar[str] = "add"
    weave_policy = weaving.same_layouts
    zero_dim_operands = True
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ParseError(f"add takes at least two tensors, not {self.n!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((SCALAR,) * self.n), SCALAR_TYPE

    def label(self) -> str:
        return "+"


@dataclass(frozen=True)
class SwapOp(Primitive):
    """A crossing of segments: output segment ``k`` is input segment ``perm[k]``."""

    type: Type
    perm: tuple[int, ...]

    op: ClassVar[str] = "swap"
    weave_policy = weaving.always
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if sorted(self.perm) != list(range(len(self.type))):
            raise ParseError(f"swap: {self.perm} is not a permutation of the {len(self.type)} segments of '{self.type}'")

    def signature(self) -> tuple[Type, Type]:
        return self.type, Type(tuple(self.type.segments[k] for k in self.perm))

    def label(self) -> str:
        return "×"


@dataclass(frozen=True)
class TransposeOp(Primitive):
    """A crossing of wires within one segment: output axis ``k`` is input axis ``perm[k]``."""

    segment: Segment
    perm: tuple[int, ...]

    op: ClassVar[str] = "transpose"
    weave_policy = weaving.woven_kept
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if sorted(self.perm) != list(range(len(self.segment))):
            raise ParseError(f"transpose: {self.perm} is not a permutation of the axes of '{self.segment}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.segment,)), Type((self.segment.with_axes(self.segment.axes[k] for k in self.perm),))

    def label(self) -> str:
        return "⤨"


@dataclass(frozen=True)
class RenameOp(Primitive):
    """Relabel wires: the same tensor, its axes given new names (sizes are kept).

    Needed where one tensor plays two roles, e.g. self-attention's keys ``t -> x``.
    """

    segment: Segment
    names: tuple[str, ...]

    op: ClassVar[str] = "rename"
    weave_policy = weaving.always
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if len(self.names) != len(self.segment):
            raise ParseError(f"rename: {len(self.names)} new names for the {len(self.segment)} axes of '{self.segment}'")

    def signature(self) -> tuple[Type, Type]:
        renamed = tuple(a.renamed(n) for a, n in zip(self.segment.axes, self.names))
        return Type((self.segment,)), Type((self.segment.with_axes(renamed),))

    def label(self) -> str:
        return "↦"


@dataclass(frozen=True)
class ZerosOp(Primitive):
    """Zeros of a type (the cotangent of a deleted wire)."""

    type: Type

    op: ClassVar[str] = "zeros"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"
    weave_policy = weaving.always  # (no inputs: made at the woven axes' sizes in place, :func:`lower_zeros`)

    def signature(self) -> tuple[Type, Type]:
        return Type(()), self.type

    def label(self) -> str:
        return "0"


def Copy(type_: TypeLike, n: int = 2) -> Box:
    """Copy ``type_`` into ``n`` equal tuples."""
    return Box.make(CopyOp(as_type(type_), n))


def Delete(type_: TypeLike) -> Box:
    return Box.make(DeleteOp(as_type(type_)))


def Add(n: int = 2) -> Box:
    """Add ``n`` tensors of the same type."""
    return Box.make(AddOp(n))


def Swap(type_: TypeLike, perm: tuple[int, ...] | list[int] | None = None) -> Box:
    """Cross the segments of ``type_`` (default: reverse them)."""
    t = as_type(type_)
    return Box.make(SwapOp(t, tuple(perm) if perm is not None else tuple(reversed(range(len(t))))))


def Transpose(spec: str) -> Box:
    """Cross wires within a segment, e.g. ``Transpose("y x -> x y")``."""
    left, right = split_spec(spec, "transpose")
    src, dst = parse_type(left), parse_type(right)
    if len(src) != 1 or len(dst) != 1 or sorted(src[0].names) != sorted(dst[0].names):
        raise ParseError(f"transpose spec {spec!r} must reorder the axes of one segment")
    names = list(src[0].names)
    perm = []
    for n in dst[0].names:
        k = names.index(n)
        perm.append(k)
        names[k] = "\0"
    return Box.make(TransposeOp(src[0], tuple(perm)))


def Rename(spec: str) -> Box:
    """Give axes new names, keeping their sizes: ``Rename("t -> x")`` (woven over other axes)."""
    left, right = split_spec(spec, "rename")
    src, dst = parse_type(left), parse_type(right)
    if len(src) != 1 or len(dst) != 1 or len(src[0]) != len(dst[0]) or not src[0].axes:
        raise ParseError(f"rename spec {spec!r} must map the axes of one segment to as many new names, e.g. 't -> x'")
    return Box.make(RenameOp(src[0], dst[0].names))


def residual(branch: Diagram, skip: Diagram | None = None) -> Diagram:
    """``copy → branch ∥ skip → add``: a residual connection around ``branch``.

    ``skip`` (identity by default) must produce the same type as ``branch``.
    """
    if len(branch.dom) != 1:
        raise TypeMismatchError(f"residual: the branch must take one segment, not '{branch.dom}'")
    side = skip if skip is not None else Identity(branch.dom)
    if not branch.cod.same(side.cod):
        raise TypeMismatchError(
            f"residual: the branch gives '{branch.cod}' but the skip path gives '{side.cod}'; they must be equal to add"
        )
    return Copy(branch.dom) >> Par.of(branch, side) >> Add()


def Zeros(type_: TypeLike) -> Box:
    return Box.make(ZerosOp(as_type(type_)))


# -- wiring helpers of backward rules -------------------------------------------------------


def cot(t: Type) -> Type:
    """The cotangent type: the float segments of ``t`` (indices and masks have no gradient)."""
    return Type(tuple(s for s in t if s.dtype == "float"))


def route(segments: Sequence[Segment], picks: Sequence[int]) -> Diagram:
    """Copies, deletions and a crossing taking ``segments`` to ``[segments[k] for k in picks]``."""
    parts: list[Diagram] = []
    produced: list[int] = []
    counts = Counter(picks)  # one pass (was a count per segment: quadratic in a wide route)
    run: list[Segment] = []  # segments passed through since the last copy or deletion: one identity
    for k, seg in enumerate(segments):
        count = counts[k]
        if count == 1:
            run.append(seg)
            produced.append(k)
            continue
        if run:
            parts.append(Identity(Type(tuple(run))))
            run = []
        t = Type((seg,))
        if count == 0:
            parts.append(Box(DeleteOp(t)))
        else:
            parts.append(Box(CopyOp(t, count)))
            produced.extend([k] * count)
    if run:
        parts.append(Identity(Type(tuple(run))))
    result = Par.of(*parts) if parts else Identity(Type(()))
    positions: dict[int, list[int]] = {}  # each segment's copies, in order: a pick takes the first one not taken
    for i, p in enumerate(produced):
        positions.setdefault(p, []).append(i)
    taken: Counter[int] = Counter()
    perm = []
    for k in picks:
        perm.append(positions[k][taken[k]])
        taken[k] += 1
    if perm != list(range(len(perm))):
        result = Seq.of(result, Box(SwapOp(result.cod, tuple(perm))))
    return result


def woven_scalar(box: Box, segment: Segment) -> Diagram:
    """A box on scalars (``add``, ``multiply``, ``f′``) broadcast over every axis of ``segment``."""
    result: Diagram = box
    for axis in reversed(segment.axes):
        result = Weave(result, axis, tuple(0 for _ in box.dom), tuple(0 for _ in box.cod))
    return result


# -- lowering --------------------------------------------------------------------------------
@LOWERING.rule(CopyOp)
def lower_copy(prim: CopyOp, ctx: RuleContext) -> list[str]:
    return [v.var for v in ctx.args] * prim.n


@LOWERING.rule(DeleteOp)
def lower_delete(prim: DeleteOp, ctx: RuleContext) -> list[str]:
    return []


@LOWERING.rule(AddOp)
def lower_add(prim: AddOp, ctx: RuleContext) -> list[str]:
    return [" + ".join(v.var for v in ctx.args)]


@LOWERING.rule(RenameOp)
def lower_rename(prim: RenameOp, ctx: RuleContext) -> list[str]:
    return [ctx.args[0].var]


@LOWERING.rule(SwapOp)
def lower_swap(prim: SwapOp, ctx: RuleContext) -> list[str]:
    return [ctx.args[k].var for k in prim.perm]


@LOWERING.rule(TransposeOp)
def lower_transpose(prim: TransposeOp, ctx: RuleContext) -> list[str]:
    src = ctx.own_dims("dom", 0)
    dst = ctx.own_dims("cod", 0)
    # output own axis k is input own axis perm[k]; woven axes stay where they are
    if all(src[p] == dst[k] for k, p in enumerate(prim.perm)):
        return [ctx.args[0].var]
    sources = tuple(src[p] for p in prim.perm)
    return [f"torch.movedim({ctx.args[0].var}, {sources}, {tuple(dst)})"]


@LOWERING.rule(ZerosOp)
def lower_zeros(prim: ZerosOp, ctx: RuleContext) -> list[str]:
    """Zeros at the sizes of every axis the value has: the woven ones too (in place, or in front while a woven
    sub-diagram runs: ``em.leading``).  A woven 0 (a stop-gradient's or a cast's zero cotangent) was ``torch.zeros(())``,
    so a parameter's gradient read only through one came out 0-dim, and a reshape of it raised."""
    lead = tuple(ctx.em.leading)
    return [f"torch.zeros({tuple(evaluate(a.size, what=f'axis {a.name}') for a in (*lead, *axes))})"
            for axes in ctx.out_axes]


# -- costs (no arithmetic but ``+``) ---------------------------------------------------------
@COST.rule(CopyOp)
def cost_copy(prim: CopyOp, ctx: CostContext) -> list[Tensor]:
    return [t.relabel(axes) for t, axes in zip(ctx.inputs * prim.n, ctx.out_axes)]


@COST.rule(DeleteOp)
def cost_delete(prim: DeleteOp, ctx: CostContext) -> list[Tensor]:
    return []


@COST.rule(AddOp)
def cost_add(prim: AddOp, ctx: CostContext) -> list[Tensor]:
    first = ctx.inputs[0]
    full = all(a.name in first.names for a in ctx.out_axes[0])
    ctx.other((len(ctx.inputs) - 1) * ctx.numel(), sympy.Integer(0))
    return [ctx.like(0, first) if full else ctx.output(0)]


@COST.rule(SwapOp)
def cost_swap(prim: SwapOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[k].relabel(axes) for k, axes in zip(prim.perm, ctx.out_axes)]


@COST.rule(TransposeOp)
def cost_transpose(prim: TransposeOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


# -- backward ------------------------------------------------------------------------------
@BACKWARD.rule(CopyOp)
def backward_copy(prim: CopyOp, box: Box, builder: Builder) -> BoxBackward:
    """The transpose of a copy is a sum: each segment's cotangents from every copy are added."""
    segs = list(cot(prim.type))
    k, n = len(segs), prim.n
    if n == 1 or not segs:
        return BoxBackward((), Identity(cot(box.cod)))
    picks = [c * k + s for s in range(k) for c in range(n)]
    adds = [woven_scalar(Box(AddOp(n)), seg) for seg in segs]
    return BoxBackward((), Seq.of(route(segs * n, picks), Par.of(*adds)))


@BACKWARD.rule(DeleteOp)
def backward_delete(prim: DeleteOp, box: Box, builder: Builder) -> BoxBackward:
    """A deleted wire gets a zero cotangent."""
    t = cot(prim.type)
    return BoxBackward((), Box(ZerosOp(t)) if len(t) else Identity(Type(())))


@transpose(AddOp)
def transpose_add(prim: AddOp, box: Box) -> Diagram:
    """The transpose of a sum is a copy."""
    return Box(CopyOp(SCALAR_TYPE, prim.n))


@BACKWARD.rule(SwapOp)
def backward_swap(prim: SwapOp, box: Box, builder: Builder) -> BoxBackward:
    floats = [j for j, seg in enumerate(prim.type) if seg.dtype == "float"]
    out_floats = [k for k in prim.perm if prim.type[k].dtype == "float"]  # input index of each float output
    perm = tuple(out_floats.index(j) for j in floats)
    cods = cot(box.cod)
    return BoxBackward((), Box(SwapOp(cods, perm)) if perm != tuple(range(len(perm))) else Identity(cods))


@transpose(TransposeOp)
def transpose_transpose(prim: TransposeOp, box: Box) -> Diagram:
    perm = prim.perm
    inverse = tuple(perm.index(k) for k in range(len(perm)))
    return Box(TransposeOp(box.cod[0], inverse))


@COST.rule(RenameOp)
def cost_rename(prim: RenameOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    names = dict(zip(prim.segment.names, prim.names))
    return [replace(x, axes=ctx.out_axes[0], order=tuple(names.get(n, n) for n in x.order))]


@BACKWARD.rule(RenameOp)
def backward_rename(prim: RenameOp, box: Box, builder: Builder) -> BoxBackward:
    seg = box.cod[0]
    return BoxBackward((), Box(RenameOp(seg, prim.segment.names)))


@COST.rule(ZerosOp)
def cost_zeros(prim: ZerosOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.new(axes, grad=False) for axes in ctx.out_axes]


BACKWARD.unsupported(ZerosOp, SECOND_ORDER)

# -- import: the importer's wiring (ncd.trace.wiring) routes values with copies, deletions and crossings ----
IMPORT.known(CopyOp, DeleteOp, SwapOp, by="ncd.trace.wiring")
IMPORT.known(AddOp, aten=("aten.add", "aten.sub"))
IMPORT.known(TransposeOp, aten=("aten.permute", "aten.transpose", "aten.t"))
IMPORT.unsupported(RenameOp, "the importer names each value's axes when it creates them: no renaming box is needed")
IMPORT.unsupported(ZerosOp, NOT_TRACED)

