"""Normalisation: layer, RMS and batch normalisation (a circle touched by the normalised axes).

The rule for which axes are reduced is always explicit:

* :func:`LayerNorm` / :func:`RMSNorm` take the axes they normalise over (``"m"``, ``"c x y"``);
  their learned weight (and bias) lives on exactly those axes.  The box's domain is those
  axes, so composing it after ``"b t m"`` weaves it over ``b t``: every token is normalised
  on its own, as the paper's convention says.
* :func:`BatchNorm` keeps one mean and variance per **channel** and reduces over *every other
  axis of its domain and every implicit leading batch dimension* of the lowered module's
  inputs.  ``BatchNorm("c x y")`` on a module called with ``(N, c, x, y)`` tensors is
  ``nn.BatchNorm2d(c)``.  When the diagram names its batch axis, put it in the domain and
  name the channel: ``BatchNorm("b c x y", channel="c")``.  Batch normalisation cannot be
  *woven* (broadcast) over an axis, because weaving means "independently for each index"
  while batch statistics mix those indices; lowering a woven batch norm is an error that
  says which axis to add to its domain.

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.LayerNorm("m")).cod)
'b t m'
>>> ncd.BatchNorm("c x y").prim.params()["weight"]
(c,)
>>> ncd.BatchNorm("b c x y", channel="c").prim.reduced
('b', 'x', 'y')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, numel, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["LayerNormOp", "RMSNormOp", "BatchNormOp", "LayerNorm", "RMSNorm", "BatchNorm", "axes_segment"]


def axes_segment(axes: str | Segment, what: str) -> Segment:
    """One segment of distinct float axes, read from text such as ``"c x y"``."""
    if isinstance(axes, Segment):
        seg = axes
    else:
        if not isinstance(axes, str):
            raise ParseError(f"{what}: axes must be text such as 'm' or 'c x y', not {type(axes).__name__} {axes!r}")
        typ = parse_type(axes)
        if len(typ) != 1:
            raise ParseError(f"{what}: axes {axes!r} must be one segment (no commas)")
        seg = typ[0]
    if not seg.axes:
        raise ParseError(f"{what}: needs at least one axis to normalise over")
    if seg.dtype != "float":
        raise ParseError(f"{what}: normalises float tensors, not '{seg}'")
    if len(set(seg.names)) != len(seg.names):
        raise ParseError(f"{what}: an axis occurs twice in '{seg}'")
    return seg


def _check_eps(eps: float, what: str) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ParseError(f"{what}: eps must be a finite non-negative number, not {eps!r}")


class _AxisNorm(Primitive):
    """What layer and RMS norms share (no fields of its own, so theirs, their order and their JSON are their own):
    statistics over their own ``axes``, last in the tensor, with a learned weight over them."""

    axes: Segment
    eps: float

    weave_policy = weaving.own_last
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        axes_segment(self.axes, self.op)
        _check_eps(self.eps, self.op)

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t


@dataclass(frozen=True)
class LayerNormOp(_AxisNorm):
    """Normalise to zero mean and unit variance over ``axes``; learned weight/bias over ``axes``."""

    axes: Segment
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True

    op: ClassVar[str] = "layernorm"

    def params(self) -> dict[str, tuple[Size, ...]]:
        shapes: dict[str, tuple[Size, ...]] = {}
        if self.affine:
            shapes["weight"] = self.axes.sizes
            if self.bias:
                shapes["bias"] = self.axes.sizes
        return shapes

    def label(self) -> str:
        return "LN"


@dataclass(frozen=True)
class RMSNormOp(_AxisNorm):
    """Divide by the root mean square over ``axes`` (no centring); learned weight over ``axes``.

    ``offset`` (with ``affine``): the scale is ``offset + weight``, not ``weight`` — Gemma's zero-centred norm
    ``x / rms(x) * (1 + w)``, whose weight starts at zeros."""

    axes: Segment
    eps: float = 1e-6
    affine: bool = True
    offset: float = 0.0

    op: ClassVar[str] = "rmsnorm"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_offset(self.offset, self.affine, self.op)

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": self.axes.sizes} if self.affine else {}

    def label(self) -> str:
        return "RMS" if not self.offset else f"RMS{_offset_text(self.offset)}"


def _check_offset(offset: float, affine: bool, what: str) -> None:
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ParseError(f"{what}: offset must be a finite number, not {offset!r}")
    if offset and not affine:
        raise ParseError(f"{what}: an offset {offset!r} is added to the learned weight; without a weight (affine=False)"
                         " there is none to add it to")


def _offset_text(offset: float) -> str:
    """How a scale ``offset + w`` is written after a norm's name: ``·(1+w)``."""
    return f"·({offset:g}+w)" if offset > 0 else f"·(w−{-offset:g})"


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


