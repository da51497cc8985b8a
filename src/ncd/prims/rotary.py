"""Rotary position embedding (RoFormer; LLaMA's ``apply_rotary_pos_emb``) as one box ``ρ``.

``Rotary("k", "t")`` acts on a segment ``t k``: at position ``p`` along ``t`` (positions are
the axis' indices ``0 … t-1``) it rotates the pairs ``(x_j, x_{j+k/2})`` of the feature axis
``k`` by the angles ``p · base^(-2j/k)``:

``ρ(x)[p] = x[p] ⊙ cos θ_p + rotate_half(x[p]) ⊙ sin θ_p``,  ``rotate_half(x) = (-x₂, x₁)``,

the convention of Hugging Face's LLaMA (halves, not interleaved pairs).  ``frequencies``, when given, are the
``k/2`` angular frequencies themselves in place of ``base^(-2j/k)`` (a YaRN, LLaMA-3 or linearly scaled table:
``p · frequencies[j]``, computed in float32 as the geometric ones are).  ``scale``
multiplies the cos/sin tables (HF's ``attention_scaling``).  ``inverse=True`` rotates by
minus the angles (``sin`` negated): the transpose ``ρᵀ``, the box's backward.  ``offset`` shifts
the positions to ``offset … offset+t-1`` (a decode step after ``c`` cached positions).  Woven over batch and heads
(``b h t k``) it is the rotary embedding of a multi-head query or key.  The box is linear
in ``x``: the table depends on the positions only.

>>> import ncd
>>> from ncd.prims.rotary import Rotary
>>> str((ncd.Identity.of("b h t k:8") >> Rotary("k:8", "t")).cod)
'b h t k:8'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, IMPORT, LOWERING
from ncd.ir.size import Size, SizeLike, size, size_text
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["RotaryOp", "Rotary"]


@dataclass(frozen=True)
class RotaryOp(Primitive):
    """Rotate the halves of feature axis ``axis`` by position-dependent angles along ``position``."""

    axis: Axis
    position: Axis
    base: float = 10000.0
    scale: float = 1.0
    #: rotate by minus the angles: the transpose ``ρᵀ`` (rotations are orthogonal)
    inverse: bool = False
    #: the absolute position of index 0 along ``position`` (a decode step after ``c`` cached positions: ``c``)
    offset: Size = sympy.Integer(0)
    #: the ``k/2`` frequencies of the pairs, given (float32 values); empty: the geometric ``base^(-2j/k)``
    frequencies: tuple[float, ...] = ()

    op: ClassVar[str] = "rotary"
    family: ClassVar[str] = "rotary"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if self.axis.name == self.position.name:
            raise ParseError(f"rotary: the feature axis and the position axis are both named {self.axis.name}")
        size = sympy.sympify(self.axis.size)
        if size.is_number and int(size) % 2:
            raise SizeError(f"rotary on axis {self.axis.name} of size {size_text(self.axis.size)}: the feature axis"
                            f" must have an even size (its halves are rotated into each other)")
        if isinstance(self.base, bool) or not isinstance(self.base, (int, float)) or not self.base > 0:
            raise ParseError(f"rotary on axis {self.axis.name}: the base {self.base!r} must be a positive number")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise ParseError(f"rotary on axis {self.axis.name}: the scale {self.scale!r} must be a number")
        if not isinstance(self.inverse, bool):
            raise ParseError(f"rotary on axis {self.axis.name}: inverse must be True or False, not {self.inverse!r}")
        if not isinstance(self.frequencies, tuple) or not all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in self.frequencies):
            raise ParseError(f"rotary on axis {self.axis.name}: the frequencies must be a tuple of finite numbers, not"
                             f" {self.frequencies!r}")
        if self.frequencies and size.is_number and int(size) != 2 * len(self.frequencies):
            raise SizeError(f"rotary on axis {self.axis.name} of size {size_text(self.axis.size)}: {len(self.frequencies)}"
                            f" frequencies given, one per pair of the axis needs {size_text(size / 2)}")
        if not isinstance(self.offset, sympy.Basic):
            object.__setattr__(self, "offset", size(self.offset))
        if self.offset.is_number and not (self.offset.is_integer and self.offset >= 0):
            raise SizeError(f"rotary on axis {self.axis.name}: the position offset {size_text(self.offset)} must be a"
                            " whole number >= 0")

    def signature(self) -> tuple[Type, Type]:
        t = Type((Segment((self.position, self.axis)),))
        return t, t

    def label(self) -> str:
        text = "ρᵀ" if self.inverse else "ρ"
        return text if self.offset == 0 else f"{text}+{size_text(self.offset)}"


def Rotary(axis: AxisLike, position: AxisLike, base: float = 10000.0, scale: float = 1.0, inverse: bool = False,
           offset: SizeLike = 0, frequencies: tuple[float, ...] = ()) -> Box:
    """Rotary position embedding of feature axis ``axis`` (even size) at the positions along ``position``.

    ``inverse=True``: the rotation by minus the angles (the transpose, ``ρᵀ``).  ``offset``: the absolute
    position of the first index (positions ``offset … offset+t-1``; a decode step's is the cache length).
    ``frequencies``: the pairs' angular frequencies, given (``base`` is then not read).
    """
    return Box.make(RotaryOp(as_axis(axis), as_axis(position), float(base), float(scale), inverse, size(offset),
                             tuple(float(f) for f in frequencies)))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(RotaryOp, by="ncd.trace.rotary")


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(RotaryOp)
def lower_rotary(prim: RotaryOp, ctx: RuleContext) -> list[str]:
    """``x * cos + cat(-x₂, x₁) * sin`` on ``(..., t, k)``; the positions are read from the tensor (any length).

    The transpose (``inverse``) rotates by minus the angles: ``x * cos - cat(-x₂, x₁) * sin``.
    """
    k = ctx.int(prim.axis.size, f"axis {prim.axis.name}")
    x = ctx.args[0].var
    axes = (prim.position, prim.axis)
    if prim.frequencies and isinstance(k, int) and 2 * len(prim.frequencies) != k:
        raise SizeError(f"rotary on axis {prim.axis.name} of size {k}: {len(prim.frequencies)} frequencies given, one per"
                        f" pair of the axis needs {k // 2}")
    if prim.frequencies:
        inv = f"torch.tensor({list(prim.frequencies)!r}, dtype=torch.float32, device={x}.device)"
    else:
        inv = f"1.0 / ({prim.base!r} ** (torch.arange(0, {k}, 2, dtype=torch.int64, device={x}.device).float() / {k}))"
    offset = ctx.int(prim.offset, f"the position offset of {prim.axis.name}")
    positions = f"torch.arange({x}.shape[-2], device={x}.device)" if isinstance(offset, int) and not offset else \
        f"torch.arange({offset}, {offset} + {x}.shape[-2], device={x}.device)"
    freqs = ctx.em.assign("freqs", f"{positions}.float()[:, None] * ({inv})[None, :]", axes)
    angles = ctx.em.assign("angles", f"torch.cat(({freqs}, {freqs}), dim=-1)", axes)
    scale = "" if prim.scale == 1.0 else f" * {prim.scale!r}"
    cos = ctx.em.assign("cos", f"({angles}.cos(){scale}).to({x}.dtype)", axes)
    sin = ctx.em.assign("sin", f"({angles}.sin(){scale}).to({x}.dtype)", axes)
    half = k // 2
    sign = "-" if prim.inverse else "+"
    return [f"{x} * {cos} {sign} torch.cat((-{x}[..., {half}:], {x}[..., :{half}]), dim=-1) * {sin}"]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(RotaryOp)
def cost_rotary(prim: RotaryOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    n = ctx.numel()
    if x.grad:
        ctx.save(ctx.new((prim.position, prim.axis), grad=False), ctx.new((prim.position, prim.axis), grad=False))
    ctx.other(4 * n, 4 * n if x.grad else sympy.Integer(0))  # two products, a negation and a sum
    return [ctx.output(0)]


@transpose(RotaryOp)
def transpose_rotary(prim: RotaryOp, box: Box) -> Diagram:
    """``ρᵀ``: the same rotation with the angles negated (and ``ρ`` for ``ρᵀ``); the scale is its own transpose."""
    return Box(replace(prim, inverse=not prim.inverse))
