"""Structural operations: copy, delete, addition, crossings, and save/load of skip tensors.

>>> import ncd
>>> r = ncd.residual(ncd.Linear("m -> m"))
>>> str(r.dom), str(r.cod)
('m', 'm')
>>> str(ncd.Transpose("y x -> x y").cod)
'x y'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError, TypeMismatchError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type, TypeLike, as_type, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.size import Size, SizeLike, size, size_text
from ncd.prims.linear import split_spec

__all__ = [
    "CopyOp",
    "DeleteOp",
    "AddOp",
    "SwapOp",
    "TransposeOp",
    "SaveOp",
    "LoadOp",
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

SCALAR = Type((Segment(()),))


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
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ParseError(f"add takes at least two tensors, not {self.n!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment(()),) * self.n), SCALAR

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
class SaveOp(Primitive):
    """Store the input under ``key`` (indexed by ``index``, e.g. the repetition ``λ``) and pass it on."""

    type: Type
    key: str
    index: Size | None = None

    op: ClassVar[str] = "save"
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def signature(self) -> tuple[Type, Type]:
        return self.type, self.type

    def label(self) -> str:
        return "→" + self.slot()

    def slot(self) -> str:
        return self.key if self.index is None else f"{self.key}_{size_text(self.index)}"


@dataclass(frozen=True)
class LoadOp(Primitive):
    """Bring back the tensor stored under ``key`` (and ``index``); it takes no input.

    Put it beside the wires passing through: ``Identity.of("c x") @ Load("c x", "C", i)``.
    """

    type: Type
    key: str
    index: Size | None = None

    op: ClassVar[str] = "load"
    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def signature(self) -> tuple[Type, Type]:
        return Type(()), self.type

    def label(self) -> str:
        return self.slot() + "→"

    def slot(self) -> str:
        return self.key if self.index is None else f"{self.key}_{size_text(self.index)}"


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


def Save(type_: TypeLike, key: str, index: SizeLike | None = None) -> Box:
    """``→ C_λ``: store the tensor for a later :func:`Load` (the U-Net's skip connections)."""
    return Box.make(SaveOp(as_type(type_), key, None if index is None else size(index)))


def Load(type_: TypeLike, key: str, index: SizeLike | None = None) -> Box:
    """``C_λ →``: bring back a tensor stored by :func:`Save` (it takes no input)."""
    return Box.make(LoadOp(as_type(type_), key, None if index is None else size(index)))


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
