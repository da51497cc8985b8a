"""Resampling spatial axes: interpolation (nearest, linear, bilinear, bicubic, trilinear) and adaptive max pooling.

* ``Interpolate("y x", "y2:2*y x2:2*x", mode="nearest")`` resamples the spatial axes to new sizes,
  as ``F.interpolate`` does (``scales``: the scale factors torch was given, which decide the
  source positions when present; ``align_corners`` for the linear modes).  It is linear; its
  transpose (:class:`InterpolateTransposeOp`) adds every output's cotangent back onto the
  input entries it was read from, with the same weights.
* ``AdaptiveMaxPool("y x", (2, 3))`` takes the maximum over ``F.adaptive_max_pool``'s windows
  (uneven when the sizes do not divide); the backward pass routes each cotangent to the stored
  argmax (the max pooling transpose ``Maxᵀ``).  Adaptive *average* pooling is
  :func:`ncd.AdaptiveAvgPool`.

Channels and batch axes are woven past both.  One module holds every rule of the family.

>>> import ncd
>>> str((ncd.Identity.of("b c y x") >> ncd.Interpolate("y x", "v:2*y u:2*x", scales=(2.0, 2.0))).cod)
'b c v:2*y u:2*x'
>>> str(ncd.AdaptiveMaxPool("y:7 x:5", (2, 3)).cod)
'y:2 x:3'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED
from ncd.ir.size import size_text
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["InterpolateOp", "InterpolateTransposeOp", "AdaptiveMaxPoolOp", "Interpolate", "AdaptiveMaxPool", "MODES"]

#: interpolation modes, and the number of spatial axes each takes (torch's kernels)
MODES = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,), "bilinear": (2,), "bicubic": (2,),
         "trilinear": (3,)}
#: ATen's kernel for each mode (``upsample_<name><n>d``)
KERNELS = {"nearest": "upsample_nearest", "nearest-exact": "_upsample_nearest_exact", "linear": "upsample_linear",
           "bilinear": "upsample_bilinear", "bicubic": "upsample_bicubic", "trilinear": "upsample_trilinear"}
_SMOOTH = ("linear", "bilinear", "bicubic", "trilinear")


def _check_spatial(axes: Segment, output: Segment, what: str) -> None:
    if not 1 <= len(axes) <= 3 or len(output) != len(axes) or axes.repeated or output.repeated:
        raise ParseError(f"{what}: takes 1 to 3 distinct spatial axes and as many outputs, not '{axes}' -> '{output}'")
    for a in output:
        if not a.size.free_symbols and (not a.size.is_integer or a.size < 1):
            raise SizeError(f"{what}: output axis {a.name} must have a positive whole size, not {size_text(a.size)}")


@dataclass(frozen=True)
class InterpolateOp(Primitive):
    """The spatial ``axes`` resampled to ``output`` (``F.interpolate``)."""

    axes: Segment
    output: Segment
    mode: str = "nearest"
    align_corners: bool = False
    scales: tuple[float, ...] | None = None

    op: ClassVar[str] = "interpolate"
    family: ClassVar[str] = "resampling"
    kind: ClassVar[Kind] = "linear"
    weave_policy = weaving.own_last

    def __post_init__(self) -> None:
        what = f"interpolate ({self.mode}) of '{self.axes}'"
        if self.mode not in MODES:
            raise ParseError(f"{what}: unknown mode; known: {', '.join(MODES)}")
        _check_spatial(self.axes, self.output, what)
        if len(self.axes) not in MODES[self.mode]:
            raise ParseError(f"{what}: mode {self.mode} takes {' or '.join(map(str, MODES[self.mode]))} axes, not {len(self.axes)}")
        if self.align_corners and self.mode not in _SMOOTH:
            raise ParseError(f"{what}: align_corners applies to the linear modes only")
        if self.scales is not None and (len(self.scales) != len(self.axes) or not all(
                isinstance(s, float) and s > 0 for s in self.scales)):
            raise ParseError(f"{what}: scales {self.scales!r} must be one positive float per axis")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.output,))

    def label(self) -> str:
        return {"nearest": "near", "nearest-exact": "near", "linear": "lin", "bilinear": "bilin", "bicubic": "bicub",
                "trilinear": "trilin"}[self.mode] + " ↑"


@dataclass(frozen=True)
class InterpolateTransposeOp(InterpolateOp):
    """The transpose of :class:`InterpolateOp` (same fields, same checks): ``output -> axes``."""

    op: ClassVar[str] = "interpolate_transpose"
    family: ClassVar[str] = "derivative"

    def forward(self) -> InterpolateOp:
        return InterpolateOp(self.axes, self.output, self.mode, self.align_corners, self.scales)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.output,)), Type((self.axes,))

    def label(self) -> str:
        return self.forward().label().replace(" ↑", "ᵀ")


@dataclass(frozen=True)
class AdaptiveMaxPoolOp(Primitive):
    """The maximum over ``F.adaptive_max_pool``'s windows of ``axes`` (``indices``: also where it was, a flat index)."""

    axes: Segment
    positions: Segment
    indices: bool = False

    op: ClassVar[str] = "adaptive_maxpool"
    family: ClassVar[str] = "resampling"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.own_last

    def __post_init__(self) -> None:
        _check_spatial(self.axes, self.positions, "adaptive max pooling")
        if self.positions.names != self.axes.names:
            raise ParseError(f"adaptive max pooling: positions '{self.positions}' must name the spatial axes '{self.axes}'")

    def plane(self) -> sympy.Expr:
        result: sympy.Expr = sympy.Integer(1)
        for a in self.axes:
            result = result * a.size
        return result

    def signature(self) -> tuple[Type, Type]:
        cod = (self.positions,) + ((Segment(self.positions.axes, "index", self.plane()),) if self.indices else ())
        return Type((self.axes,)), Type(cod)

    def label(self) -> str:
        return "Max" + (", argmax" if self.indices else "")


