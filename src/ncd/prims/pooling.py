"""Pooling: maximum, average and adaptive average over windows of spatial axes, and their backward boxes.

>>> import ncd
>>> str((ncd.Identity.of("b c x y") >> ncd.MaxPool("x y", 2)).cod)
'b c x:x/2 y:y/2'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Segment, Type, TypeLike
from ncd.ir.diagram import Box, Diagram, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import SizeLike, size, size_text
from ncd.prims.convolution_tensor import ConvolutionTensorTOp
from ncd.prims.derivative import ExpandOp
from ncd.prims.elementwise import ScaleOp
from ncd.prims.kinds import transpose
from ncd.prims.pooling_derivative import (  # noqa: F401 - the derivative primitives; their names are still answered here
    AvgPoolTransposeOp,
    MaxPoolArgmaxOp,
    MaxPoolBackwardOp,
    _fields,
    _plane,
    _window_fields,
    cost_avgpool_transpose,
    cost_maxpool_argmax,
    lower_avgpool_transpose,
    lower_maxpool_argmax,
    lower_maxpool_backward,
)
from ncd.prims.structure import woven_scalar
from ncd.prims.windows import (
    IntOrInts,
    Ints,
    _arg,
    _batched,
    _check_sizes,
    _check_tuples,
    _fmt,
    _folded,
    _is_number,
    _options,
    _per_axis,
    _prod,
    _resized,
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

__all__ = ["MaxPoolOp", "AvgPoolOp", "AdaptiveAvgPoolOp", "MaxPool", "AvgPool", "AdaptiveAvgPool", "MaxPoolArgmaxOp",
           "MaxPoolBackwardOp", "AvgPoolTransposeOp"]


class _Pooling(Primitive):
    """What max and average pooling share (no fields of its own, so theirs, their order and their JSON are their
    own): the spatial ``axes`` pooled into ``positions``, ``ceil_mode`` written only when set."""

    axes: Segment
    positions: Segment
    stride: Ints
    ceil_mode: bool

    family: ClassVar[str] = "convolution"

    def fields(self) -> dict[str, Any]:
        return _fields(self)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.axes.axes, self.positions.axes, self.stride)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.positions,))

    def hint(self) -> str:
        return "pooled"


@dataclass(frozen=True)
class MaxPoolOp(_Pooling):
    """Max pooling: ``★`` (padding −∞) then ``Max`` over the kernel axes, fused (``ceil_mode``: a last, partial
    window where the stride leaves entries over)."""

    axes: Segment
    positions: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    dilation: Ints
    ceil_mode: bool = False

    op: ClassVar[str] = "maxpool"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _check_pool(self, self.dilation)

    def label(self) -> str:
        return f"★{_fmt(self.kernel)}→Max" + (" ⌈⌉" if self.ceil_mode else "")


@dataclass(frozen=True)
class AvgPoolOp(_Pooling):
    """Average pooling: ``★`` then the mean ``𝔼`` over the kernel axes, fused (``ceil_mode``: a last, partial window
    where the stride leaves entries over, divided by the entries it covers of the padded axis, or of the axis
    without ``count_include_pad``, as PyTorch does)."""

    axes: Segment
    positions: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    count_include_pad: bool = True
    ceil_mode: bool = False

    op: ClassVar[str] = "avgpool"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        _check_pool(self, (1,) * len(self.kernel))

    def label(self) -> str:
        return f"★{_fmt(self.kernel)}→𝔼" + (" ⌈⌉" if self.ceil_mode else "")


def _check_pool(prim: MaxPoolOp | AvgPoolOp, dilation: Ints) -> None:
    where, n = prim.label(), len(prim.axes)
    if n not in (1, 2, 3) or prim.positions.names != prim.axes.names:
        raise ParseError(f"{where}: positions '{prim.positions}' must name the 1 to 3 spatial axes '{prim.axes}'")
    _check_tuples(where, n, kernel=prim.kernel, stride=prim.stride, padding=prim.padding, dilation=dilation)
    for a, k, p, d in zip(prim.axes, prim.kernel, prim.padding, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise SizeError(f"{where}: padding {p} along axis {a.name} is more than half the kernel's span"
                            f" {d * (k - 1) + 1} (kernel {k}, dilation {d})")
    if not isinstance(prim.ceil_mode, bool):
        raise ParseError(f"{where}: ceil_mode must be True or False, not {prim.ceil_mode!r}")
    expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}", ceil=prim.ceil_mode)
                for a, k, s, p, d in zip(prim.axes, prim.kernel, prim.stride, prim.padding, dilation)]
    _check_sizes(where, prim.axes.axes, prim.positions.axes, expected, prim.stride)


def _pool_args(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None, padding: IntOrInts, dilation: IntOrInts,
               where: str, ceil_mode: bool = False) -> tuple[Segment, Segment, Ints, Ints, Ints, Ints]:
    spatial = _spatial(axes, where)
    n = len(spatial)
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = k if stride is None else _per_axis(stride, n, "stride", where, 1)
    p = _per_axis(padding, n, "padding", where, 0)
    d = _per_axis(dilation, n, "dilation", where, 1)
    return spatial, _windows(spatial, k, s, p, d, where, ceil_mode is True), k, s, p, d


def MaxPool(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None = None, padding: IntOrInts = 0,
            dilation: IntOrInts = 1, ceil_mode: bool = False) -> Box:
    """Max pooling over 1 to 3 spatial axes, e.g. ``MaxPool("x y", 2)`` (``stride`` defaults to ``kernel``;
    ``ceil_mode`` as PyTorch's)."""
    return Box.make(MaxPoolOp(*_pool_args(axes, kernel, stride, padding, dilation, "maxpool", ceil_mode), ceil_mode))


def AvgPool(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None = None, padding: IntOrInts = 0,
            count_include_pad: bool = True, ceil_mode: bool = False) -> Box:
    """Average pooling over 1 to 3 spatial axes, e.g. ``AvgPool("x y", 2)`` (``stride`` defaults to ``kernel``;
    ``ceil_mode`` as PyTorch's)."""
    spatial, positions, k, s, p, _ = _pool_args(axes, kernel, stride, padding, 1, "avgpool", ceil_mode)
    return Box.make(AvgPoolOp(spatial, positions, k, s, p, bool(count_include_pad), ceil_mode))


@dataclass(frozen=True)
class AdaptiveAvgPoolOp(Primitive):
    """Adaptive average pooling to fixed output sizes (``F.adaptive_avg_pool*``'s windows)."""

    axes: Segment
    positions: Segment

    op: ClassVar[str] = "adaptive_avgpool"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if len(self.axes) not in (1, 2, 3) or self.positions.names != self.axes.names:
            raise ParseError(f"{self.label()}: positions '{self.positions}' must name the 1 to 3 spatial axes '{self.axes}'")
        for a in self.positions:
            if _is_number(a.size) and (not a.size.is_integer or a.size < 1):
                raise SizeError(f"{self.label()}: output size of axis {a.name} must be a positive whole number, not"
                                f" {size_text(a.size)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.positions,))

    def label(self) -> str:
        return "𝔼→" + " ".join(size_text(a.size) for a in self.positions)

    def hint(self) -> str:
        return "pooled"


def AdaptiveAvgPool(axes: TypeLike, output: SizeLike | Sequence[SizeLike]) -> Box:
    """Adaptive average pooling of 1 to 3 spatial axes to ``output`` sizes, e.g. ``AdaptiveAvgPool("x y", 1)``."""
    where = "adaptive_avgpool"
    spatial = _spatial(axes, where)
    sizes = list(output) if isinstance(output, (tuple, list)) else [output] * len(spatial)
    if len(sizes) != len(spatial):
        raise ParseError(f"{where}: output {tuple(sizes)} has {len(sizes)} entries but there are {len(spatial)} spatial axes")
    return Box.make(AdaptiveAvgPoolOp(spatial, _resized(spatial, [size(v) for v in sizes])))


# -- lowering ----------------------------------------------------------------------------------
def _pool(ctx: RuleContext, fn: str, args: str) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, (MaxPoolOp, AvgPoolOp, AdaptiveAvgPoolOp))
    n = len(prim.axes)
    shape, out = _sizes(ctx, prim.axes.axes), _sizes(ctx, prim.positions.axes)
    return [_batched(ctx.args[0].var, shape, out, f"F.{fn}{n}d({{}}, {args})", channel=False)]


@LOWERING.rule(MaxPoolOp)
def lower_maxpool(prim: MaxPoolOp, ctx: RuleContext) -> list[str]:
    args = _arg(prim.kernel) + f", stride={_arg(prim.stride)}" + _options(padding=prim.padding, dilation=prim.dilation)
    return _pool(ctx, "max_pool", args + (", ceil_mode=True" if prim.ceil_mode else ""))


@LOWERING.rule(AvgPoolOp)
def lower_avgpool(prim: AvgPoolOp, ctx: RuleContext) -> list[str]:
    args = _arg(prim.kernel) + f", stride={_arg(prim.stride)}" + _options(padding=prim.padding)
    args += "" if prim.count_include_pad else ", count_include_pad=False"
    return _pool(ctx, "avg_pool", args + (", ceil_mode=True" if prim.ceil_mode else ""))


@LOWERING.rule(AdaptiveAvgPoolOp)
def lower_adaptive_avgpool(prim: AdaptiveAvgPoolOp, ctx: RuleContext) -> list[str]:
    return _pool(ctx, "adaptive_avg_pool", _arg(tuple(_sizes(ctx, prim.positions.axes))))


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(MaxPoolOp)
def cost_maxpool(prim: MaxPoolOp, ctx: CostContext) -> list[Tensor]:
    x = _folded(ctx, direct=2)  # no channel axis: F.*pool*d(x) on (N, C, ...) as it is
    if x.grad:
        ctx.save(x, ctx.new(ctx.out_axes[0], grad=False, dtype="index"))
    ctx.other(ctx.numel() * _prod(prim.kernel), ctx.numel())
    return [ctx.output(0)]


@COST.rule(AvgPoolOp)
def cost_avgpool(prim: AvgPoolOp, ctx: CostContext) -> list[Tensor]:
    x = _folded(ctx, direct=2)  # no channel axis: F.*pool*d(x) on (N, C, ...) as it is
    if x.grad:
        ctx.save(x)
    ctx.other(ctx.numel() * _prod(prim.kernel), ctx.inputs[0].numel)
    return [ctx.output(0)]


@COST.rule(AdaptiveAvgPoolOp)
def cost_adaptive_avgpool(prim: AdaptiveAvgPoolOp, ctx: CostContext) -> list[Tensor]:
    """Pooling to size 1 everywhere is a mean (keeps nothing); otherwise the input is kept."""
    x = _folded(ctx, direct=2)  # no channel axis: F.*pool*d(x) on (N, C, ...) as it is
    if x.grad and any(a.size != 1 for a in prim.positions):
        ctx.save(x)
    ctx.other(ctx.inputs[0].numel, ctx.inputs[0].numel)
    return [ctx.output(0)]


@BACKWARD.rule(MaxPoolOp)
def backward_maxpool(prim: MaxPoolOp, box: Box, builder: object) -> BoxBackward:
    """Route each cotangent to its window's maximum: the forward pass stores the argmax (an index), ``Maxᵀ`` scatters."""
    forward = Box(MaxPoolArgmaxOp(prim.axes, prim.positions, prim.kernel, prim.stride, prim.padding, prim.dilation,
                                  prim.ceil_mode))
    back = Box(MaxPoolBackwardOp(prim.axes, prim.positions))
    return BoxBackward((("aux", 0),), back, forward=forward, aux_like=(0,))


def _spread(positions: Segment, axes: Segment, kernel: tuple[int, ...], stride: tuple[int, ...],
            padding: tuple[int, ...]) -> Diagram:
    """``𝔼ᵀ`` then ``★ᵀ``: each cotangent copied onto its window, divided by the window's size, windows summed."""
    taken = set(axes.names)
    names = tuple(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken) for i in range(1, len(axes) + 1))
    star_t = ConvolutionTensorTOp(axes, positions, names, kernel, stride, padding, (1,) * len(axes))
    count = 1
    for k in kernel:
        count *= k
    return Seq.of(Box(ExpandOp(positions, star_t.windowed())), woven_scalar(Box(ScaleOp(size(f"1/{count}"))),
                                                                              star_t.windowed()), Box(star_t))