def LayerNorm(axes: str, eps: float = 1e-5, affine: bool = True, bias: bool = True, name: str | None = None) -> Box:
    """Layer normalisation over ``axes`` (e.g. ``"m"`` or ``"c x y"``), woven over every other axis.

    ``affine`` adds a learned weight over ``axes``; ``bias`` (with ``affine``) a learned bias.
    """
    return Box.make(LayerNormOp(axes_segment(axes, "layernorm"), float(eps), bool(affine), bool(bias)), name)


def RMSNorm(axes: str, eps: float = 1e-6, affine: bool = True, name: str | None = None, offset: float = 0.0) -> Box:
    """RMS normalisation over ``axes``: ``x / sqrt(mean(x²) + eps) * weight``.

    ``offset``: scaled by ``offset + weight`` instead (Gemma's ``(1 + w)``, the weight starting at zeros).

    >>> import ncd
    >>> ncd.RMSNorm("m", offset=1.0).prim.label()
    'RMS·(1+w)'
    """
    return Box.make(RMSNormOp(axes_segment(axes, "rmsnorm"), float(eps), bool(affine), float(offset)), name)


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


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(LayerNormOp, aten=("aten.layer_norm",))
IMPORT.known(RMSNormOp, aten=("aten.rms_norm",), by="ncd.trace.module_idioms")
IMPORT.known(BatchNormOp, aten=("aten.batch_norm",))


# -- derivative primitives of the family (backward diagrams) -----------------------------------
@dataclass(frozen=True)
class NormBackwardOp(Primitive):
    """The transpose of layer (``norm="layer"``) or RMS (``"rms"``) normalisation over ``axes``.

    ``(x, [w], g) ↦ (∂x, [g ⊙ x̂], [g])``: the statistics are recomputed from the stored input.
    """

    norm: str
    axes: Segment
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True
    offset: float = 0.0

    op: ClassVar[str] = "norm_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.norm not in ("layer", "rms"):
            raise ParseError(f"norm backward: the normalisation must be 'layer' or 'rms', not {self.norm!r}")
        if self.bias and (self.norm != "layer" or not self.affine):
            raise ParseError(f"norm backward over '{self.axes}': only an affine layer norm has a bias")
        _check_offset(self.offset, self.affine, "norm backward")

    def signature(self) -> tuple[Type, Type]:
        x = self.axes
        dom = (x,) + ((x,) if self.affine else ()) + (x,)
        cod = (x,) + ((x,) if self.affine else ()) + ((x,) if self.bias else ())
        return Type(dom), Type(cod)

    def label(self) -> str:
        return ("LN" if self.norm == "layer" else "RMS") + (_offset_text(self.offset) if self.offset else "") + "ᵀ"


def NormBackward(norm: str, axes: str, eps: float = 1e-5, affine: bool = True, bias: bool | None = None) -> Box:
    """The transpose of ``LayerNorm`` (``norm="layer"``) or ``RMSNorm`` (``"rms"``) over ``axes``."""
    seg = parse_type(axes)
    if len(seg) != 1:
        raise ParseError(f"norm backward: {axes!r} must be one segment")
    return Box.make(NormBackwardOp(norm, seg[0], float(eps), bool(affine), (norm == "layer" and affine) if bias is None
                                   else bool(bias)))


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


# -- lowering ----------------------------------------------------------------------------------
def _shape(ctx: RuleContext, axes: object) -> str:
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]
    return str(sizes[0]) if len(sizes) == 1 else str(tuple(sizes))


def _options(**pairs: tuple[object, object]) -> str:
    """``, key=value`` for every option that differs from its default."""
    return "".join(f", {k}={v!r}" for k, (v, default) in pairs.items() if v != default)


