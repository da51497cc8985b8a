"""Element types on wires: a wire held in a narrower element type and read back in the compute type.

``Precision("x k g", "float8")`` is the box a policy puts where a wire changes element type (a cache
stored in fp8 by a model computing in bf16): its value is the wire **stored** as ``element`` and
read back, a real cast there and back where torch has the type:

* ``float64``, ``float32``, ``bfloat16``, ``float16``, ``float8`` (``torch.float8_e4m3fn``): ``x.to(type).to(x.dtype)``;
* ``int8``: symmetric quantisation, ``torch.int8`` values and one float16 scale per position of the axis
  ``per`` (the absolute maximum over the axes after it maps to 127), as :class:`ncd.inference.policy.Policy`
  holds caches;
* ``int4``: the same with values in ``[-8, 7]``; **torch has no 4-bit type**, so the lowered module holds
  them in ``torch.int8`` and lowering says so (:class:`PrecisionWarning` naming the wire).

The type of the wire does not change (the diagram's wires carry float tensors); the box draws as its
element type's short name.

>>> import ncd
>>> from ncd.prims.precision import Precision
>>> box = Precision("x k g", "float8", per="x")
>>> box.text(), str(box.cod)
('fp8', 'x k g')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, BoxBackward
from ncd.prims.structure import cot

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["PrecisionOp", "Precision", "PrecisionWarning", "ELEMENTS", "SHORT"]

#: element types a wire may be held in, and their torch types (``None``: torch has none)
ELEMENTS: dict[str, str | None] = {
    "float64": "torch.float64", "float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16",
    "float8": "torch.float8_e4m3fn", "int8": "torch.int8", "int4": None,
}
#: how a box of each element type is drawn
SHORT = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8": "fp8", "int8": "int8",
         "int4": "int4"}
_QMAX = {"int8": 127, "int4": 7}


class PrecisionWarning(UserWarning):
    """A wire's element type has no torch type: the lowered module holds it in a wider one (said, never silent)."""


@dataclass(frozen=True)
class PrecisionOp(Primitive):
    """``segment`` held as ``element`` and read back (integer types: one scale per position of the axis ``per``)."""

    segment: Segment
    element: str
    per: str | None = None

    op: ClassVar[str] = "precision"
    family: ClassVar[str] = "precision"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        where = f"precision of '{self.segment}'"
        if self.element not in ELEMENTS:
            raise ParseError(f"{where}: unknown element type {self.element!r}; known: {', '.join(ELEMENTS)}")
        if self.segment.dtype != "float":
            raise ParseError(f"{where}: holds float wires, not {self.segment.dtype}")
        if self.per is not None and self.per not in self.segment.names:
            raise ParseError(f"{where}: the scale axis {self.per!r} is not one of its wires")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.segment,)), Type((self.segment,))

    def label(self) -> str:
        return SHORT[self.element]

    def reduced_dims(self) -> tuple[int, ...]:
        """The dimensions (from the end) one integer scale covers: those after ``per`` (every one without it)."""
        n = len(self.segment)
        first = self.segment.index(self.per) + 1 if self.per is not None else 0
        return tuple(range(first - n, 0))


def Precision(segment: TypeLike, element: str, per: str | None = None) -> Box:
    """A wire ``segment`` held in ``element`` (see the module doc)."""
    (seg,) = as_type(segment).segments
    return Box.make(PrecisionOp(seg, element, per))


IMPORT.unsupported(PrecisionOp, "a decoding policy's box: forward traces record real casts, never this one")


@LOWERING.rule(PrecisionOp)
def lower_precision(prim: PrecisionOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    torch_type = ELEMENTS[prim.element]
    if prim.element not in _QMAX:
        return [f"{x}.to({torch_type}).to({x}.dtype)"]
    if torch_type is None:
        warnings.warn(PrecisionWarning(
            f"the wire '{prim.segment}' is held as {prim.element}, which torch has no type for: the lowered module holds"
            f" its values (in [-{_QMAX[prim.element] + 1}, {_QMAX[prim.element]}]) in torch.int8"), stacklevel=2)
        torch_type = "torch.int8"
    q = _QMAX[prim.element]
    dims = prim.reduced_dims()
    amax = f"{x}.detach().abs().amax(dim={dims}, keepdim=True)" if dims else f"{x}.detach().abs()"
    scale = f"(_s := ({amax} / {q}).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny).to({x}.dtype))"
    return [f"torch.clamp(torch.round({x} / {scale}), {-q - 1}, {q}).to({torch_type}).to({x}.dtype) * _s"]


@COST.rule(PrecisionOp)
def cost_precision(prim: PrecisionOp, ctx: CostContext) -> list[Tensor]:
    """A cast there and back: no FLOPs; an integer type's scale is one pass (absolute maximum, divide, multiply)."""
    n = ctx.numel()
    if prim.element in _QMAX:
        ctx.other(3 * n, n)
    return [ctx.like(0, ctx.inputs[0])]


@BACKWARD.rule(PrecisionOp)
def backward_precision(prim: PrecisionOp, box: Box, builder: Builder) -> BoxBackward:
    """As autograd differentiates the lowered casts: a float type's cotangent is held in that type too (the cast back
    rounds it); an integer type's rounding has zero derivative almost everywhere."""
    from ncd.ir.diagram import Seq
    from ncd.prims.structure import DeleteOp, ZerosOp

    out = cot(box.cod)
    if prim.element in _QMAX:
        return BoxBackward((), Seq.of(Box(DeleteOp(out)), Box(ZerosOp(cot(box.dom)))))
    return BoxBackward((), Box(PrecisionOp(out.segments[0], prim.element)))


@DRAWING.rule(PrecisionOp)
def draw_precision(prim: PrecisionOp, ctx: Layout, box: Box) -> Frag:
    """A tag on the wire naming the element type it is held in (``fp8``, ``int4``)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#e8f4e8", name=prim.op, min_w=16.0)