@transpose(AvgPoolOp)
def transpose_avgpool(prim: AvgPoolOp, box: Box) -> Diagram:
    """Average pooling is linear: its transpose ``𝔼ᵀ`` then ``★ᵀ`` (drawn with ``★ᵀ`` for 1 or 2 axes, padding counted)."""
    if prim.count_include_pad and not prim.ceil_mode and len(prim.axes) in (1, 2):
        return _spread(prim.positions, prim.axes, prim.kernel, prim.stride, prim.padding)
    return Box(AvgPoolTransposeOp(prim.axes, prim.positions, prim.kernel, prim.stride, prim.padding,
                                  prim.count_include_pad, ceil_mode=prim.ceil_mode))


@transpose(AdaptiveAvgPoolOp)
def transpose_adaptive_avgpool(prim: AdaptiveAvgPoolOp, box: Box) -> Diagram:
    """Even windows (the size divisible by the output's) are an average pooling's; uneven ones ``𝔼ᵀ★ᵀ`` in one box."""
    try:
        ratios = [int(a.size / b.size) for a, b in zip(prim.axes, prim.positions) if (a.size / b.size).is_integer]
    except TypeError:  # pragma: no cover - symbolic sizes
        ratios = []
    if len(ratios) == len(prim.axes) and len(prim.axes) in (1, 2):
        k = tuple(ratios)
        return _spread(prim.positions, prim.axes, k, k, (0,) * len(k))
    return Box(AvgPoolTransposeOp(prim.axes, prim.positions, adaptive=True))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(MaxPoolOp, aten=("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d"))
IMPORT.known(AvgPoolOp, aten=("aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d"))
IMPORT.unsupported(AdaptiveAvgPoolOp, "not recognised yet: a traced adaptive pooling becomes an opaque box")
