"""Tensors that take no input: learned tensors (positions, class tokens) and fixed sinusoidal positions.

A learned tensor is a bold box with no input wires; adding it to the token stream is the
paper's learned positional encoding.

>>> import ncd
>>> pos = ncd.Parameter("~t m", name="P")
>>> str(pos.dom) == "" and str(pos.cod)
't̅ m'
>>> add = (ncd.Identity.of("~t m") @ ncd.Sinusoidal("~t m")) >> ncd.Add()
>>> str(add.cod)
't̅ m'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type, TypeLike
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import SymbolicSize, evaluate
from ncd.prims.opaque import Parameter, _one_segment  # Parameter's home is beside ParameterOp
from ncd.prims.structure import DeleteOp, cot

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["SinusoidalOp", "Sinusoidal", "Parameter"]


@dataclass(frozen=True)
class SinusoidalOp(Primitive):
    """The fixed sinusoidal position encoding of *Attention Is All You Need* over ``position feature`` axes."""

    segment: Segment
    base: float = 10000.0

    op: ClassVar[str] = "sinusoidal"
    family: ClassVar[str] = "constant"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if len(self.segment) != 2:
            raise ParseError(f"sinusoidal positions need exactly two axes (position, feature), not '{self.segment}'")
        if isinstance(self.base, bool) or not isinstance(self.base, (int, float)) or not 0 < self.base < float("inf"):
            raise ParseError(f"sinusoidal positions need a finite positive base, not {self.base!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((self.segment,))

    def label(self) -> str:
        return "∿"

    def hint(self) -> str:
        return "positions"


def Sinusoidal(type_: TypeLike, base: float = 10000.0) -> Box:
    """Fixed sinusoidal positions ``PE[t, 2i] = sin(t / base^(2i/m))``, ``PE[t, 2i+1] = cos(...)``."""
    return Box.make(SinusoidalOp(_one_segment(type_, "Sinusoidal"), float(base)))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(SinusoidalOp, by="ncd.trace.learned")  # a table computed in the forward, equal to it (ncd.trace.positions)


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(SinusoidalOp)
def lower_sinusoidal(prim: SinusoidalOp, ctx: RuleContext) -> list[str]:
    t, m = (evaluate(a.size, what=f"axis {a.name}") for a in prim.segment)
    if not isinstance(m, SymbolicSize) and m % 2:  # on symbolic sizes the check waits for the number
        raise ctx.fail(f"the feature axis {prim.segment.axes[1].name} has odd size {m}; sinusoidal positions need an even size")
    scale = -math.log(prim.base) / m
    name = ctx.em.fresh("positions")
    ctx.em.init.extend([
        f"{name} = torch.zeros({t}, {m})",
        f"{name}_t = torch.arange({t}, dtype=torch.float32)[:, None]",
        f"{name}_f = torch.exp(torch.arange(0, {m}, 2, dtype=torch.float32) * {scale!r})",
        f"{name}[:, 0::2] = torch.sin({name}_t * {name}_f)",
        f"{name}[:, 1::2] = torch.cos({name}_t * {name}_f)",
        f"self.register_buffer({name!r}, {name}, persistent=False)",
    ])
    return [f"self.{name}"]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(SinusoidalOp)
def cost_sinusoidal(prim: SinusoidalOp, ctx: CostContext) -> list[Tensor]:
    t = ctx.parameter(ctx.out_axes[0])  # a buffer: like a parameter, never an activation
    return [replace(t, grad=False, dtype="float", dense=True)]


@BACKWARD.rule(SinusoidalOp)
def backward_sinusoidal(prim: SinusoidalOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(DeleteOp(cot(box.cod))))
