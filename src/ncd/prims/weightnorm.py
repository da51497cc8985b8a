"""Weight normalisation: a learned tensor written as a direction and a gain, ``w = g · v / ‖v‖``.

``WeightNorm("o c k", "o")`` takes the direction ``v`` (``o c k``) and the gain ``g`` (one number per
entry of the kept axis ``o``) to the weight ``v · g / ‖v‖₂``, the 2-norm taken over every other axis of
``v`` — ``torch._weight_norm(v, g, dim)``, the parametrization ``nn.utils.parametrizations.weight_norm``
puts on a layer's weight (EnCodec's, DAC's, HiFi-GAN's and wav2vec 2.0's convolutions).  One box
where the norm, the ratio and the product would be three, with its own derivative box
(:class:`WeightNormBackwardOp`: ``∂v = (g/‖v‖)(∂w − v · Σ(∂w ⊙ v)/‖v‖²)``, ``∂g = Σ(∂w ⊙ v)/‖v‖``).

One module holds every rule of the family: declaration, lowering, costs, backward, drawing and
import (recognised by :mod:`ncd.trace.boxes_ranking`).

>>> import ncd
>>> box = ncd.WeightNorm("o c k", "o")
>>> str(box.dom), str(box.cod)
('o c k, o', 'o c k')
>>> ncd.WeightNorm("o c", "d")
Traceback (most recent call last):
...
ncd.errors.ParseError: weight norm of 'o c': the gain's axis d is not one of its axes
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward

if TYPE_CHECKING:
    from ncd.analysis.layout import Tensor
    from ncd.analysis.metrics import CostContext
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["WeightNormOp", "WeightNormBackwardOp", "WeightNorm"]


def _check(weight: Segment, keep: int, gain: Segment | None, what: str) -> None:
    if len(weight.axes) < 2 or weight.repeated or weight.dtype != "float":
        raise ParseError(f"{what} of '{weight}': a float tensor of at least two distinct axes")
    if not 0 <= keep < len(weight.axes):
        raise ParseError(f"{what} of '{weight}': no axis at position {keep}")
    if gain is not None and not (gain.dtype == "float" and (gain.axes == (weight.axes[keep],) or (
            len(gain.axes) == len(weight.axes) and gain.axes[keep] == weight.axes[keep] and not gain.repeated
            and all(a.size == 1 for k, a in enumerate(gain.axes) if k != keep)))):
        raise ParseError(f"{what} of '{weight}': the gain '{gain}' is neither its axis {weight.axes[keep].name} nor that"
                         " axis with unit axes in the others' places")


def _gain(weight: Segment, keep: int, gain: Segment | None) -> Segment:
    return gain if gain is not None else Segment((weight.axes[keep],))


@dataclass(frozen=True)
class WeightNormOp(Primitive):
    """``g · v / ‖v‖₂``: ``(weight, gain) -> weight``, the norm over every axis of ``weight`` but the one at position
    ``keep`` (``torch._weight_norm(v, g, keep)``); the gain is that axis (``gain`` None) or, as the parametrization
    keeps it, that axis with unit axes in the others' places (``o 1 1``)."""

    weight: Segment
    keep: int = 0
    gain: Segment | None = None

    op: ClassVar[str] = "weight_norm"
    family: ClassVar[str] = "weightnorm"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _check(self.weight, self.keep, self.gain, "weight norm")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.weight, _gain(self.weight, self.keep, self.gain))), Type((self.weight,))

    def label(self) -> str:
        return "g·v/‖v‖"


@dataclass(frozen=True)
class WeightNormBackwardOp(Primitive):
    """The gradients of :class:`WeightNormOp` from its inputs ``v``, ``g`` and the output's cotangent ``∂w``:
    ``(weight, gain, weight) -> (weight, gain)``."""

    weight: Segment
    keep: int = 0
    gain: Segment | None = None

    op: ClassVar[str] = "weight_norm_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _check(self.weight, self.keep, self.gain, "weight norm backward")

    def signature(self) -> tuple[Type, Type]:
        gain = _gain(self.weight, self.keep, self.gain)
        return Type((self.weight, gain, self.weight)), Type((self.weight, gain))

    def label(self) -> str:
        return "g·v/‖v‖ᵀ"


def WeightNorm(weight: TypeLike, gain: str) -> Box:
    """The weight ``g · v / ‖v‖₂`` of a direction ``v`` over ``weight`` and a gain ``g`` over its axis named ``gain``
    (the 2-norm over every other axis), as ``nn.utils.parametrizations.weight_norm`` computes a layer's weight."""
    typ = as_type(weight)
    if len(typ) != 1:
        raise ParseError(f"weight norm takes one segment, not '{typ}'")
    seg = typ[0]
    if gain not in seg.names:
        raise ParseError(f"weight norm of '{seg}': the gain's axis {gain} is not one of its axes")
    return Box.make(WeightNormOp(seg, list(seg.names).index(gain)))


