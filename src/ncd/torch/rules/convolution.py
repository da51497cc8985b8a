"""Lowering rules for the convolution family.

None of these rules is weave-aware: the code generator moves woven axes to the front, so
a rule sees its own axes trailing (``... c x y``) behind any number of leading dims.  Torch's
convolution and pooling functions take one batch dim, so the rules reshape the leading dims
into one and back: ``self.conv(x.reshape(-1, 3, 8, 8)).view(*x.shape[:-3], 16, 8, 8)`` — or call
torch directly when the input already has torch's ``(N, C, ...)`` rank.

* ``★`` is ``F.pad`` then one ``Tensor.unfold`` per spatial axis (a view, exact), then a
  stride-``d`` slice of each kernel axis for dilation;
* ``★ᵀ`` is ``F.fold`` (the adjoint of unfold: overlapping windows are summed);
* ``Conv`` / ``ConvTranspose`` are ``nn.ConvNd`` / ``nn.ConvTransposeNd`` modules, so
  weights load straight from ``torch.nn`` models;
* pooling calls ``F.max_poolNd`` / ``F.avg_poolNd`` / ``F.adaptive_avg_poolNd``.
"""

from __future__ import annotations

from ncd.ir.axes import Axis
from ncd.prims.convolution import (
    AdaptiveAvgPoolOp,
    AvgPoolOp,
    ConvolutionTensorOp,
    ConvolutionTensorTOp,
    ConvOp,
    ConvTransposeOp,
    MaxPoolOp,
)
from ncd.torch.rules import RuleContext, register


def _arg(values: tuple[int, ...]) -> str:
    """``3`` when every spatial axis agrees, else ``(3, 5)``."""
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def _sizes(ctx: RuleContext, axes: tuple[Axis, ...]) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in axes]


def _batched(x: str, shape: list[int], out_shape: list[int], call: str, channel: bool = True) -> str:
    """``call`` applied to ``x`` with its leading dims folded into one batch dim, then restored.

    Without a ``channel`` axis, a unit channel axis is added for torch's ``(N, C, ...)`` layout.
    """
    inner = ", ".join(map(str, shape if channel else [1, *shape]))
    outer = ", ".join(map(str, out_shape))
    folded = f"{call.format(f'{x}.reshape(-1, {inner})')}.view(*{x}.shape[:-{len(shape)}], {outer})"
    # torch takes (N, C, ...) as it is: call it directly in that common case, fold other batch layouts
    rank = len(shape) + (1 if channel else 2)
    return f"({call.format(x)} if {x}.dim() == {rank} else {folded})"


def _options(**values: tuple[int, ...]) -> str:
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "output_padding": 0, "groups": 1}
    parts = [f"{k}={_arg(v)}" for k, v in values.items() if set(v) != {defaults[k]}]
    return "".join(", " + p for p in parts)


@register(ConvolutionTensorOp)
def lower_conv_tensor(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
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


@register(ConvolutionTensorTOp)
def lower_conv_tensor_t(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConvolutionTensorTOp)
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


@register(ConvOp)
def lower_conv(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConvOp)
    n = prim.ndim
    shape, out = _sizes(ctx, prim.dom_axes.axes), _sizes(ctx, prim.cod_axes.axes)
    groups = ctx.int(prim.groups, "groups")
    options = _options(stride=prim.stride, padding=prim.padding, dilation=prim.dilation, groups=(groups,))
    options += "" if prim.bias else ", bias=False"
    hint = "conv" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.Conv{n}d({shape[0]}, {out[0]}, {_arg(prim.kernel)}{options})")
    return [_batched(ctx.args[0].var, shape, out, module + "({})")]


@register(ConvTransposeOp)
def lower_conv_transpose(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConvTransposeOp)
    n = prim.ndim
    shape, out = _sizes(ctx, prim.dom_axes.axes), _sizes(ctx, prim.cod_axes.axes)
    groups = ctx.int(prim.groups, "groups")
    options = _options(stride=prim.stride, padding=prim.padding, output_padding=prim.output_padding, groups=(groups,),
                       dilation=prim.dilation)
    options += "" if prim.bias else ", bias=False"
    hint = "conv_t" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.ConvTranspose{n}d({shape[0]}, {out[0]}, {_arg(prim.kernel)}{options})")
    return [_batched(ctx.args[0].var, shape, out, module + "({})")]


def _pool(ctx: RuleContext, fn: str, args: str) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, (MaxPoolOp, AvgPoolOp, AdaptiveAvgPoolOp))
    n = len(prim.axes)
    shape, out = _sizes(ctx, prim.axes.axes), _sizes(ctx, prim.positions.axes)
    return [_batched(ctx.args[0].var, shape, out, f"F.{fn}{n}d({{}}, {args})", channel=False)]


@register(MaxPoolOp)
def lower_maxpool(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, MaxPoolOp)
    args = _arg(prim.kernel) + f", stride={_arg(prim.stride)}" + _options(padding=prim.padding, dilation=prim.dilation)
    return _pool(ctx, "max_pool", args)


@register(AvgPoolOp)
def lower_avgpool(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, AvgPoolOp)
    args = _arg(prim.kernel) + f", stride={_arg(prim.stride)}" + _options(padding=prim.padding)
    return _pool(ctx, "avg_pool", args + ("" if prim.count_include_pad else ", count_include_pad=False"))


@register(AdaptiveAvgPoolOp)
def lower_adaptive_avgpool(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, AdaptiveAvgPoolOp)
    return _pool(ctx, "adaptive_avg_pool", _arg(tuple(_sizes(ctx, prim.positions.axes))))
