"""Cost and backward rules for layer, RMS and batch normalisation.

What autograd keeps: layer norm its input and the per-row mean and reciprocal standard
deviation; RMS norm its input, the per-row ``rsqrt`` and (with a weight) the normalised
input; batch norm in training its input (as ``(N, C, L)``, a copy unless contiguous) and the
per-channel batch mean and inverse deviation, in evaluation its input.
Backward: ``∂x`` recomputes the statistics from the stored input (``NormBackward``); the
weight's gradient is ``g ⊙ x̂`` and the bias's ``g``, summed over the other axes.  Batch norm's
forward stores its batch (or running) statistics, and ``BNᵀ`` follows the module's mode
(``ncd.backward(d, training=...)``).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.diagram import Box
from ncd.prims.derivative import BatchNormBackwardOp, BatchNormStatsOp, NormBackwardOp
from ncd.prims.normalization import BatchNormOp, LayerNormOp, RMSNormOp


def _rows(ctx: CostContext) -> sympy.Expr:
    return ctx.inputs[0].numel / numel(ctx.prim.axes.axes)


@cost_rule(LayerNormOp)
def cost_layernorm(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    rows = _rows(ctx)
    stats = tuple(a for a in ctx.out_axes[0] if a.name not in ctx.prim.axes.names)
    ctx.save(x, ctx.new(stats, grad=False), ctx.new(stats, grad=False))
    n = ctx.numel()
    ctx.other(7 * n, 10 * n)
    _ = rows
    return [ctx.output(0)]


@cost_rule(RMSNormOp)
def cost_rmsnorm(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    stats = tuple(a for a in ctx.out_axes[0] if a.name not in ctx.prim.axes.names)
    ctx.save(x, ctx.new(stats, grad=False))
    if ctx.prim.affine:
        ctx.save(ctx.new(x.axes, x.order, grad=True))
    n = ctx.numel()
    ctx.other(5 * n, 8 * n)
    return [ctx.like(0, x)]


@cost_rule(BatchNormOp)
def cost_batchnorm(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    prim = ctx.prim
    viewed = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    ctx.save(viewed)
    if ctx.walker.training:
        channel = prim.axes.axes[prim.channel]
        ctx.save(ctx.new((channel,), grad=False), ctx.new((channel,), grad=False))
    n = ctx.numel()
    ctx.other(7 * n, 10 * n)
    return [ctx.output(0)]


# -- backward ------------------------------------------------------------------------------
def _norm_backward(box: Box, kind: str) -> BoxBackward:
    prim = box.prim
    affine = prim.affine
    bias = kind == "layer" and affine and prim.bias
    x = prim.axes
    op = NormBackwardOp(kind, x, prim.eps, affine, bias)
    stored = (("in", 0),) + ((("param", "weight"),) if affine else ())
    grads = (("weight",) if affine else ()) + (("bias",) if bias else ())
    return BoxBackward(stored, Box(op), grads)


@backward_rule(LayerNormOp)
def backward_layernorm(box: Box, builder: object) -> BoxBackward:
    return _norm_backward(box, "layer")


@backward_rule(RMSNormOp)
def backward_rmsnorm(box: Box, builder: object) -> BoxBackward:
    return _norm_backward(box, "rms")


@backward_rule(BatchNormOp)
def backward_batchnorm(box: Box, builder: object) -> BoxBackward:
    """The forward pass stores the input and the statistics it used (``μ``, ``1/σ``); ``BNᵀ`` is the standard
    batch-norm backward over the reduced axes in training, and linear (``ĝ/σ``) in evaluation."""
    prim = box.prim
    forward = Box(BatchNormStatsOp(prim.axes, prim.channel, prim.eps, prim.momentum, prim.affine, prim.track_running_stats),
                  box.label)
    training = bool(getattr(builder, "training", True)) or not prim.track_running_stats
    back = Box(BatchNormBackwardOp(prim.axes, prim.channel, prim.affine, training))
    stored = (("in", 0), ("aux", 0), ("aux", 1)) + ((("param", "weight"),) if prim.affine else ())
    return BoxBackward(stored, back, ("weight", "bias") if prim.affine else (), forward=forward, aux_like=(0, 0))
