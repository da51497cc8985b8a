"""Lowering rules for layer, RMS and batch normalisation.

Layer and RMS normalisation become ``nn.LayerNorm`` / ``nn.RMSNorm`` over the normalised
axes (so weights load from ``torch.nn`` models as ``.weight`` / ``.bias``); when woven axes
sit after them the code generator first moves those axes to the front.  Batch
normalisation becomes an ``nn.BatchNorm1d`` applied to the input viewed as
``(N, channel, L)``: ``N`` gathers every dimension before the channel (implicit batch
dimensions and named axes), ``L`` every named axis after it, which gives exactly the
statistics of ``nn.BatchNorm2d`` / ``3d`` and the same parameter and buffer names.
"""

from __future__ import annotations

from ncd.prims.normalization import BatchNormOp, LayerNormOp, RMSNormOp
from ncd.torch.rules import RuleContext, register


def _shape(ctx: RuleContext, axes: object) -> str:
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]
    return str(sizes[0]) if len(sizes) == 1 else str(tuple(sizes))


def _options(**pairs: tuple[object, object]) -> str:
    """``, key=value`` for every option that differs from its default."""
    return "".join(f", {k}={v!r}" for k, (v, default) in pairs.items() if v != default)


@register(LayerNormOp, weave_aware=True)
def lower_layernorm(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, LayerNormOp)
    options = _options(eps=(prim.eps, 1e-5), elementwise_affine=(prim.affine, True), bias=(prim.bias or not prim.affine, True))
    module = ctx.em.attr("ln" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.LayerNorm({_shape(ctx, prim.axes)}{options})")
    return [f"{module}({ctx.args[0].var})"]


@register(RMSNormOp, weave_aware=True)
def lower_rmsnorm(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, RMSNormOp)
    options = f", eps={prim.eps!r}" + ("" if prim.affine else ", elementwise_affine=False")
    module = ctx.em.attr("rms" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.RMSNorm({_shape(ctx, prim.axes)}{options})")
    return [f"{module}({ctx.args[0].var})"]


@register(BatchNormOp, weave_aware=True)
def lower_batchnorm(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, BatchNormOp)
    if ctx.woven:
        names = ", ".join(f"{w.axis.name}={ctx.int(w.axis.size)}" for w in ctx.woven)
        own = " ".join(prim.axes.names)
        raise ctx.fail(
            f"batch normalisation over '{own}' is woven over {names}, but it computes statistics across its batch"
            f" and cannot be broadcast; name the axes among its own, e.g."
            f" BatchNorm('{' '.join(w.axis.name for w in ctx.woven)} {own}', channel='{prim.channel_axis.name}')"
        )
    channels = ctx.int(prim.channel_axis.size, f"axis {prim.channel_axis.name}")
    options = _options(
        eps=(prim.eps, 1e-5), momentum=(prim.momentum, 0.1), affine=(prim.affine, True),
        track_running_stats=(prim.track_running_stats, True),
    )
    module = ctx.em.attr("bn" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.BatchNorm1d({channels}{options})")
    after = 1
    for a in prim.axes.axes[prim.channel + 1 :]:
        after *= ctx.int(a.size, f"axis {a.name}")
    x = ctx.args[0].var
    view = f"{x}.reshape(-1, {channels})" if prim.channel == len(prim.axes) - 1 else f"{x}.reshape(-1, {channels}, {after})"
    return [f"{module}({view}).reshape({x}.shape)"]
