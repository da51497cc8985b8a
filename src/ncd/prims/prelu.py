"""PReLU: a leaky ReLU whose negative slope is learned, one slope per channel or one for the whole tensor.

``PReLU("c")`` multiplies the negative entries of each channel ``c`` by that channel's learned slope (``nn.PReLU(c)``);
``PReLU()`` (no axis) learns one slope for every entry (``nn.PReLU()``).  The other wires are woven past.  Autograd
keeps the input (the slopes are parameters); the backward pass is ``PReLUᵀ``: ``∂x = g`` where ``x > 0`` and
``a·g`` elsewhere, and the slope's gradient ``x·g`` where ``x ≤ 0``, summed over every other wire.

>>> import ncd
>>> d = ncd.Identity.of("b c t") >> ncd.PReLU("c")
>>> str(d.cod), d.prim.label() if hasattr(d, "prim") else [b.prim.label() for b in d.boxes()]
('b c t', ['PReLU'])
>>> ncd.PReLU("c h")
Traceback (most recent call last):
...
ncd.errors.ParseError: PReLU of 'c h': one channel axis or none, not 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR_TYPE, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["PReLUOp", "PReLU", "PReLUBackwardOp"]


def _check(axes: Segment) -> None:
    where = f"PReLU of '{axes}'"
    if len(axes.axes) > 1:
        raise ParseError(f"{where}: one channel axis or none, not {len(axes.axes)}")
    if axes.dtype != "float":
        raise ParseError(f"{where}: acts on a float tensor, not {axes.dtype}")


@dataclass(frozen=True)
class PReLUOp(Primitive):
    """``max(x, 0) + a·min(x, 0)`` with ``a`` learned per entry of ``axes`` (one channel axis, or none: one slope)."""

    axes: Segment

    op: ClassVar[str] = "prelu"
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True
    weave_policy = weaving.same_inputs_and_output

    def __post_init__(self) -> None:
        _check(self.axes)

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": (self.axes.axes[0].size,) if self.axes.axes else (sympy.Integer(1),)}

    def label(self) -> str:
        return "PReLU"


def PReLU(axes: TypeLike = "") -> Box:
    """A leaky ReLU with learned slopes, one per entry of the channel axis ``axes`` (none: one slope; ``nn.PReLU``)."""
    typ = as_type(axes) if axes else SCALAR_TYPE
    if len(typ) != 1:
        raise ParseError(f"PReLU takes one segment, not '{typ}'")
    return Box.make(PReLUOp(typ[0]))


@dataclass(frozen=True)
class PReLUBackwardOp(Primitive):
    """``PReLUᵀ``: ``(x, a, g) ↦ (∂x, x·g where x ≤ 0)``; the slope's gradient is the second, summed over the rest."""

    axes: Segment

    op: ClassVar[str] = "prelu_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _check(self.axes)

    def signature(self) -> tuple[Type, Type]:
        x = self.axes
        return Type((x, x, x)), Type((x, x))

    def label(self) -> str:
        return "PReLUᵀ"


# -- lowering: F.prelu takes its channels at dim 1 --------------------------------------------
def _channels_at_one(ctx: RuleContext, x: str, call: str) -> str:
    """``call`` (``{}``: the input) on ``x`` with the channel axis moved to dim 1 and back (dims counted from the end:
    the module may be called with leading batch dims; a lone channel axis gets a leading dim)."""
    if not ctx.prim.axes.axes:  # type: ignore[attr-defined]
        return call.format(x)
    d = ctx.own_dims("dom", 0)[0]
    moved = call.format(f"{x}.movedim({d}, 1)") + f".movedim(1, {d})"
    if len(ctx.markers("dom", 0)) > 1:
        return moved
    return f"({moved} if {x}.dim() > 1 else {call.format(f'{x}[None]')}[0])"


@LOWERING.rule(PReLUOp)
def lower_prelu(prim: PReLUOp, ctx: RuleContext) -> list[str]:
    size = ctx.int(prim.axes.axes[0].size, f"axis {prim.axes.axes[0].name}") if prim.axes.axes else 1
    hint = "prelu" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.PReLU({size})" if size != 1 else "nn.PReLU()")
    return [_channels_at_one(ctx, ctx.args[0].var, module + "({})")]


@LOWERING.rule(PReLUBackwardOp)
def lower_prelu_backward(prim: PReLUBackwardOp, ctx: RuleContext) -> list[str]:
    """The woven axes lead (the policy moves them to the front), so the slopes broadcast along the last axis."""
    x, a, g = (v.var for v in ctx.args)
    return [f"torch.where({x} > 0, {g}, {a} * {g})", f"torch.where({x} > 0, 0.0, {x} * {g})"]


# -- costs: what autograd keeps ---------------------------------------------------------------
@COST.rule(PReLUOp)
def cost_prelu(prim: PReLUOp, ctx: CostContext) -> list[Tensor]:
    """The input is kept (the slopes are parameters); the output is laid out like the input."""
    x = ctx.inputs[0]
    n = ctx.numel()
    if ctx.grad:
        ctx.save(x)
    ctx.other(2 * n, 4 * n if ctx.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@COST.rule(PReLUBackwardOp)
def cost_prelu_backward(prim: PReLUBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(4 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


# -- backward ---------------------------------------------------------------------------------
@BACKWARD.rule(PReLUOp)
def backward_prelu(prim: PReLUOp, box: Box, builder: object) -> BoxBackward:
    """``PReLUᵀ`` reads the stored input and the slopes: ``∂x`` and the slopes' gradient."""
    return BoxBackward((("in", 0), ("param", "weight")), Box(PReLUBackwardOp(prim.axes)), ("weight",))


BACKWARD.unsupported(PReLUBackwardOp, SECOND_ORDER)

# -- drawing ----------------------------------------------------------------------------------
@DRAWING.rule(PReLUOp)
def draw_prelu(prim: PReLUOp, ctx: Layout, box: Box) -> Frag:
    """Its label in a box on the wires, bold as every learned box."""
    from ncd.render.pictograms import draw_fallback

    return draw_fallback(ctx, box)


# -- import: aten.prelu with a parameter of one slope or one per channel (ncd.trace.boxes) --------
IMPORT.known(PReLUOp, by="ncd.trace.boxes_channels")
IMPORT.unsupported(PReLUBackwardOp, NOT_TRACED)
