"""Primitives of backward diagrams: derivatives of elementwise maps, softmax's backward,
transposed learned maps, broadcast copies (the transpose of a sum) and zeros.

``ncd.backward`` builds reverse-mode diagrams from these and the ordinary primitives; they
lower like any box, so a backward diagram runs as a module.

>>> import ncd
>>> from ncd.prims.derivative import Derivative, Expand
>>> str((ncd.Identity.of("b m") >> Derivative("tanh", "output")).cod)
'b m'
>>> str(Expand("a", "a b").cod)
'a b'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError, TypeMismatchError
from ncd.ir.axes import Axis, AxisLike, Segment, Type, TypeLike, as_axis, as_type, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.size import Size, SizeLike, size

__all__ = [
    "DerivativeOp", "SoftmaxBackwardOp", "NormBackwardOp", "MaskBackwardOp", "ExpandOp", "ZerosOp", "LinearTransposeOp",
    "LinearWeightGradOp", "Derivative", "SoftmaxBackward", "NormBackward", "MaskBackward", "Expand", "Zeros",
    "LinearTranspose", "LinearWeightGrad", "InsertOp", "Insert", "EmbeddingGradOp", "EmbeddingGrad", "DERIVATIVES",
]

SCALAR = Type((Segment(()),))

#: for each elementwise function, which stored value its derivative reads
DERIVATIVES: dict[str, str] = {
    "relu": "output", "tanh": "output", "sigmoid": "output", "exp": "output", "sqrt": "output",
    "gelu": "input", "gelu_tanh": "input", "silu": "input", "log": "input", "square": "input", "abs": "input",
}


@dataclass(frozen=True)
class DerivativeOp(Primitive):
    """``f′``: the derivative of the elementwise ``function``, read from its stored input or output."""

    function: str
    at: str = "input"

    op: ClassVar[str] = "derivative"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.function not in DERIVATIVES:
            raise ParseError(f"derivative: no derivative known for {self.function!r}; known: {', '.join(sorted(DERIVATIVES))}")
        if self.at != DERIVATIVES[self.function]:
            raise ParseError(f"derivative of {self.function!r} is read from its {DERIVATIVES[self.function]}, not its {self.at}")

    def signature(self) -> tuple[Type, Type]:
        return SCALAR, SCALAR

    def label(self) -> str:
        return f"{self.function}′"

    def hint(self) -> str:
        return f"d_{self.function}"


@dataclass(frozen=True)
class SoftmaxBackwardOp(Primitive):
    """``(y, g) ↦ y ⊙ (g − Σ_axis g ⊙ y)`` (log-softmax: ``g − exp(y) Σ_axis g``), from the stored output ``y``."""

    axis: Axis
    log: bool = False

    op: ClassVar[str] = "softmax_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        seg = Segment((self.axis,))
        return Type((seg, seg)), Type((seg,))

    def label(self) -> str:
        return "log◁ᵀ" if self.log else "◁ᵀ"


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
class ZerosOp(Primitive):
    """Zeros of a type (the cotangent of a deleted wire)."""

    type: Type

    op: ClassVar[str] = "zeros"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        return Type(()), self.type

    def label(self) -> str:
        return "0"


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


@dataclass(frozen=True)
class MaskBackwardOp(Primitive):
    """The transpose of a mask: the cotangent with zeros where scores were masked.

    Causal (``query`` given): zeros above the diagonal of ``query key``; padding (no ``query``):
    ``(g: key, mask: key [bool]) ↦ g`` with zeros where the mask is False.
    """

    key: Axis
    query: Axis | None = None

    op: ClassVar[str] = "mask_backward"
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
    """``(i, g) ↦ onehot(i) ⊗ g``: an embedding table's gradient at one position (summed over woven axes after)."""

    vocab: Size
    dim: Segment

    op: ClassVar[str] = "embedding_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        rows = Axis(_fresh("vocab", self.dim), self.vocab)
        return Type((Segment((), "index", self.vocab), self.dim)), Type((Segment((rows,) + self.dim.axes),))

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
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.cod_axes, weight_segment(self.dom_axes, self.cod_axes))), Type((self.dom_axes,))

    def label(self) -> str:
        return "Lᵀ"


@dataclass(frozen=True)
class LinearWeightGradOp(Primitive):
    """``(x: dom, g: cod) ↦ g ⊗ x``: the gradient of a learned map's weight (summed over woven axes after)."""

    dom_axes: Segment
    cod_axes: Segment

    op: ClassVar[str] = "linear_weight_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes, self.cod_axes)), Type((weight_segment(self.dom_axes, self.cod_axes),))

    def label(self) -> str:
        return "∂L"


def Derivative(function: str, at: str | None = None) -> Box:
    """``f′`` of an elementwise function (``at``: the stored value it reads, by default the one autograd keeps)."""
    return Box.make(DerivativeOp(function, at if at is not None else DERIVATIVES.get(function, "input")))


def SoftmaxBackward(axis: AxisLike, log: bool = False) -> Box:
    return Box.make(SoftmaxBackwardOp(as_axis(axis), bool(log)))


def Expand(source: str, target: str) -> Box:
    """Broadcast-copy ``source`` onto ``target``'s axes, e.g. ``Expand("a", "a b")``."""
    src, dst = parse_type(source), parse_type(target)
    if len(src) != 1 or len(dst) != 1:
        raise ParseError(f"expand takes one segment on each side, not '{source}' -> '{target}'")
    known = {a.name: a for a in src[0]}
    return Box.make(ExpandOp(src[0], dst[0].with_axes(known.get(a.name, a) for a in dst[0])))


def Zeros(type_: TypeLike) -> Box:
    return Box.make(ZerosOp(as_type(type_)))


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


def MaskBackward(key: AxisLike = "x", query: AxisLike | None = None) -> Box:
    """The transpose of ``CausalMask(query, key)`` (``query`` given) or of ``PaddingMask(key)``."""
    return Box.make(MaskBackwardOp(as_axis(key), None if query is None else as_axis(query)))


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
