"""Batch normalisation: one mean and variance per channel, over the other axes and every implicit batch dimension.

:func:`BatchNorm` (``BatchNorm("c x y")`` is ``nn.BatchNorm2d(c)`` on ``(N, c, x, y)`` inputs) and, for its backward
diagram, :class:`BatchNormStatsOp` (the forward that also gives the statistics it used) and
:class:`BatchNormBackwardOp` (``BNᵀ``), each with its lowering, cost and backward rules.  A member of the
normalisation family: :mod:`ncd.prims.normalization` imports every name back.  It cannot be woven (broadcast) over an
axis: its statistics mix the entries along it.

>>> import ncd
>>> ncd.BatchNorm("c x y").prim.params()["weight"]
(c,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size
from ncd.prims.normalization_args import _check_eps, _options, axes_segment

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["BatchNormOp", "BatchNormStatsOp", "BatchNormBackwardOp", "BatchNorm"]


@dataclass(frozen=True)
class BatchNormOp(Primitive):
    """Per-``channel`` statistics over the other axes of ``axes`` and all implicit batch dimensions.

    ``channel`` is the position of the channel axis in ``axes``.  In training the batch
    statistics are used and the running estimates (buffers ``running_mean``,
    ``running_var``) are updated with ``momentum``; in evaluation the running estimates are
    used, exactly as ``nn.BatchNorm1d/2d/3d``.
    """

    axes: Segment
    channel: int = 0
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    track_running_stats: bool = True

    op: ClassVar[str] = "batchnorm"
    weave_policy = weaving.always
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        axes_segment(self.axes, "batchnorm")
        _check_eps(self.eps, "batchnorm")
        if isinstance(self.channel, bool) or not isinstance(self.channel, int) or not 0 <= self.channel < len(self.axes):
            raise ParseError(f"batchnorm: channel position {self.channel!r} is not an axis of '{self.axes}'")
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum <= 1:
            raise ParseError(f"batchnorm: momentum must lie in [0, 1], not {self.momentum!r}")

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    @property
    def channel_axis(self) -> Axis:
        return self.axes.axes[self.channel]

    @property
    def reduced(self) -> tuple[str, ...]:
        """The named axes the statistics are taken over (implicit batch dimensions come on top)."""
        return tuple(a.name for k, a in enumerate(self.axes) if k != self.channel)

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": (self.channel_axis.size,), "bias": (self.channel_axis.size,)} if self.affine else {}

    def buffers(self) -> dict[str, tuple[Size, ...]]:
        """Running statistics (not learned, but saved with the module)."""
        if not self.track_running_stats:
            return {}
        return {"running_mean": (self.channel_axis.size,), "running_var": (self.channel_axis.size,)}

    def label(self) -> str:
        return "BN"


def BatchNorm(
    axes: str,
    channel: str | None = None,
    eps: float = 1e-5,
    momentum: float = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
    name: str | None = None,
) -> Box:
    """Batch normalisation on a tensor with axes ``axes``, one mean/variance per ``channel``.

    ``channel`` defaults to the first axis of ``axes``.  Statistics are taken over the other
    axes of ``axes`` **and** over every implicit leading batch dimension: ``BatchNorm("c x y")``
    is ``nn.BatchNorm2d(c)`` on ``(N, c, x, y)`` inputs; ``BatchNorm("c")`` is
    ``nn.BatchNorm1d(c)`` on ``(N, c)``; with a named batch axis write
    ``BatchNorm("b c x y", channel="c")``.
    """
    seg = axes_segment(axes, "batchnorm")
    if channel is None:
        position = 0
    else:
        hits = [k for k, a in enumerate(seg) if a.name == channel]
        if not hits:
            raise ParseError(f"batchnorm: channel axis {channel!r} is not among its axes '{seg}'")
        position = hits[0]
    return Box.make(BatchNormOp(seg, position, float(eps), float(momentum), bool(affine), bool(track_running_stats)), name)


IMPORT.known(BatchNormOp, aten=("aten.batch_norm",))


# -- derivative primitives (backward diagrams) ------------------------------------------------
@dataclass(frozen=True)
class BatchNormStatsOp(Primitive):
    """Batch normalisation that also outputs the per-channel mean and ``1/σ`` it used: ``x -> (y, μ, 1/σ)``.

    Training: the batch statistics; evaluation: the running estimates.  It lowers to the same
    ``nn.BatchNorm1d`` as ``BatchNorm`` (same parameters and buffers).
    """

    axes: Segment
    channel: int = 0
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    track_running_stats: bool = True

    op: ClassVar[str] = "batchnorm_stats"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 <= self.channel < len(self.axes):
            raise ParseError(f"batchnorm stats: channel position {self.channel!r} is not an axis of '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        c = Segment((self.axes.axes[self.channel],))
        return Type((self.axes,)), Type((self.axes, c, c))

    def params(self) -> dict[str, tuple[Size, ...]]:
        c = self.axes.axes[self.channel].size
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def label(self) -> str:
        return "BN, μ, 1/σ"


@dataclass(frozen=True)
class BatchNormBackwardOp(Primitive):
    """The transpose of batch normalisation: ``(x, μ, 1/σ, [w], g) ↦ (∂x, [∂w, ∂b])``.

    ``training``: the statistics depend on the batch, so ``∂x = (1/σ)(ĝ − 𝔼ĝ − x̂ 𝔼[ĝ x̂])`` with the
    means over every axis but the channel; evaluation: the map is linear, ``∂x = ĝ/σ``.
    """

    axes: Segment
    channel: int = 0
    affine: bool = True
    training: bool = True

    op: ClassVar[str] = "batchnorm_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if not 0 <= self.channel < len(self.axes):
            raise ParseError(f"batchnorm backward: channel position {self.channel!r} is not an axis of '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        x, c = self.axes, Segment((self.axes.axes[self.channel],))
        dom = (x, c, c) + ((c,) if self.affine else ()) + (x,)
        return Type(dom), Type((x,) + ((c, c) if self.affine else ()))

    def label(self) -> str:
        return "BNᵀ"


# -- lowering, costs and backward --------------------------------------------------------------
@LOWERING.rule(BatchNormOp)
def lower_batchnorm(prim: BatchNormOp, ctx: RuleContext) -> list[str]:
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


@COST.rule(BatchNormOp)
def cost_batchnorm(prim: BatchNormOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    viewed = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    ctx.save(viewed)
    if ctx.walker.training:
        channel = prim.axes.axes[prim.channel]
        ctx.save(ctx.new((channel,), grad=False), ctx.new((channel,), grad=False))
    n = ctx.numel()
    ctx.other(7 * n, 10 * n)
    return [ctx.output(0)]


@BACKWARD.rule(BatchNormOp)
def backward_batchnorm(prim: BatchNormOp, box: Box, builder: Builder) -> BoxBackward:
    """The forward pass stores the input and the statistics it used (``μ``, ``1/σ``); ``BNᵀ`` is the standard
    batch-norm backward over the reduced axes in training, and linear (``ĝ/σ``) in evaluation."""
    forward = Box(BatchNormStatsOp(prim.axes, prim.channel, prim.eps, prim.momentum, prim.affine, prim.track_running_stats),
                  box.label)
    training = bool(getattr(builder, "training", True)) or not prim.track_running_stats
    back = Box(BatchNormBackwardOp(prim.axes, prim.channel, prim.affine, training))
    stored = (("in", 0), ("aux", 0), ("aux", 1)) + ((("param", "weight"),) if prim.affine else ())
    return BoxBackward(stored, back, ("weight", "bias") if prim.affine else (), forward=forward, aux_like=(0, 0))


def _channel_view(ctx: RuleContext, x: str, axes: Segment, channel: int) -> tuple[str, int]:
    """``x`` viewed as ``(N, C, L)`` like batch normalisation's lowering, and ``C``."""
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in axes]
    after = 1
    for v in sizes[channel + 1:]:
        after *= v
    return f"{x}.reshape(-1, {sizes[channel]}, {after})", sizes[channel]