def _segment(value: TypeLike, what: str) -> Segment:
    typ = as_type(value)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Interpolate(axes: TypeLike, output: TypeLike, mode: str = "nearest", align_corners: bool = False,
                scales: tuple[float, ...] | None = None) -> Box:
    """Resample the spatial ``axes`` to ``output`` (``F.interpolate``; ``scales``: the scale factors, if torch had them)."""
    return Box.make(InterpolateOp(_segment(axes, "interpolate"), _segment(output, "interpolate"), mode, align_corners,
                                  None if scales is None else tuple(float(s) for s in scales)))


def AdaptiveMaxPool(axes: TypeLike, sizes: int | tuple[int, ...]) -> Box:
    """Max pooling of the spatial ``axes`` to the output ``sizes`` (``F.adaptive_max_pool*``)."""
    seg = _segment(axes, "adaptive max pooling")
    values = (sizes,) * len(seg) if isinstance(sizes, int) else tuple(sizes)
    if len(values) != len(seg):
        raise ParseError(f"adaptive max pooling of '{seg}': {len(values)} output sizes for {len(seg)} axes")
    return Box.make(AdaptiveMaxPoolOp(seg, Segment(tuple(a.resized(v) for a, v in zip(seg, values)))))


# -- lowering -----------------------------------------------------------------------------------
def _sizes(ctx: RuleContext, seg: Segment) -> str:
    return ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in seg)


def _fold(ctx: RuleContext, x: str, seg: Segment) -> str:
    """``x`` as ``(N, 1, *spatial)``: every leading axis folded into torch's batch, one channel."""
    return ctx.em.assign("planes", f"{x}.reshape(-1, 1, {_sizes(ctx, seg)})", seg.axes)


def _restore(x: str, source: str, n: int, ctx: RuleContext, seg: Segment) -> str:
    return f"{x}.view(*{source}.shape[:-{n}], {_sizes(ctx, seg)})"