@LOWERING.rule(LayerNormOp)
def lower_layernorm(prim: LayerNormOp, ctx: RuleContext) -> list[str]:
    options = _options(eps=(prim.eps, 1e-5), elementwise_affine=(prim.affine, True), bias=(prim.bias or not prim.affine, True))
    module = ctx.em.attr("ln" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.LayerNorm({_shape(ctx, prim.axes)}{options})")
    return [f"{module}({ctx.args[0].var})"]


@LOWERING.rule(RMSNormOp)
def lower_rmsnorm(prim: RMSNormOp, ctx: RuleContext) -> list[str]:
    """``nn.RMSNorm``; with an offset, a weightless one times ``(offset + weight)``, the weight a parameter of zeros
    (``x * rsqrt(mean(x²) + eps) * (offset + w)`` as Gemma computes it, in that order: the same numbers)."""
    hint = "rms" + (f"_{ctx.box.label}" if ctx.box.label else "")
    shape = _shape(ctx, prim.axes)
    affine = prim.affine and not prim.offset
    options = f", eps={prim.eps!r}" + ("" if affine else ", elementwise_affine=False")
    module = ctx.em.attr(hint, f"nn.RMSNorm({shape}{options})")
    if not prim.offset:
        return [f"{module}({ctx.args[0].var})"]
    weight = ctx.em.attr(hint + "_weight", f"nn.Parameter(torch.zeros({shape}))")
    return [f"{module}({ctx.args[0].var}) * ({prim.offset!r} + {weight})"]


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


# -- costs and backward ------------------------------------------------------------------------
def _rows(ctx: CostContext) -> sympy.Expr:
    return ctx.inputs[0].numel / numel(ctx.prim.axes.axes)


@COST.rule(LayerNormOp)
def cost_layernorm(prim: LayerNormOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    rows = _rows(ctx)
    stats = tuple(a for a in ctx.out_axes[0] if a.name not in prim.axes.names)
    ctx.save(x, ctx.new(stats, grad=False), ctx.new(stats, grad=False))
    n = ctx.numel()
    ctx.other(7 * n, 10 * n)
    _ = rows
    return [ctx.output(0)]


@COST.rule(RMSNormOp)
def cost_rmsnorm(prim: RMSNormOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    stats = tuple(a for a in ctx.out_axes[0] if a.name not in prim.axes.names)
    ctx.save(x, ctx.new(stats, grad=False))
    if prim.affine:
        ctx.save(ctx.new(x.axes, x.order, grad=True))
    if prim.offset and x.grad:  # (offset + weight: kept by the product for the input's gradient)
        ctx.save(ctx.new(tuple(a for a in ctx.out_axes[0] if a.name in prim.axes.names), grad=True))
    n = ctx.numel()
    shifted = numel(prim.axes.axes) if prim.offset else 0  # (offset + weight, once per call)
    ctx.other(5 * n + shifted, 8 * n)
    return [ctx.like(0, x)]


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


# -- backward ------------------------------------------------------------------------------
def _norm_backward(prim: LayerNormOp | RMSNormOp, kind: str) -> BoxBackward:
    affine = prim.affine
    bias = isinstance(prim, LayerNormOp) and affine and prim.bias
    x = prim.axes
    op = NormBackwardOp(kind, x, prim.eps, affine, bias, prim.offset if isinstance(prim, RMSNormOp) else 0.0)
    stored = (("in", 0),) + ((("param", "weight"),) if affine else ())
    grads = (("weight",) if affine else ()) + (("bias",) if bias else ())
    return BoxBackward(stored, Box(op), grads)


@BACKWARD.rule(LayerNormOp)
def backward_layernorm(prim: LayerNormOp, box: Box, builder: Builder) -> BoxBackward:
    return _norm_backward(prim, "layer")


@BACKWARD.rule(RMSNormOp)
def backward_rmsnorm(prim: RMSNormOp, box: Box, builder: Builder) -> BoxBackward:
    return _norm_backward(prim, "rms")


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


@LOWERING.rule(NormBackwardOp)
def lower_norm_backward(prim: NormBackwardOp, ctx: RuleContext) -> list[str]:
    n = len(prim.axes)
    dims = tuple(range(-n, 0))
    em, axes = ctx.em, ctx.args[0].axes
    x, g = ctx.args[0].var, ctx.args[-1].var
    if prim.norm == "layer":
        x = em.assign("centred", f"{x} - {x}.mean({dims}, keepdim=True)", axes)
    rstd = em.assign("rstd", f"torch.rsqrt(({x} * {x}).mean({dims}, keepdim=True) + {prim.eps!r})", axes)
    xhat = em.assign("x_hat", f"{x} * {rstd}", axes)
    scale = f"({prim.offset!r} + {ctx.args[1].var})" if prim.offset else ctx.args[1].var if prim.affine else ""
    gh = em.assign("g_hat", f"{g} * {scale}", axes) if prim.affine else g
    centre = f" - {gh}.mean({dims}, keepdim=True)" if prim.norm == "layer" else ""
    dx = f"{rstd} * ({gh}{centre} - {xhat} * ({gh} * {xhat}).mean({dims}, keepdim=True))"
    return [dx] + ([f"{g} * {xhat}"] if prim.affine else []) + ([g] if prim.bias else [])


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


@COST.rule(NormBackwardOp)
def cost_norm_backward(prim: NormBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(10 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(j) for j in range(len(ctx.out_axes))]


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

for _cls in (NormBackwardOp, BatchNormStatsOp, BatchNormBackwardOp,):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