# -- lowering -----------------------------------------------------------------------------------
def _dims(prim: WeightNormOp | WeightNormBackwardOp) -> tuple[tuple[int, ...], str]:
    """The axes but the kept one as dimensions from the end (woven axes lead every operand), and the index giving
    a gain of the kept axis alone unit axes in the others' places."""
    n = len(prim.weight.axes)
    others = tuple(k - n for k in range(n) if k != prim.keep)
    unit = "" if prim.gain is not None and len(prim.gain.axes) == n else "[..., :" + ", None" * (n - 1 - prim.keep) + "]"
    return others, unit


@LOWERING.rule(WeightNormOp)
def lower_weight_norm(prim: WeightNormOp, ctx: RuleContext) -> list[str]:
    """``v · (g / ‖v‖)`` over the box's own axes, the last ones (as ``torch._weight_norm`` computes it; a diagram's
    module takes leading axes more)."""
    v, g = (a.var for a in ctx.args)
    others, unit = _dims(prim)
    return [f"{v} * ({g}{unit} / torch.linalg.vector_norm({v}, dim={others}, keepdim=True))"]


@LOWERING.rule(WeightNormBackwardOp)
def lower_weight_norm_backward(prim: WeightNormBackwardOp, ctx: RuleContext) -> list[str]:
    """``s = Σ(∂w ⊙ v)`` and ``n = ‖v‖`` over the other axes: ``∂v = (g/n)(∂w − v·s/n²)``, ``∂g = s/n``."""
    v, g, dw = (a.var for a in ctx.args)
    others, unit = _dims(prim)
    norm = f"torch.linalg.vector_norm({v}, dim={others}, keepdim=True)"
    dot = f"({dw} * {v}).sum(dim={others}, keepdim=True)"
    keep = "" if unit else ", keepdim=True"  # (a gain with unit axes: its gradient keeps them)
    return [f"{g}{unit} / {norm} * ({dw} - {v} * ({dot} / {norm}.square()))",
            f"(({dw} * {v}).sum(dim={others}{keep}) / torch.linalg.vector_norm({v}, dim={others}{keep}))"]


# -- costs: the norm keeps v and the norms, the ratio g and the norms, the product v and the ratios -----------
@COST.rule(WeightNormOp)
def cost_weight_norm(prim: WeightNormOp, ctx: CostContext) -> list[Tensor]:
    """``|v|²``, a sum and a product per entry, a ratio per gain; the backward's two products, sum and difference per
    entry."""
    v, g = ctx.inputs
    out = ctx.output(0)
    n, m = v.numel, g.numel
    if v.grad or g.grad:
        ctx.save(v, g, ctx.new(g.axes, grad=False), ctx.new(g.axes, grad=False))
    ctx.other(3 * n + m, (5 * n + 3 * m) if (v.grad or g.grad) else sympy.Integer(0))
    return [out]


@COST.rule(WeightNormBackwardOp)
def cost_weight_norm_backward(prim: WeightNormBackwardOp, ctx: CostContext) -> list[Tensor]:
    n, m = ctx.inputs[0].numel, ctx.inputs[1].numel
    ctx.other(7 * n + 3 * m, sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


# -- backward -----------------------------------------------------------------------------------
@BACKWARD.rule(WeightNormOp)
def backward_weight_norm(prim: WeightNormOp, box: Box, builder: object) -> BoxBackward:
    return BoxBackward((("in", 0), ("in", 1)), Box(WeightNormBackwardOp(prim.weight, prim.keep, prim.gain)))


BACKWARD.unsupported(WeightNormBackwardOp, SECOND_ORDER)


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(WeightNormOp, WeightNormBackwardOp)
def draw_weight_norm(prim: WeightNormOp | WeightNormBackwardOp, ctx: Layout, box: Box) -> Frag:
    """A box taking the direction and the gain to the weight: ``g·v/‖v‖`` (``ᵀ``: its derivative)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    parts: tuple[Piece, ...] = (Piece("g·v/‖v‖"),)
    if isinstance(prim, WeightNormBackwardOp):
        parts += (Piece("T", script=1),)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name=prim.op)


# -- import: recognised by ncd.trace.boxes_ranking -------------------------------------------------------
IMPORT.known(WeightNormOp, aten=("aten._weight_norm",), by="ncd.trace.boxes_ranking")
IMPORT.unsupported(WeightNormBackwardOp, NOT_TRACED)
