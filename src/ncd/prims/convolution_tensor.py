"""The paper's convolution tensor ``★`` and its transpose ``★ᵀ`` (part of the convolution family).

``★`` is a *linear* map (no parameters): spatial axes in, output-position axes and kernel-window
axes out.  Its index relation is ``★[o, j; i] = 1`` iff ``i = o·stride + j·dilation − padding``;
positions outside the input read the zero padding.  Output-position axes keep the spatial axes'
names; kernel axes are called ``k<name>`` unless named (``kernel_axes="k l"``).
``ConvolutionTensorT`` takes the *same* arguments and is its transpose (cod and dom swapped;
overlapping windows are summed).  Sizes follow the family's size rule (``ncd.prims.convolution``).

>>> import ncd
>>> str(ncd.ConvolutionTensor("x y", 3, stride=2, padding=1).cod)
'x:x/2 y:y/2 kx:3 ky:3'
>>> str(ncd.ConvolutionTensorT("x:2*n", 2, stride=2).dom)
'x:n kx:2'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, Type, TypeLike
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, IMPORT, LOWERING
from ncd.prims.kinds import transpose
from ncd.prims.windows import (
    IntOrInts,
    Ints,
    _arg,
    _check_sizes,
    _check_tuples,
    _fmt,
    _options,
    _per_axis,
    _sizes,
    _spatial,
    _subs_checked,
    _windows,
    window_size,
)

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["ConvolutionTensorOp", "ConvolutionTensorTOp", "ConvolutionTensor", "ConvolutionTensorT"]


# -- the convolution tensor ★ and its transpose ----------------------------------------------------
@dataclass(frozen=True)
class ConvolutionTensorOp(Primitive):
    """``★``: spatial ``axes`` -> output ``positions`` (same names) and kernel-window axes."""

    axes: Segment
    positions: Segment
    kernel_names: tuple[str, ...]
    kernel: Ints
    stride: Ints
    padding: Ints
    dilation: Ints

    op: ClassVar[str] = "conv_tensor"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        where, n = self.label(), len(self.axes)
        if n not in (1, 2) or len(self.positions) != n or self.positions.names != self.axes.names:
            raise ParseError(f"{where}: positions '{self.positions}' must name the spatial axes '{self.axes}' (1 or 2 of them)")
        _check_tuples(where, n, kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)
        if len(self.kernel_names) != n or len(set(self.kernel_names) | set(self.axes.names)) != 2 * n:
            raise ParseError(
                f"{where}: kernel axes {' '.join(self.kernel_names)} must be {n} new name(s), distinct from '{self.axes}'"
            )
        expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}")
                    for a, k, s, p, d in zip(self.axes, self.kernel, self.stride, self.padding, self.dilation)]
        _check_sizes(where, self.axes.axes, self.positions.axes, expected, self.stride)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.axes.axes, self.positions.axes, self.stride)

    def kernel_axes(self) -> tuple[Axis, ...]:
        return tuple(Axis(name, sympy.Integer(k)) for name, k in zip(self.kernel_names, self.kernel))

    def windowed(self) -> Segment:
        """Output positions followed by the kernel-window axes."""
        return Segment(self.positions.axes + self.kernel_axes())

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.windowed(),))

    def label(self) -> str:
        return "★" + ("" if set(self.stride) == {1} else _fmt(self.stride))

    def hint(self) -> str:
        return "windows"


@dataclass(frozen=True)
class ConvolutionTensorTOp(ConvolutionTensorOp):
    """``★ᵀ``: the transpose of ``★`` with the same fields (overlapping windows are summed)."""

    op: ClassVar[str] = "conv_tensor_t"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.windowed(),)), Type((self.axes,))

    def label(self) -> str:
        return "★ᵀ" + ("" if set(self.stride) == {1} else _fmt(self.stride))

    def hint(self) -> str:
        return "folded"


def _tensor_args(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts, padding: IntOrInts, dilation: IntOrInts,
                 kernel_axes: str | None, where: str) -> dict[str, object]:
    spatial = _spatial(axes, where, (1, 2))
    n = len(spatial)
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = _per_axis(stride, n, "stride", where, 1)
    p = _per_axis(padding, n, "padding", where, 0)
    d = _per_axis(dilation, n, "dilation", where, 1)
    names = tuple(kernel_axes.split()) if kernel_axes is not None else tuple("k" + a.name for a in spatial)
    return {"axes": spatial, "positions": _windows(spatial, k, s, p, d, where), "kernel_names": names,
            "kernel": k, "stride": s, "padding": p, "dilation": d}


def ConvolutionTensor(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts = 1, padding: IntOrInts = 0,
                      dilation: IntOrInts = 1, *, kernel_axes: str | None = None) -> Box:
    """The convolution tensor ``★`` over 1 or 2 spatial axes, e.g. ``ConvolutionTensor("x y", 3, stride=2)``.

    ``x y -> x y kx ky``: output positions keep the spatial names (sizes by the size rule),
    kernel axes are ``k<name>`` or ``kernel_axes``.  Composed after ``c x y`` it is woven over ``c``.
    """
    return Box.make(ConvolutionTensorOp(**_tensor_args(axes, kernel, stride, padding, dilation, kernel_axes, "★")))  # type: ignore[arg-type]


def ConvolutionTensorT(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts = 1, padding: IntOrInts = 0,
                       dilation: IntOrInts = 1, *, kernel_axes: str | None = None) -> Box:
    """``★ᵀ``, the transpose of ``ConvolutionTensor`` with the same arguments: ``x y kx ky -> x y``.

    ``axes`` are the full-resolution (output) axes, e.g. ``ConvolutionTensorT("x:2*n", 2, stride=2)``
    takes ``x:n kx:2`` to ``x:2*n``; overlapping windows are summed.
    """
    return Box.make(ConvolutionTensorTOp(**_tensor_args(axes, kernel, stride, padding, dilation, kernel_axes, "★ᵀ")))  # type: ignore[arg-type]


# -- import recognition (ncd.trace) ----------------------------------------------------------------
for _cls in (ConvolutionTensorOp, ConvolutionTensorTOp):
    IMPORT.unsupported(_cls, "the paper's convolution tensor; traced convolutions import as ConvOp")


# -- lowering --------------------------------------------------------------------------------------
@LOWERING.rule(ConvolutionTensorOp)
def lower_conv_tensor(prim: ConvolutionTensorOp, ctx: RuleContext) -> list[str]:
    assert isinstance(prim, ConvolutionTensorOp) and not isinstance(prim, ConvolutionTensorTOp)
    n = len(prim.axes)
    expr = ctx.args[0].var
    if any(prim.padding):
        pads = tuple(p for p in reversed(prim.padding) for _ in (0, 1))
        expr = f"F.pad({expr}, {pads})"
    for k, s, d in zip(prim.kernel, prim.stride, prim.dilation):
        expr += f".unfold({-n}, {d * (k - 1) + 1}, {s})"
    if any(d != 1 for d in prim.dilation):
        expr += "[..., " + ", ".join(f"::{d}" if d != 1 else ":" for d in prim.dilation) + "]"
    return [expr]


@LOWERING.rule(ConvolutionTensorTOp)
def lower_conv_tensor_t(prim: ConvolutionTensorTOp, ctx: RuleContext) -> list[str]:
    n = len(prim.axes)
    full, positions = _sizes(ctx, prim.axes.axes), _sizes(ctx, prim.positions.axes)
    blocks = 1
    for p in positions:
        blocks *= p
    window = 1
    for k in prim.kernel:
        window *= k

    def two_d(values: tuple[int, ...] | list[int], pad: int) -> tuple[int, ...]:
        return tuple(values) if n == 2 else (pad, *values)

    x = ctx.args[0].var
    options = _options(dilation=two_d(prim.dilation, 1), padding=two_d(prim.padding, 0), stride=two_d(prim.stride, 1))
    kernel = _arg(two_d(prim.kernel, 1))
    fold = f"F.fold({x}.reshape(-1, {blocks}, {window}).transpose(-1, -2), {two_d(full, 1)}, {kernel}{options})"
    return [f"{fold}.view(*{x}.shape[:-{2 * n}], {', '.join(map(str, full))})"]


# -- costs -----------------------------------------------------------------------------------------
@COST.rule(ConvolutionTensorOp)
def cost_conv_tensor(prim: ConvolutionTensorOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if any(prim.padding):
        x = ctx.new(x.axes, grad=x.grad)  # F.pad writes a new tensor
    return [replace(x, axes=ctx.out_axes[0], order=(), dense=False)]


@COST.rule(ConvolutionTensorTOp)
def cost_conv_tensor_t(prim: ConvolutionTensorTOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if not x.contiguous:
        ctx.new(x.axes, grad=x.grad)
    ctx.other(x.numel, sympy.Integer(0))
    return [ctx.output(0)]


# -- backward: ★ is linear -------------------------------------------------------------------------
def _swap(prim: ConvolutionTensorOp, cls: type[ConvolutionTensorOp]) -> Box:
    return Box(cls(prim.axes, prim.positions, prim.kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation))


@transpose(ConvolutionTensorOp)
def transpose_conv_tensor(prim: ConvolutionTensorOp, box: Box) -> Diagram:
    """``★`` is linear: its transpose is ``★ᵀ`` (fold: overlapping windows summed)."""
    return _swap(prim, ConvolutionTensorTOp)


@transpose(ConvolutionTensorTOp)
def transpose_conv_tensor_t(prim: ConvolutionTensorTOp, box: Box) -> Diagram:
    return _swap(prim, ConvolutionTensorOp)
