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
  says which axis to add to its domain.  It lives in :mod:`ncd.prims.batchnorm` (every name is also imported
  from here); the arguments every normalisation checks, in :mod:`ncd.prims.normalization_args`.

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
from ncd.ir.axes import Segment, Type, numel, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size
from ncd.prims.batchnorm import BatchNorm as BatchNorm
from ncd.prims.batchnorm import BatchNormBackwardOp as BatchNormBackwardOp
from ncd.prims.batchnorm import BatchNormOp as BatchNormOp
from ncd.prims.batchnorm import BatchNormStatsOp as BatchNormStatsOp
from ncd.prims.normalization_args import _check_eps, _options, axes_segment

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["LayerNormOp", "RMSNormOp", "BatchNormOp", "LayerNorm", "RMSNorm", "BatchNorm", "axes_segment"]


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


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(LayerNormOp, aten=("aten.layer_norm",))
IMPORT.known(RMSNormOp, aten=("aten.rms_norm",), by="ncd.trace.module_idioms")


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


# -- lowering ----------------------------------------------------------------------------------
def _shape(ctx: RuleContext, axes: object) -> str:
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]
    return str(sizes[0]) if len(sizes) == 1 else str(tuple(sizes))


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


@COST.rule(NormBackwardOp)
def cost_norm_backward(prim: NormBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(10 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(j) for j in range(len(ctx.out_axes))]


for _cls in (NormBackwardOp,):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
