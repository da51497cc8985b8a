"""Primitives of backward diagrams not yet beside their family: transposed learned maps, broadcast
copies (the transpose of a sum), and the backward boxes of normalisation, masks, pooling and convolution.
(A family's derivative primitives move into its module: ``DerivativeOp`` is in ``ncd.prims.elementwise``,
``SoftmaxBackwardOp`` in ``ncd.prims.softmax``, ``ZerosOp`` in ``ncd.prims.structure``.)

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
from ncd.ir.axes import Axis, AxisLike, Segment, Type, TypeLike, as_axis, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT, NOT_TRACED
from ncd.ir.size import Size, SizeLike, size

__all__ = [
    "NormBackwardOp", "MaskBackwardOp", "ExpandOp", "LinearTransposeOp",
    "LinearWeightGradOp", "NormBackward", "MaskBackward", "Expand",
    "LinearTranspose", "LinearWeightGrad", "InsertOp", "Insert", "EmbeddingGradOp", "EmbeddingGrad",
    "DiagonalOp", "Diagonal", "MaxPoolArgmaxOp", "MaxPoolBackwardOp", "AvgPoolTransposeOp", "BatchNormStatsOp",
    "BatchNormBackwardOp", "ConvWithWeightOp", "ConvWeightGradOp", "conv_weight_segment", "GatherTransposeOp",
    "GatherTranspose",
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

    op: ClassVar[str] = "norm_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.norm not in ("layer", "rms"):
            raise ParseError(f"norm backward: the normalisation must be 'layer' or 'rms', not {self.norm!r}")
        if self.bias and (self.norm != "layer" or not self.affine):
            raise ParseError(f"norm backward over '{self.axes}': only an affine layer norm has a bias")

    def signature(self) -> tuple[Type, Type]:
        x = self.axes
        dom = (x,) + ((x,) if self.affine else ()) + (x,)
        cod = (x,) + ((x,) if self.affine else ()) + ((x,) if self.bias else ())
        return Type(dom), Type(cod)

    def label(self) -> str:
        return ("LN" if self.norm == "layer" else "RMS") + "ᵀ"


def _mask_backward_policy(view: weaving.WeaveView) -> bool:
    """In place when the cotangent keeps its layout and a padding mask's axes come in its order."""
    prim = view.box.prim
    assert isinstance(prim, MaskBackwardOp)
    return weaving.mask_aligned(view) if prim.query is None else weaving.input_like_output(view)


@dataclass(frozen=True)
class MaskBackwardOp(Primitive):
    """The transpose of a mask: the cotangent with zeros where scores were masked.

    Causal (``query`` given): zeros above the diagonal of ``query key`` (and, with ``window``, that many
    positions below it and further); padding (no ``query``):
    ``(g: key, mask: key [bool]) ↦ g`` with zeros where the mask is False.
    """

    key: Axis
    query: Axis | None = None
    #: the causal mask's sliding window: zeros also ``window`` or more positions below the diagonal
    window: Size | None = None

    op: ClassVar[str] = "mask_backward"
    weave_policy = staticmethod(_mask_backward_policy)
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        if self.query is not None:
            t = Type((Segment((self.query, self.key)),))
            return t, t
        scores = Segment((self.key,))
        return Type((scores, Segment((self.key,), "bool"))), Type((scores,))

    def label(self) -> str:
        return ("◸" if self.query is not None else "▭") + "ᵀ"


@dataclass(frozen=True)
class InsertOp(Primitive):
    """The transpose of indexing / slicing ``axis``: the input placed at ``start:stop:step``, zeros elsewhere.

    ``source`` is the sliced axis (``None``: a single index, the input is a scalar).
    """

    axis: Axis
    start: Size
    stop: Size
    step: Size
    source: Axis | None = None

    op: ClassVar[str] = "insert"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        dom = Segment(()) if self.source is None else Segment((self.source,))
        return Type((dom,)), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return "[]ᵀ"


