"""The stop-gradient: a wire's values passed on unchanged, cut from differentiation.

``Detach()`` is a scalar float map ``() -> ()`` woven over a wire's axes, like an elementwise function: its
value is its input (``x.detach()``, no copy), its derivative zero.  A straight-through estimator is
``x + sg(q(x) - x)`` (the rounding ``q`` on the way forward, the identity on the way back); a VQ-VAE's quantiser
``z + sg(e - z)``; a target network's output or an EMA teacher's, read under ``torch.no_grad()``, is ``sg`` of it.
The importer (:mod:`ncd.trace`) draws one where the model cuts a value of its inputs or parameters from autograd.

* lowering: ``x.detach()``;
* backward: nothing flows back (the output's cotangent is deleted, the input's is zeros);
* cost: no FLOPs, no memory (a view of its input), nothing kept for the backward, a result taking no gradient;
* drawing: ``sg`` above the wires, as an elementwise function's glyph.

>>> import ncd
>>> from ncd.prims.detach import Detach
>>> d = ncd.Identity.of("b t m") >> Detach()
>>> str(d.cod), [b.text() for b in d.boxes()]
('b t m', ['sg'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING, BoxBackward
from ncd.prims.structure import DeleteOp, ZerosOp, cot

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["DetachOp", "Detach"]

#: how the box is drawn: ``sg``, the stop-gradient of the papers using it (BYOL, SimSiam, VQ-VAE)
GLYPH = "sg"


@dataclass(frozen=True)
class DetachOp(Primitive):
    """``() -> ()`` on floats: the value, with derivative zero (woven over a wire's axes)."""

    segment: Segment = SCALAR

    op: ClassVar[str] = "detach"
    family: ClassVar[str] = "detach"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.segment.axes or self.segment.dtype != "float":
            raise ParseError(f"detach takes a float scalar segment '' (woven over the wire's axes), not '{self.segment}'"
                             f"{'' if self.segment.dtype == 'float' else f' of {self.segment.dtype}'}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.segment,)), Type((self.segment,))

    def label(self) -> str:
        return GLYPH


def Detach(source: TypeLike = "") -> Box:
    """The stop-gradient of a float scalar (``""``), woven over whatever wire it is applied to."""
    typ = as_type(source) if source else Type((SCALAR,))
    if len(typ) != 1:
        raise ParseError(f"detach takes one segment, not '{typ}'")
    return Box.make(DetachOp(typ[0]))


IMPORT.known(DetachOp, by="ncd.trace.idioms_wires")


@LOWERING.rule(DetachOp)
def lower_detach(prim: DetachOp, ctx: RuleContext) -> list[str]:
    return [f"{ctx.args[0].var}.detach()"]


@COST.rule(DetachOp)
def cost_detach(prim: DetachOp, ctx: CostContext) -> list[Tensor]:
    """No FLOPs, no new memory (``detach`` is a view of its input), nothing kept: its result takes no gradient."""
    return [replace(ctx.inputs[0].relabel(ctx.out_axes[0]), grad=False)]


@BACKWARD.rule(DetachOp)
def backward_detach(prim: DetachOp, box: Box, builder: Builder) -> BoxBackward:
    """Nothing flows back: the output's cotangent is deleted and the input's is zeros (autograd's ``None``)."""
    return BoxBackward((), Seq.of(Box(DeleteOp(cot(box.cod))), Box(ZerosOp(cot(box.dom)))))


@SCALAR_DRAWING.rule(DetachOp)
def draw_detach(prim: DetachOp, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``sg`` above the wires, as an elementwise function's glyph (the wires pass through unchanged)."""
    from ncd.render.pictograms import glyph_through
    from ncd.render.typeset import typeset_text

    return glyph_through(ctx, dom, typeset_text(GLYPH), name=prim.op)
