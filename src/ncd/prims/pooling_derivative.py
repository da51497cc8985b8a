"""The derivative primitives of pooling (backward diagrams): max pooling that keeps its argmax, ``Maxᵀ`` routing
each cotangent to it, and average pooling's transpose ``𝔼ᵀ★ᵀ`` in one box, with their lowering and cost rules.
``ncd.prims.pooling`` still answers their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER
from ncd.ir.size import Size, size
from ncd.prims.gather import cost_scatter_add
from ncd.prims.windows import _ints, _product, _reshaped, _tuple

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["MaxPoolArgmaxOp", "MaxPoolBackwardOp", "AvgPoolTransposeOp"]


def _fields(prim: Primitive) -> dict[str, Any]:
    """The fields, ``ceil_mode`` only when set (the JSON of every floor-mode pooling is unchanged)."""
    fields = Primitive.fields(prim)
    if not fields["ceil_mode"]:
        del fields["ceil_mode"]
    return fields


def _window_fields(axes: Segment, positions: Segment) -> None:
    if len(axes) not in (1, 2, 3) or positions.names != axes.names:
        raise ParseError(f"pooling transpose: positions '{positions}' must name the 1 to 3 spatial axes '{axes}'")


def _plane(axes: Segment) -> Size:
    result: Size = size(1)
    for a in axes:
        result = result * a.size
    return result


@dataclass(frozen=True)
class MaxPoolArgmaxOp(Primitive):
    """Max pooling that also outputs where each maximum was (flat index into the spatial axes): ``x -> (y, i)``."""

    axes: Segment
    positions: Segment
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False

    op: ClassVar[str] = "maxpool_argmax"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _window_fields(self.axes, self.positions)

    def fields(self) -> dict[str, Any]:
        return _fields(self)

    def signature(self) -> tuple[Type, Type]:
        index = Segment(self.positions.axes, "index", _plane(self.axes))
        return Type((self.axes,)), Type((self.positions, index))

    def label(self) -> str:
        return "★→Max, argmax"


@dataclass(frozen=True)
class MaxPoolBackwardOp(Primitive):
    """``(i, g) ↦ ∂x``: each cotangent routed to the stored argmax ``i`` of its window (sums where windows overlap)."""

    axes: Segment
    positions: Segment

    op: ClassVar[str] = "maxpool_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        _window_fields(self.axes, self.positions)

    def signature(self) -> tuple[Type, Type]:
        index = Segment(self.positions.axes, "index", _plane(self.axes))
        return Type((index, self.positions)), Type((self.axes,))

    def label(self) -> str:
        return "Maxᵀ"


@dataclass(frozen=True)
class AvgPoolTransposeOp(Primitive):
    """The transpose of average pooling (``adaptive``: of ``F.adaptive_avg_pool``): ``𝔼ᵀ`` then ``★ᵀ``.

    Each cotangent is spread evenly over its window (divided by the window's count) and
    overlapping windows are summed.
    """

    axes: Segment
    positions: Segment
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    count_include_pad: bool = True
    adaptive: bool = False
    ceil_mode: bool = False

    op: ClassVar[str] = "avgpool_transpose"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        _window_fields(self.axes, self.positions)
        n = 0 if self.adaptive else len(self.axes)
        if any(len(v) != n for v in (self.kernel, self.stride, self.padding)):
            raise ParseError(f"pooling transpose over '{self.axes}': kernel, stride and padding need {n} entries each")

    def fields(self) -> dict[str, Any]:
        return _fields(self)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.positions,)), Type((self.axes,))

    def label(self) -> str:
        return "𝔼ᵀ★ᵀ"


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(MaxPoolArgmaxOp)
def lower_maxpool_argmax(prim: MaxPoolArgmaxOp, ctx: RuleContext) -> list[str]:
    n = len(prim.axes)
    shape, out = _ints(ctx, prim.axes), _ints(ctx, prim.positions)
    x = ctx.args[0].var
    options = f"{_tuple(prim.kernel)}, stride={_tuple(prim.stride)}, padding={_tuple(prim.padding)}, " \
              f"dilation={_tuple(prim.dilation)}, return_indices=True" + (", ceil_mode=True" if prim.ceil_mode else "")
    pooled, where = ctx.em.fresh("pooled"), ctx.em.fresh("argmax")
    ctx.em.line(f"{pooled}, {where} = F.max_pool{n}d({x}.reshape(-1, 1, {', '.join(map(str, shape))}), {options})")
    restore = f".view(*{x}.shape[:-{n}], {', '.join(map(str, out))})"
    return [pooled + restore, where + restore]


@LOWERING.rule(MaxPoolBackwardOp)
def lower_maxpool_backward(prim: MaxPoolBackwardOp, ctx: RuleContext) -> list[str]:
    """Scatter-add each cotangent to its window's argmax (overlapping windows add up)."""
    n = len(prim.axes)
    shape = _ints(ctx, prim.axes)
    plane = 1
    for v in shape:
        plane *= v
    i, g = ctx.args[0].var, ctx.args[1].var
    zeros = f"torch.zeros(*{g}.shape[:-{n}], {plane}, dtype={g}.dtype, device={g}.device)"
    scatter = f"{zeros}.scatter_add(-1, {i}.flatten(-{n}), {g}.flatten(-{n}))"
    return [f"{scatter}.view(*{g}.shape[:-{n}], {', '.join(map(str, shape))})"]


@LOWERING.rule(AvgPoolTransposeOp)
def lower_avgpool_transpose(prim: AvgPoolTransposeOp, ctx: RuleContext) -> list[str]:
    """ATen's average-pooling transposes (1-d runs as 2-d with a unit axis); the input is only a shape."""
    n = len(prim.axes)
    shape, out = _ints(ctx, prim.axes), _ints(ctx, prim.positions)
    g = ctx.args[0].var
    dims = max(n, 2)
    pad1 = [1] * (dims - n)
    grad = f"{g}.reshape(-1, 1, {', '.join(map(str, pad1 + out))})"
    like = f"{g}.new_zeros(1, 1, {', '.join(map(str, pad1 + shape))}).expand({grad}.shape[0], 1, " \
           f"{', '.join(map(str, pad1 + shape))})"
    if prim.adaptive:
        call = f"torch.ops.aten._adaptive_avg_pool{dims}d_backward({grad}, {like})"
    else:
        kernel, stride = [1] * (dims - n) + list(prim.kernel), [1] * (dims - n) + list(prim.stride)
        padding = [0] * (dims - n) + list(prim.padding)
        call = (f"torch.ops.aten.avg_pool{dims}d_backward({grad}, {like}, {kernel}, {stride}, {padding}, {prim.ceil_mode},"
                f" {prim.count_include_pad}, None)")
    return [f"{call}.view(*{g}.shape[:-{n}], {', '.join(map(str, shape))})"]


# -- costs ---------------------------------------------------------------------------------------
@COST.rule(MaxPoolArgmaxOp)
def cost_maxpool_argmax(prim: MaxPoolArgmaxOp, ctx: CostContext) -> list[Tensor]:
    """As max pooling (input and int64 argmax kept), the argmax also an output."""
    x = ctx.inputs[0]
    flat = _reshaped(ctx, x, len(prim.axes))  # x.reshape(-1, 1, positions...): a view unless the batch dims split
    index = ctx.new(ctx.out_axes[1], grad=False, dtype="index")
    if x.grad:
        ctx.save(flat, index)
    ctx.other(ctx.numel() * _product(prim.kernel), ctx.numel())
    return [ctx.output(0), index]


COST.rule(MaxPoolBackwardOp)(cost_scatter_add)  # zeros.scatter_add(-1, i, g), as a gather's transpose


@COST.rule(AvgPoolTransposeOp)
def cost_avgpool_transpose(prim: AvgPoolTransposeOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(ctx.numel(), ctx.inputs[0].numel)
    return [ctx.output(0)]


for _cls in (MaxPoolArgmaxOp, MaxPoolBackwardOp, AvgPoolTransposeOp):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