@LOWERING.rule(BatchNormStatsOp)
def lower_batchnorm_stats(prim: BatchNormStatsOp, ctx: RuleContext) -> list[str]:
    """The same ``nn.BatchNorm1d`` as ``BatchNorm``, and the statistics it normalised with."""
    defaults = {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
    options = "".join(f", {k}={getattr(prim, k)!r}" for k, v in defaults.items() if getattr(prim, k) != v)
    x = ctx.args[0].var
    view, channels = _channel_view(ctx, x, prim.axes, prim.channel)
    module = ctx.em.attr("bn" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.BatchNorm1d({channels}{options})")
    flat = ctx.em.assign("x_ncl", view, ctx.args[0].axes)
    batch = f"not {module}.track_running_stats or {module}.training"
    mean = ctx.em.assign("mean", f"{flat}.mean((0, 2)) if {batch} else {module}.running_mean", ())
    var = f"{flat}.var((0, 2), unbiased=False) if {batch} else {module}.running_var"
    rstd = ctx.em.assign("rstd", f"torch.rsqrt(({var}) + {prim.eps!r})", ())
    return [f"{module}({flat}).reshape({x}.shape)", f"{mean}.detach()", f"{rstd}.detach()"]


@LOWERING.rule(BatchNormBackwardOp)
def lower_batchnorm_backward(prim: BatchNormBackwardOp, ctx: RuleContext) -> list[str]:
    x, mean, rstd = (a.var for a in ctx.args[:3])
    g = ctx.args[-1].var
    em = ctx.em
    flat, _ = _channel_view(ctx, x, prim.axes, prim.channel)
    gflat, _ = _channel_view(ctx, g, prim.axes, prim.channel)
    gv = em.assign("g_ncl", gflat, ctx.args[-1].axes)
    xhat = em.assign("x_hat", f"({flat} - {mean}[:, None]) * {rstd}[:, None]", ctx.args[0].axes)
    gh = em.assign("g_hat", f"{gv} * {ctx.args[3].var}[:, None]", ctx.args[-1].axes) if prim.affine else gv
    if prim.training:
        dx = f"{rstd}[:, None] * ({gh} - {gh}.mean((0, 2), keepdim=True) - {xhat} * ({gh} * {xhat}).mean((0, 2), keepdim=True))"
    else:
        dx = f"{gh} * {rstd}[:, None]"
    grads = [f"({gv} * {xhat}).sum((0, 2))", f"{gv}.sum((0, 2))"] if prim.affine else []
    return [f"({dx}).reshape({g}.shape)"] + grads


@COST.rule(BatchNormStatsOp)
def cost_batchnorm_stats(prim: BatchNormStatsOp, ctx: CostContext) -> list[Tensor]:
    """As batch normalisation; the statistics are outputs (training: recomputed with ``mean``/``var``, ``rsqrt`` kept)."""
    x = ctx.inputs[0]
    viewed = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    channel = (prim.axes.axes[prim.channel],)
    ctx.save(viewed)
    training = ctx.walker.training or not prim.track_running_stats
    if training:
        ctx.save(ctx.new(channel, grad=False), ctx.new(channel, grad=False))
    rstd = ctx.new(channel, grad=x.grad and training)
    if x.grad and training:
        ctx.save(rstd)
    n = ctx.numel()
    ctx.other(7 * n + 3 * x.numel, 10 * n)
    return [ctx.output(0), ctx.new(channel, grad=False), ctx.new(channel, grad=False)]


@COST.rule(BatchNormBackwardOp)
def cost_batchnorm_backward(prim: BatchNormBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(12 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(j) for j in range(len(ctx.out_axes))]


for _cls in (BatchNormStatsOp, BatchNormBackwardOp):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
