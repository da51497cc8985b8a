"""Embeddings: a learned table looked up by an index segment, and its transpose (the output head).

``Embedding(vocab="v", dim="m")`` takes one *index* segment with no axes (``"[v]"``: an
integer below ``v``) and gives ``"m"``; composed after ``"b t [v]"`` it is woven over
``b t``.  ``Unembed(vocab="v", dim="m")`` maps ``"m"`` to logits ``"v"``; with
``tied_to="E"`` it reuses the table of the embedding box labelled ``"E"`` (weight tying,
as in GPT-2): one shared parameter, no parameters of its own.  Tying is resolved when
lowering and needs both boxes in the same generated class (the same block), the
embedding first.

>>> import ncd
>>> E = ncd.Embedding("v", "m", name="E")
>>> str(E.dom), str(E.cod)
('[v]', 'm')
>>> str((ncd.Identity.of("b t [v]") >> E).cod)
'b t m'
>>> ncd.Unembed("v", "m", tied_to="E").prim.params()
{}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, parse_axis, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size

__all__ = ["EmbeddingOp", "UnembedOp", "Embedding", "Unembed"]


@dataclass(frozen=True)
class EmbeddingOp(Primitive):
    """Look up row ``i`` of a learned ``(vocab, dim)`` table for an index ``i < vocab``."""

    vocab: Size
    dim: Segment

    op: ClassVar[str] = "embedding"
    weave_policy = weaving.trailing
    family: ClassVar[str] = "embedding"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((), "index", self.vocab),)), Type((self.dim,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": (self.vocab,) + self.dim.sizes}

    def label(self) -> str:
        return "Emb"


@dataclass(frozen=True)
class UnembedOp(Primitive):
    """Logits over the vocabulary axis ``vocab`` from features ``dim``: ``x @ tableᵀ`` (+ bias).

    ``tied_to`` names the label of an :class:`EmbeddingOp` box whose table is reused.
    """

    vocab: Axis
    dim: Segment
    tied_to: str | None = None
    bias: bool = False

    op: ClassVar[str] = "unembed"
    weave_policy = weaving.trailing
    family: ClassVar[str] = "embedding"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dim,)), Type((Segment((self.vocab,)),))

    def params(self) -> dict[str, tuple[Size, ...]]:
        shapes: dict[str, tuple[Size, ...]] = {}
        if self.tied_to is None:
            shapes["weight"] = (self.vocab.size,) + self.dim.sizes
        if self.bias:
            shapes["bias"] = (self.vocab.size,)
        return shapes

    def label(self) -> str:
        return "Embᵀ" if self.tied_to is None else f"Embᵀ^{self.tied_to}"


def _dim(dim: str, what: str) -> Segment:
    if not isinstance(dim, str):
        raise ParseError(f"{what}: dim must be axis text such as 'm', not {type(dim).__name__} {dim!r}")
    typ = parse_type(dim)
    if len(typ) != 1 or not typ[0].axes or typ[0].dtype != "float":
        raise ParseError(f"{what}: dim {dim!r} must be one segment of feature axes, e.g. 'm'")
    return typ[0]


def _vocab(vocab: str, what: str) -> Axis:
    if not isinstance(vocab, (str, int)) or isinstance(vocab, bool):
        raise ParseError(f"{what}: vocab must be a size or axis text such as 'v' or 'v:50257', not {vocab!r}")
    axis = parse_axis(str(vocab))
    if axis.parts:
        raise ParseError(f"{what}: vocab {vocab!r} must be a single axis")
    return axis


def Embedding(vocab: str = "v", dim: str = "m", name: str | None = None) -> Box:
    """A learned embedding table: index ``[vocab]`` -> features ``dim`` (``nn.Embedding``)."""
    axis = _vocab(vocab, "embedding")
    return Box.make(EmbeddingOp(axis.size, _dim(dim, "embedding")), name)


def Unembed(vocab: str = "v", dim: str = "m", tied_to: str | None = None, bias: bool = False, name: str | None = None) -> Box:
    """Logits ``dim -> vocab`` (the output head); ``tied_to="E"`` shares the table of embedding box ``E``."""
    if tied_to is not None and (not isinstance(tied_to, str) or not tied_to):
        raise ParseError(f"unembed: tied_to must be the label of an embedding box, not {tied_to!r}")
    axis = _vocab(vocab, "unembed")
    seg = _dim(dim, "unembed")
    return Box.make(UnembedOp(axis, seg, tied_to, bool(bias)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(EmbeddingOp, aten=("aten.embedding",))
IMPORT.unsupported(UnembedOp, "a traced (tied) output head is an aten.linear: it imports as a linear map")
