"""Primitives of backward diagrams not yet beside their family: transposed learned maps, broadcast
copies (the transpose of a sum), and the backward boxes of normalisation, masks, pooling and convolution.
(A family's own derivative primitives live in its module: ``f′`` in ``ncd.prims.elementwise``, softmax's
backward in ``ncd.prims.softmax``, zeros in ``ncd.prims.structure``, normalisation's in ``ncd.prims.normalization``.)

``ncd.backward`` builds reverse-mode diagrams from these and the ordinary primitives; they
lower like any box, so a backward diagram runs as a module.

>>> import ncd
>>> from ncd.prims.derivative import Expand
>>> str(Expand("a", "a b").cod)
'a b'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError, TypeMismatchError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT, NOT_TRACED
from ncd.ir.size import Size, size

__all__ = [
    "ExpandOp", "LinearTransposeOp",
    "LinearWeightGradOp", "Expand",
    "LinearTranspose", "LinearWeightGrad",
    "DiagonalOp", "Diagonal", "MaxPoolArgmaxOp", "MaxPoolBackwardOp", "AvgPoolTransposeOp",
    "ConvWithWeightOp", "ConvWeightGradOp", "conv_weight_segment",
   
]

SCALAR = Type((Segment(()),))

@dataclass(frozen=True)
class ExpandOp(Primitive):
    """A broadcast copy from ``source`` onto the axes of ``target`` (the transpose of summing them away)."""

    source: Segment
    target: Segment

    op: ClassVar[str] = "expand"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        missing = [a.name for a in self.source if a.name not in self.target.names]
        if missing:
            raise TypeMismatchError(
                f"expand '{self.source}' -> '{self.target}': axis {', '.join(missing)} of the source is not in the target"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "•"


def _fresh(name: str, seg: Segment) -> str:
    while name in seg.names:
        name += "′"
    return name


def weight_segment(dom_axes: Segment, cod_axes: Segment) -> Segment:
    """The weight of ``L: dom -> cod`` as one segment ``cod dom`` (input axes primed where names repeat)."""
    names = set(cod_axes.names)
    return Segment(cod_axes.axes + tuple(a.renamed(a.name + "′") if a.name in names else a for a in dom_axes.axes))


@dataclass(frozen=True)
class LinearTransposeOp(Primitive):
    """``Lᵀ``: ``(g: cod, W: cod dom) ↦ Wᵀ g`` — a learned map's transpose, its weight an explicit input."""

    dom_axes: Segment
    cod_axes: Segment

    op: ClassVar[str] = "linear_transpose"
    weave_policy = weaving.always
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.cod_axes, weight_segment(self.dom_axes, self.cod_axes))), Type((self.dom_axes,))

    def label(self) -> str:
        return "Lᵀ"


@dataclass(frozen=True)
class LinearWeightGradOp(Primitive):
    """``(x: dom, g: cod) ↦ g ⊗ x``: the gradient of a learned map's weight.

    With ``batch`` axes (leading on both inputs) it is the contraction ``Σ_batch g ⊗ x`` — one
    einsum, never the per-position outer product.
    """

    dom_axes: Segment
    cod_axes: Segment
    batch: Segment = Segment(())

    op: ClassVar[str] = "linear_weight_grad"
    weave_policy = weaving.always
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        dom = Type((Segment(b + self.dom_axes.axes), Segment(b + self.cod_axes.axes)))
        return dom, Type((weight_segment(self.dom_axes, self.cod_axes),))

    def label(self) -> str:
        return "∂L"


def Expand(source: str, target: str) -> Box:
    """Broadcast-copy ``source`` onto ``target``'s axes, e.g. ``Expand("a", "a b")``."""
    src, dst = parse_type(source), parse_type(target)
    if len(src) != 1 or len(dst) != 1:
        raise ParseError(f"expand takes one segment on each side, not '{source}' -> '{target}'")
    known = {a.name: a for a in src[0]}
    return Box.make(ExpandOp(src[0], dst[0].with_axes(known.get(a.name, a) for a in dst[0])))


def LinearTranspose(spec: str) -> Box:
    """``Lᵀ`` for the learned map ``spec`` (e.g. ``"m -> k h"``): takes the cotangent and the weight."""
    dom, cod = _spec(spec)
    return Box.make(LinearTransposeOp(dom, cod))


def LinearWeightGrad(spec: str) -> Box:
    dom, cod = _spec(spec)
    return Box.make(LinearWeightGradOp(dom, cod))


