"""Group normalisation: channels split into groups, each normalised over its channels and every spatial position.

``GroupNorm("c y x", groups=2)`` normalises each of the 2 groups of ``c/2`` channels over those
channels and ``y x`` (``F.group_norm``), then scales and shifts each channel by a learned weight
and bias (``affine=False``: none).  The first axis is the channel axis; batch axes are woven past.
It is drawn as the paper draws normalisation (a circle on the normalised wires), labelled ``GN``.

One module holds every rule: declaration, lowering, costs, drawing; its backward pass is
declared unsupported (it would need the forward pass's group statistics, which ``ncd.backward``
does not store yet) and says so.

>>> import ncd
>>> str((ncd.Identity.of("b c y x") >> ncd.GroupNorm("c y x", 2)).cod)
'b c y x'
>>> ncd.GroupNorm("c:6 y", 4)
Traceback (most recent call last):
...
ncd.errors.SizeError: group norm of 'c:6 y': 4 groups do not divide the 6 channels of c
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING
from ncd.ir.size import Size, size_text

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["GroupNormOp", "GroupNorm", "BACKWARD_UNSUPPORTED"]

BACKWARD_UNSUPPORTED = "group norm's backward needs the forward pass's per-group statistics, which ncd.backward does not store"


@dataclass(frozen=True)
class GroupNormOp(Primitive):
    """Normalise ``groups`` groups of the channel axis (``axes[0]``) over their channels and the other ``axes``."""

    axes: Segment
    groups: int
    eps: float = 1e-5
    affine: bool = True

    op: ClassVar[str] = "groupnorm"
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True
    weave_policy = weaving.own_last

    def __post_init__(self) -> None:
        where = f"group norm of '{self.axes}'"
        if not self.axes.axes or self.axes.repeated or self.axes.dtype != "float":
            raise ParseError(f"{where}: normalises distinct axes of a float tensor, channel first")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ParseError(f"{where}: groups must be a positive whole number, not {self.groups!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 <= self.eps < float("inf"):
            raise ParseError(f"{where}: eps must be a finite non-negative number, not {self.eps!r}")
        c = self.channel.size
        if not c.free_symbols and (c % self.groups != 0):
            raise SizeError(f"{where}: {self.groups} groups do not divide the {size_text(c)} channels of {self.channel.name}")

    @property
    def channel(self) -> Axis:
        return self.axes.axes[0]

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": (self.channel.size,), "bias": (self.channel.size,)} if self.affine else {}

    def label(self) -> str:
        return "GN"


def GroupNorm(axes: TypeLike, groups: int, eps: float = 1e-5, affine: bool = True) -> Box:
    """Group normalisation over ``axes`` (channel first: ``"c y x"``), ``groups`` groups of channels (``nn.GroupNorm``)."""
    typ = as_type(axes)
    if len(typ) != 1:
        raise ParseError(f"group norm takes one segment, not '{typ}'")
    return Box.make(GroupNormOp(typ[0], groups, float(eps), affine))


@LOWERING.rule(GroupNormOp)
def lower_groupnorm(prim: GroupNormOp, ctx: RuleContext) -> list[str]:
    """``nn.GroupNorm`` on ``(N, C, *)``: leading axes folded into ``N`` (called directly when there is exactly one)."""
    shape = [ctx.int(a.size, f"axis {a.name}") for a in prim.axes]
    options = ("" if prim.eps == 1e-5 else f", eps={prim.eps!r}") + ("" if prim.affine else ", affine=False")
    hint = "gn" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.GroupNorm({prim.groups}, {shape[0]}{options})")
    x = ctx.args[0].var
    folded = f"{module}({x}.reshape(-1, {', '.join(map(str, shape))})).view({x}.shape)"
    return [f"({module}({x}) if {x}.dim() == {len(shape) + 1} else {folded})"]


@COST.rule(GroupNormOp)
def cost_groupnorm(prim: GroupNormOp, ctx: CostContext) -> list[Tensor]:
    """Autograd keeps the input (the weight is a parameter) and each group's mean and reciprocal deviation."""
    x = ctx.inputs[0]
    if ctx.grad:
        stats = tuple(a for a in ctx.out_axes[0] if a.name not in prim.axes.names)
        group = Axis("groups", sympy.Integer(prim.groups))
        ctx.save(x if x.contiguous else ctx.new(x.axes, grad=x.grad), ctx.new(stats + (group,), grad=False),
                 ctx.new(stats + (group,), grad=False))
    n = ctx.numel()
    ctx.other(7 * n, 10 * n)
    return [ctx.output(0)]


@DRAWING.rule(GroupNormOp)
def draw_groupnorm(prim: GroupNormOp, ctx: Layout, box: Box) -> Frag:
    """The paper's normalisation circle on the normalised wires, ``GN`` inside (bold: learned scale)."""
    from ncd.render.pictograms_more import draw_norm

    return draw_norm(ctx, box)


BACKWARD.unsupported(GroupNormOp, BACKWARD_UNSUPPORTED)


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(GroupNormOp, by="ncd.trace.boxes_channels")
