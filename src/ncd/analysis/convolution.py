"""Cost and backward rules for the convolution family.

Lowering folds the leading axes into one batch axis (``x.reshape(-1, c, ...)``, a copy
unless the input is contiguous), then calls torch.  ``nn.ConvNd`` costs
``2·N·C_out·∏out·(C_in/groups)·∏kernel`` FLOPs (what the FLOP counter counts), repeated
backward for the weight and, if the input needs one, for the input; it keeps its
(reshaped) input.  Transposed convolution costs ``2·N·∏in·∏kernel·C_in·(C_out/groups)``.
Max pooling keeps its input and the int64 argmax indices; average pooling its input;
adaptive average pooling nothing.  ``★`` (pad + unfold) is a view with overlapping
windows (no reshape of it is a view); ``★ᵀ`` (fold) writes a new tensor.  Backward: ``★``
and ``★ᵀ`` transpose to each other; a learned convolution differentiates through the paper's
decomposition ``★`` then ``L₊`` (groups = 1, 1 or 2 axes), otherwise (and when woven over
leading axes) by the transposed convolution with the same weight and a one-einsum weight
gradient ``∂★``; a transposed convolution's input gradient is the convolution (the transpose of
``★ᵀ`` is ``★``); max pooling stores its argmax and routes the cotangent there (``Maxᵀ``); average
pooling transposes to ``𝔼ᵀ`` then ``★ᵀ``.

``FlopCounterMode`` ignores ``groups`` when it counts a convolution's weight gradient, so
for a grouped convolution it reports ``(groups − 1) x`` the forward FLOPs more than are
done; ``counter_excess`` holds that amount (``backward_matmul`` is the true count).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward, batched_rule, route, woven_scalar
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.size import size
from ncd.prims.convolution import (
    AdaptiveAvgPoolOp,
    AvgPoolOp,
    ConvolutionTensorOp,
    ConvolutionTensorTOp,
    ConvOp,
    ConvTransposeOp,
    MaxPoolOp,
    transposed_size,
)
from ncd.prims.derivative import (
    AvgPoolTransposeOp,
    ConvWeightGradOp,
    ConvWithWeightOp,
    ExpandOp,
    LinearTransposeOp,
    LinearWeightGradOp,
    MaxPoolArgmaxOp,
    MaxPoolBackwardOp,
    conv_weight_segment,
)
from ncd.prims.elementwise import ScaleOp
from ncd.prims.linear import EinsumOp


def _folded(ctx: CostContext) -> Tensor:
    """The input reshaped to ``(-1, own axes...)``: itself if contiguous, else a copy."""
    x = ctx.inputs[0]
    return x if x.contiguous else ctx.new(x.axes, grad=x.grad)


def _prod(values: object) -> sympy.Expr:
    result = sympy.Integer(1)
    for v in values:  # type: ignore[attr-defined]
        result = result * v
    return result


@cost_rule(ConvOp)
def cost_conv(ctx: CostContext) -> list[Tensor]:
    prim = ctx.prim
    x = _folded(ctx)
    out = ctx.out_axes[0]
    n_batch = numel(out) / numel(prim.cod_axes.axes)
    c_in, c_out = prim.dom_axes.axes[0].size, prim.cod_axes.axes[0].size
    spatial = numel(prim.cod_axes.axes[1:])
    flops = 2 * n_batch * c_out * spatial * (c_in / prim.groups) * _prod(prim.kernel)
    ctx.matmul(flops, flops * (1 + int(x.grad)))
    ctx.metrics.counter_excess += flops * (prim.groups - 1)
    ctx.save(x)
    if prim.bias:
        ctx.other(numel(out), numel(out))
    return [ctx.output(0)]


@cost_rule(ConvTransposeOp)
def cost_conv_transpose(ctx: CostContext) -> list[Tensor]:
    prim = ctx.prim
    x = _folded(ctx)
    n_batch = ctx.inputs[0].numel / numel(prim.dom_axes.axes)
    c_in, c_out = prim.dom_axes.axes[0].size, prim.cod_axes.axes[0].size
    spatial = numel(prim.dom_axes.axes[1:])
    flops = 2 * n_batch * spatial * _prod(prim.kernel) * c_in * (c_out / prim.groups)
    ctx.matmul(flops, flops * (1 + int(x.grad)))
    ctx.metrics.counter_excess += flops * (prim.groups - 1)
    ctx.save(x)
    if prim.bias:
        ctx.other(ctx.numel(), ctx.numel())
    return [ctx.output(0)]


@cost_rule(MaxPoolOp)
def cost_maxpool(ctx: CostContext) -> list[Tensor]:
    x = _folded(ctx)
    if x.grad:
        ctx.save(x, ctx.new(ctx.out_axes[0], grad=False, dtype="index"))
    ctx.other(ctx.numel() * _prod(ctx.prim.kernel), ctx.numel())
    return [ctx.output(0)]


@cost_rule(AvgPoolOp)
def cost_avgpool(ctx: CostContext) -> list[Tensor]:
    x = _folded(ctx)
    if x.grad:
        ctx.save(x)
    ctx.other(ctx.numel() * _prod(ctx.prim.kernel), ctx.inputs[0].numel)
    return [ctx.output(0)]


@cost_rule(AdaptiveAvgPoolOp)
def cost_adaptive_avgpool(ctx: CostContext) -> list[Tensor]:
    """Pooling to size 1 everywhere is a mean (keeps nothing); otherwise the input is kept."""
    x = _folded(ctx)
    if x.grad and any(a.size != 1 for a in ctx.prim.positions):
        ctx.save(x)
    ctx.other(ctx.inputs[0].numel, ctx.inputs[0].numel)
    return [ctx.output(0)]


@cost_rule(ConvolutionTensorOp)
def cost_conv_tensor(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if any(ctx.prim.padding):
        x = ctx.new(x.axes, grad=x.grad)  # F.pad writes a new tensor
    return [Tensor(x.storage, ctx.out_axes[0], (), x.grad, x.dtype, dense=False)]


@cost_rule(ConvolutionTensorTOp)
def cost_conv_tensor_t(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if not x.contiguous:
        ctx.new(x.axes, grad=x.grad)
    ctx.other(x.numel, sympy.Integer(0))
    return [ctx.output(0)]


# -- backward ------------------------------------------------------------------------------
def _swap(prim: ConvolutionTensorOp, cls: type) -> Box:
    return Box(cls(prim.axes, prim.positions, prim.kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation))


@backward_rule(ConvolutionTensorOp)
def backward_conv_tensor(box: Box, builder: object) -> BoxBackward:
    """``★`` is linear: its transpose is ``★ᵀ`` (fold: overlapping windows summed)."""
    return BoxBackward((), _swap(box.prim, ConvolutionTensorTOp))


@backward_rule(ConvolutionTensorTOp)
def backward_conv_tensor_t(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), _swap(box.prim, ConvolutionTensorOp))


def _woven(box: Box, axes: tuple, dom_pos: tuple, cod_pos: tuple) -> Diagram:
    """``box`` woven over ``axes`` (outermost first), each at the same positions."""
    result: Diagram = box
    for axis in reversed(axes):
        result = Weave(result, axis, dom_pos, cod_pos)
    return result


def _decomposed(box: Box) -> BoxBackward:
    """The paper's decomposition: a learned convolution is ``★`` then ``L₊`` over (channels, kernel).

    ``∂x = ★ᵀ(Lᵀ g)``, ``∂W = Σ_positions ∂L(★x, g)``, ``∂b = Σ_positions g`` (``groups=1``, 1 or 2 spatial axes).
    """
    prim = box.prim
    channel, spatial = prim.dom_axes.axes[0], Segment(prim.dom_axes.axes[1:])
    out_channel, positions = prim.cod_axes.axes[0], Segment(prim.cod_axes.axes[1:])
    taken = set(prim.dom_axes.names) | set(prim.cod_axes.names)
    kernel_names = tuple(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken) for i in range(1, len(spatial) + 1))
    star = ConvolutionTensorOp(spatial, positions, kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation)
    star_t = ConvolutionTensorTOp(spatial, positions, kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation)
    window = Segment((channel,) + star.kernel_axes())  # what L maps from, at each position
    cod = Segment((out_channel,))
    n = len(positions)
    windows = Weave(Box(star), channel, (0,), (0,))  # c x y -> c x′ y′ κ1 κ2
    weight = _woven(Box(LinearWeightGradOp(window, cod)), positions.axes, (1, 1), (0,))
    weight_sum = Box(EinsumOp(Type((weight.cod[0],)), Segment(weight.cod[0].axes[n:])))
    d_weight = Seq.of(Par.of(windows, Identity(Type((prim.cod_axes,)))), weight, weight_sum)
    d_input = Seq.of(_woven(Box(LinearTransposeOp(window, cod)), positions.axes, (1, None), (1,)),
                     Weave(Box(star_t), channel, (0,), (0,)))
    parts = [d_input, d_weight]
    picks = [2, 1, 0, 2]
    if prim.bias:
        parts.append(Box(EinsumOp(Type((prim.cod_axes,)), cod)))
        picks.append(2)
    segments = [prim.dom_axes, d_input.dom[1], prim.cod_axes]
    grads = ("weight", "bias") if prim.bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route(segments, picks), Par.of(*parts)), grads)


def _with_weight(box: Box, batch: tuple) -> BoxBackward:
    """Any learned convolution or transposed convolution (groups, 1 to 3 spatial axes).

    ``∂x``: the transposed convolution of ``g`` with the same weight (for a transposed
    convolution: the convolution — the transpose of ``★ᵀ`` is ``★``); ``∂W``: the windows
    contracted with the other operand over positions and the leading ``batch`` in one einsum
    (``∂★``); ``∂b = Σ g``.
    """
    prim = box.prim
    transposed = isinstance(prim, ConvTransposeOp)
    dom, cod = prim.dom_axes, prim.cod_axes
    weight = conv_weight_segment(dom, cod, prim.kernel, prim.groups, transposed)
    if transposed:
        output_padding: tuple[int, ...] = ()
    else:
        output_padding = tuple(int(a.size - transposed_size(b.size, k, s, p, d)) if not (a.size - transposed_size(
            b.size, k, s, p, d)).free_symbols else 0 for a, b, k, s, p, d in
            zip(dom.axes[1:], cod.axes[1:], prim.kernel, prim.stride, prim.padding, prim.dilation))
    d_input = Box(ConvWithWeightOp(cod, dom, weight, prim.kernel, prim.stride, prim.padding, prim.dilation,
                                   output_padding, prim.groups, not transposed, Segment(batch)))
    d_weight = Box(ConvWeightGradOp(dom, cod, weight, prim.kernel, prim.stride, prim.padding, prim.dilation, prim.groups,
                                    transposed, Segment(batch)))
    xb, gb = Segment(tuple(batch) + dom.axes), Segment(tuple(batch) + cod.axes)
    parts = [d_input, d_weight]
    picks = [2, 1, 0, 2]
    if prim.bias:
        parts.append(Box(EinsumOp(Type((gb,)), Segment((cod.axes[0],)))))
        picks.append(2)
    grads = ("weight", "bias") if prim.bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route([xb, weight, gb], picks), Par.of(*parts)), grads)


@backward_rule(ConvOp)
@batched_rule
def backward_conv(box: Box, builder: object, batch: tuple = ()) -> BoxBackward:
    """Ungrouped 1-d/2-d: through ``★`` (the paper's decomposition); otherwise, or woven over leading axes, ``_with_weight``."""
    prim = box.prim
    if prim.groups == 1 and len(prim.kernel) in (1, 2) and not batch:
        return _decomposed(box)
    return _with_weight(box, batch)


@backward_rule(ConvTransposeOp)
@batched_rule
def backward_conv_transpose(box: Box, builder: object, batch: tuple = ()) -> BoxBackward:
    return _with_weight(box, batch)


@backward_rule(MaxPoolOp)
def backward_maxpool(box: Box, builder: object) -> BoxBackward:
    """Route each cotangent to its window's maximum: the forward pass stores the argmax (an index), ``Maxᵀ`` scatters."""
    prim = box.prim
    forward = Box(MaxPoolArgmaxOp(prim.axes, prim.positions, prim.kernel, prim.stride, prim.padding, prim.dilation))
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


@backward_rule(AvgPoolOp)
def backward_avgpool(box: Box, builder: object) -> BoxBackward:
    """Average pooling is linear: its transpose ``𝔼ᵀ`` then ``★ᵀ`` (drawn with ``★ᵀ`` for 1 or 2 axes, padding counted)."""
    prim = box.prim
    if prim.count_include_pad and len(prim.axes) in (1, 2):
        return BoxBackward((), _spread(prim.positions, prim.axes, prim.kernel, prim.stride, prim.padding))
    return BoxBackward((), Box(AvgPoolTransposeOp(prim.axes, prim.positions, prim.kernel, prim.stride, prim.padding,
                                                  prim.count_include_pad)))


@backward_rule(AdaptiveAvgPoolOp)
def backward_adaptive_avgpool(box: Box, builder: object) -> BoxBackward:
    """Even windows (the size divisible by the output's) are an average pooling's; uneven ones ``𝔼ᵀ★ᵀ`` in one box."""
    prim = box.prim
    try:
        ratios = [int(a.size / b.size) for a, b in zip(prim.axes, prim.positions) if (a.size / b.size).is_integer]
    except TypeError:  # pragma: no cover - symbolic sizes
        ratios = []
    if len(ratios) == len(prim.axes) and len(prim.axes) in (1, 2):
        k = tuple(ratios)
        return BoxBackward((), _spread(prim.positions, prim.axes, k, k, (0,) * len(k)))
    return BoxBackward((), Box(AvgPoolTransposeOp(prim.axes, prim.positions, adaptive=True)))