def _spec(spec: str) -> tuple[Segment, Segment]:
    from ncd.prims.linear import split_spec

    left, right = split_spec(spec, "linear")
    dom, cod = parse_type(left), parse_type(right)
    if len(dom) != 1 or len(cod) != 1 or not dom[0].axes or not cod[0].axes:
        raise ParseError(f"linear spec {spec!r} must map one segment to one segment, each with at least one axis")
    return dom[0], cod[0]


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------
@dataclass(frozen=True)
class DiagonalOp(Primitive):
    """The transpose of taking a diagonal: ``source`` (distinct axes) placed on the diagonal of ``target``.

    ``target`` repeats some of ``source``'s axes (``a -> a a``); entries off the diagonal are zero.
    """

    source: Segment
    target: Segment

    op: ClassVar[str] = "diagonal"
    repeated_axes: ClassVar[bool] = True
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if len(set(self.source.names)) != len(self.source) or set(self.source.names) != set(self.target.names):
            raise TypeMismatchError(f"diagonal '{self.source}' -> '{self.target}': the source must hold each axis of the"
                                    " target exactly once")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "Δ"


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

    op: ClassVar[str] = "maxpool_argmax"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _window_fields(self.axes, self.positions)

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

    op: ClassVar[str] = "avgpool_transpose"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        _window_fields(self.axes, self.positions)
        n = 0 if self.adaptive else len(self.axes)
        if any(len(v) != n for v in (self.kernel, self.stride, self.padding)):
            raise ParseError(f"pooling transpose over '{self.axes}': kernel, stride and padding need {n} entries each")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.positions,)), Type((self.axes,))

    def label(self) -> str:
        return "𝔼ᵀ★ᵀ"


def conv_weight_segment(dom_axes: Segment, cod_axes: Segment, kernel: tuple[int, ...], groups: Size,
                        transposed: bool) -> Segment:
    """The weight of a convolution ``dom -> cod`` (``transposed``: of a transposed one) as one segment, torch's layout.

    Convolution: ``d c/groups κ…``; transposed convolution: ``c d/groups κ…`` (``κ1, κ2, …`` the kernel axes).
    """
    first, second = (dom_axes.axes[0], cod_axes.axes[0]) if transposed else (cod_axes.axes[0], dom_axes.axes[0])
    taken = set(dom_axes.names) | set(cod_axes.names)
    name = second.name if second.name != first.name and groups == 1 else second.name + "′"
    kernel_axes = tuple(Axis(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken), size(k))
                        for i, k in enumerate(kernel, 1))
    return Segment((first, Axis(name, second.size / groups)) + kernel_axes)


@dataclass(frozen=True)
class _ConvolutionGeometry(Primitive):
    """Fields and checks shared by the convolution derivatives: both sides' axes, the weight and the window."""

    dom_axes: Segment
    cod_axes: Segment
    weight: Segment
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    what: ClassVar[str] = "convolution derivative"

    def __post_init__(self) -> None:
        n = len(self.kernel)
        if len(self.dom_axes) != n + 1 or len(self.cod_axes) != n + 1 or len(self.weight) != n + 2:
            raise ParseError(f"{self.what} '{self.dom_axes}' -> '{self.cod_axes}': channel + {n} spatial axes"
                             f" on each side and a weight of {n + 2} axes are needed, not '{self.weight}'")


@dataclass(frozen=True)
class ConvWithWeightOp(_ConvolutionGeometry):
    """A convolution (``transposed``: a transposed convolution) whose weight is an explicit input: ``(x, W) -> y``.

    The transposes of learned convolutions: a convolution's input gradient is the transposed
    convolution of the cotangent with the same weight (``★ᵀ`` after ``Lᵀ``), a transposed
    convolution's is the convolution (``L`` after ``★``).
    """

    output_padding: tuple[int, ...] = ()
    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = Segment(())

    op: ClassVar[str] = "conv_with_weight"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution with weight"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), self.weight)), Type((Segment(b + self.cod_axes.axes),))

    def label(self) -> str:
        return ("★ᵀ" if self.transposed else "★") + "·W"


@dataclass(frozen=True)
class ConvWeightGradOp(_ConvolutionGeometry):
    """``(x, g) ↦ ∂W``: a learned convolution's weight gradient, the contraction of its windows with the cotangent.

    Sums over the output positions and the leading ``batch`` axes in one einsum.
    ``transposed``: of a transposed convolution (the windows are taken of the cotangent).
    """

    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = Segment(())

    op: ClassVar[str] = "conv_weight_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution weight gradient"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), Segment(b + self.cod_axes.axes))), Type((self.weight,))

    def label(self) -> str:
        return "∂★"


def Diagonal(source: str, target: str) -> Box:
    """Place ``source`` on the diagonal of ``target``, e.g. ``Diagonal("a", "a a")`` (the transpose of ``Einsum("a a -> a")``)."""
    src, dst = parse_type(source), parse_type(target)
    if len(src) != 1 or len(dst) != 1:
        raise ParseError(f"diagonal takes one segment on each side, not '{source}' -> '{target}'")
    known = {a.name: a for a in src[0]}
    return Box.make(DiagonalOp(src[0], dst[0].with_axes(known.get(a.name, a) for a in dst[0])))


# -- import recognition (ncd.trace) ------------------------------------------------------------
for _cls in (ExpandOp, LinearTransposeOp, LinearWeightGradOp,
             DiagonalOp, MaxPoolArgmaxOp, MaxPoolBackwardOp, AvgPoolTransposeOp,
             ConvWithWeightOp, ConvWeightGradOp):
    IMPORT.unsupported(_cls, NOT_TRACED)