@dataclass(frozen=True)
class EmbeddingGradOp(Primitive):
    """``(i, g) ↦ onehot(i) ⊗ g``: an embedding table's gradient; with ``batch`` axes, ``Σ_batch`` (an ``index_add``)."""

    vocab: Size
    dim: Segment
    batch: Segment = Segment(())

    op: ClassVar[str] = "embedding_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        rows = Axis(_fresh("vocab", self.dim), self.vocab)
        b = self.batch.axes
        return (Type((Segment(b, "index", self.vocab), Segment(b + self.dim.axes))),
                Type((Segment((rows,) + self.dim.axes),)))

    def label(self) -> str:
        return "∂Emb"


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


def NormBackward(norm: str, axes: str, eps: float = 1e-5, affine: bool = True, bias: bool | None = None) -> Box:
    """The transpose of ``LayerNorm`` (``norm="layer"``) or ``RMSNorm`` (``"rms"``) over ``axes``."""
    seg = parse_type(axes)
    if len(seg) != 1:
        raise ParseError(f"norm backward: {axes!r} must be one segment")
    return Box.make(NormBackwardOp(norm, seg[0], float(eps), bool(affine), (norm == "layer" and affine) if bias is None
                                   else bool(bias)))


def MaskBackward(key: AxisLike = "x", query: AxisLike | None = None, window: SizeLike | None = None) -> Box:
    """The transpose of ``CausalMask(query, key, window=window)`` (``query`` given) or of ``PaddingMask(key)``."""
    return Box.make(MaskBackwardOp(as_axis(key), None if query is None else as_axis(query),
                                   None if window is None else size(window)))


def Insert(axis: AxisLike, start: int, stop: int | None = None, step: int = 1, source: AxisLike | None = None) -> Box:
    """Zeros along ``axis`` with the input written at ``start`` (a scalar) or ``start:stop:step`` (axis ``source``)."""
    return Box.make(InsertOp(as_axis(axis), size(start), size(start + 1 if stop is None else stop), size(step),
                             None if source is None else as_axis(source)))


def EmbeddingGrad(vocab: SizeLike, dim: str) -> Box:
    """The gradient of an embedding table ``vocab x dim`` at one position: ``onehot(i) ⊗ g``."""
    seg = parse_type(dim)
    if len(seg) != 1 or not seg[0].axes:
        raise ParseError(f"embedding gradient: dim {dim!r} must be one segment of feature axes")
    return Box.make(EmbeddingGradOp(size(vocab), seg[0]))


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


@dataclass(frozen=True)
class GatherTransposeOp(Primitive):
    """``(i, g) ↦ ∂x``: the transpose of :class:`ncd.prims.gather.GatherOp` — each cotangent entry added back at its
    position along ``axis`` (a scatter-add; positions taken twice add up, untaken ones get zero)."""

    axis: Axis
    positions: Segment

    op: ClassVar[str] = "gather_transpose"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        from ncd.prims.gather import GatherOp

        GatherOp(self.axis, self.positions)  # the same checks as the gather it transposes

    def signature(self) -> tuple[Type, Type]:
        return Type((self.positions, Segment(self.positions.axes))), Type((Segment((self.axis,)),))

    def label(self) -> str:
        return f"gather {self.axis.name}ᵀ"


def GatherTranspose(axis: AxisLike, positions: TypeLike = "") -> Box:
    """The transpose of ``Gather(axis, positions)``: ``(positions, cotangent) -> axis`` by scatter-add."""
    from ncd.prims.gather import Gather

    prim = Gather(axis if isinstance(axis, (str, Axis)) else as_axis(axis), positions).prim
    return Box.make(GatherTransposeOp(prim.axis, prim.positions))  # type: ignore[attr-defined]


# -- import recognition (ncd.trace) ------------------------------------------------------------
for _cls in (ExpandOp, NormBackwardOp, MaskBackwardOp, InsertOp, EmbeddingGradOp, LinearTransposeOp, LinearWeightGradOp,
             DiagonalOp, MaxPoolArgmaxOp, MaxPoolBackwardOp, AvgPoolTransposeOp, BatchNormStatsOp, BatchNormBackwardOp,
             ConvWithWeightOp, ConvWeightGradOp, GatherTransposeOp):
    IMPORT.unsupported(_cls, NOT_TRACED)
