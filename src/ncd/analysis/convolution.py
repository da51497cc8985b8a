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
decomposition ``★`` then ``L₊`` (groups = 1); transposed convolution and pooling are not
supported by ``ncd.backward`` yet.

``FlopCounterMode`` ignores ``groups`` when it counts a convolution's weight gradient, so
for a grouped convolution it reports ``(groups − 1) x`` the forward FLOPs more than are
done; ``counter_excess`` holds that amount (``backward_matmul`` is the true count).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward, route
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import AnalysisError, backward_rule, cost_rule, unsupported
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.prims.convolution import (
    AdaptiveAvgPoolOp,
    AvgPoolOp,
    ConvolutionTensorOp,
    ConvolutionTensorTOp,
    ConvOp,
    ConvTransposeOp,
    MaxPoolOp,
)
from ncd.prims.derivative import LinearTransposeOp, LinearWeightGradOp
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


@backward_rule(ConvOp)
def backward_conv(box: Box, builder: object) -> BoxBackward:
    """The paper's decomposition: a learned convolution is ``★`` then ``L₊`` over (channels, kernel).

    ``∂x = ★ᵀ(Lᵀ g)``, ``∂W = Σ_positions ∂L(★x, g)``, ``∂b = Σ_positions g`` (``groups=1``).
    """
    prim = box.prim
    if prim.groups != 1:
        raise AnalysisError(f"backward of {box.text()}: grouped convolutions (groups={prim.groups}) are not supported")
    channel, spatial = prim.dom_axes.axes[0], Segment(prim.dom_axes.axes[1:])
    if len(spatial) not in (1, 2):
        raise AnalysisError(f"backward of {box.text()}: ★ has 1 or 2 spatial axes, this convolution {len(spatial)}")
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


unsupported("conv_transpose", "a transposed convolution's transpose with an explicit weight has no primitive yet",
            backward=True)
for _op in ("maxpool", "avgpool", "adaptive_avgpool"):
    unsupported(_op, "pooling's transpose (scatter to the argmax / spread over the window) has no primitive yet",
                backward=True)