@LOWERING.rule(InterpolateOp)
def lower_interpolate(prim: InterpolateOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    n = len(prim.axes)
    how = f"scale_factor={prim.scales}" if prim.scales is not None else f"size=({_sizes(ctx, prim.output)},)"
    corners = f", align_corners={prim.align_corners}" if prim.mode in _SMOOTH else ""
    call = f"F.interpolate({_fold(ctx, x, prim.axes)}, {how}, mode={prim.mode!r}{corners})"
    return [_restore(call, x, n, ctx, prim.output)]


@LOWERING.rule(InterpolateTransposeOp)
def lower_interpolate_transpose(prim: InterpolateTransposeOp, ctx: RuleContext) -> list[str]:
    """ATen's ``upsample_*_backward``: the transpose of the interpolation, weights and all."""
    g = ctx.args[0].var
    n = len(prim.axes)
    planes = _fold(ctx, g, prim.output)
    scales = ", ".join(repr(s) for s in (prim.scales or (None,) * n))
    corners = f"{prim.align_corners}, " if prim.mode in _SMOOTH else ""
    call = (f"torch.ops.aten.{KERNELS[prim.mode]}{n}d_backward({planes}, ({_sizes(ctx, prim.output)},),"
            f" ({planes}.shape[0], 1, {_sizes(ctx, prim.axes)}), {corners}{scales})")
    return [_restore(call, g, n, ctx, prim.axes)]


@LOWERING.rule(AdaptiveMaxPoolOp)
def lower_adaptive_maxpool(prim: AdaptiveMaxPoolOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    n = len(prim.axes)
    size = f"({_sizes(ctx, prim.positions)},)"
    if not prim.indices:
        return [_restore(f"F.adaptive_max_pool{n}d({_fold(ctx, x, prim.axes)}, {size})", x, n, ctx, prim.positions)]
    pooled, where = ctx.em.fresh("pooled"), ctx.em.fresh("argmax")
    ctx.em.line(f"{pooled}, {where} = F.adaptive_max_pool{n}d({_fold(ctx, x, prim.axes)}, {size}, return_indices=True)")
    return [_restore(pooled, x, n, ctx, prim.positions), _restore(where, x, n, ctx, prim.positions)]


# -- costs and backward -------------------------------------------------------------------------
def _folded(ctx: CostContext) -> Tensor:
    x = ctx.inputs[0]
    return x if x.contiguous else ctx.new(x.axes, grad=x.grad)


@COST.rule(InterpolateOp, InterpolateTransposeOp)
def cost_interpolate(prim: InterpolateOp | InterpolateTransposeOp, ctx: CostContext) -> list[Tensor]:
    """No FLOPs counted, nothing kept (the transpose needs only the sizes)."""
    _folded(ctx)
    ctx.other(ctx.numel(), ctx.inputs[0].numel if ctx.grad else sympy.Integer(0))
    return [ctx.output(0)]


@COST.rule(AdaptiveMaxPoolOp)
def cost_adaptive_maxpool(prim: AdaptiveMaxPoolOp, ctx: CostContext) -> list[Tensor]:
    """Autograd keeps the (folded) input and the argmax of every window."""
    x = _folded(ctx)
    outs = [ctx.output(0)]
    where = ctx.new(ctx.out_axes[0], grad=False, dtype="index")
    if prim.indices:
        outs.append(where)
    if x.grad:
        ctx.save(x, where)
    ctx.other(ctx.inputs[0].numel, ctx.numel())
    return outs


@transpose(InterpolateOp)
def transpose_interpolate(prim: InterpolateOp, box: Box) -> Diagram:

    return Box(InterpolateTransposeOp(prim.axes, prim.output, prim.mode, prim.align_corners, prim.scales))


@transpose(InterpolateTransposeOp)
def transpose_interpolate_transpose(prim: InterpolateTransposeOp, box: Box) -> Diagram:
    """Linear: the transpose of the transpose is the interpolation."""
    return Box(prim.forward())


@BACKWARD.rule(AdaptiveMaxPoolOp)
def backward_adaptive_maxpool(prim: AdaptiveMaxPoolOp, box: Box, builder: object) -> BoxBackward:
    """Route each cotangent to its window's maximum: the forward pass also outputs the argmax, ``Maxᵀ`` scatters."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.pooling import MaxPoolBackwardOp

    back = Box(MaxPoolBackwardOp(prim.axes, prim.positions))
    if prim.indices:
        return BoxBackward((("out", 1),), back)
    forward = Box(AdaptiveMaxPoolOp(prim.axes, prim.positions, True))
    return BoxBackward((("aux", 0),), back, forward=forward, aux_like=(0,))


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(InterpolateOp, InterpolateTransposeOp, AdaptiveMaxPoolOp)
def draw_resampling(prim: InterpolateOp | InterpolateTransposeOp | AdaptiveMaxPoolOp, ctx: Layout, box: Box) -> Frag:
    """On the convolution family's trapezoid (a change of resolution): ``near ↑``, ``bilin ↑``, ``Max``."""
    from ncd.render.pictograms import generic_box
    from ncd.render.pictograms_more import CONV_FILL
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill=CONV_FILL, shape="trapezoid", name=prim.op)


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(AdaptiveMaxPoolOp, InterpolateOp, by="ncd.trace.boxes_resampling")
IMPORT.unsupported(InterpolateTransposeOp, NOT_TRACED)
