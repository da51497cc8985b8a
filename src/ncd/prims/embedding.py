"""Embeddings: a learned table looked up by an index segment, and its transpose (the output head).

``Embedding(vocab="v", dim="m")`` takes one *index* segment with no axes (``"[v]"``: an
integer below ``v``) and gives ``"m"``; composed after ``"b t [v]"`` it is woven over
``b t``.  ``Unembed(vocab="v", dim="m")`` maps ``"m"`` to logits ``"v"``; with
``tied_to="E"`` it reuses the table of the embedding box labelled ``"E"`` (weight tying,
as in GPT-2): one shared parameter, no parameters of its own.  Tying is resolved when
lowering and needs both boxes in the same generated class (the same block), the
embedding first.
``Embedding(..., padding_idx=p)`` is ``nn.Embedding``'s: row ``p`` is looked up as any other, but the lookup passes no
gradient into it (a tied head's still does); it is not drawn (the values are the same).

>>> import ncd
>>> E = ncd.Embedding("v", "m", name="E")
>>> str(E.dom), str(E.cod)
('[v]', 'm')
>>> str((ncd.Identity.of("b t [v]") >> E).cod)
'b t m'
>>> ncd.Unembed("v", "m", tied_to="E").prim.params()
{}
>>> ncd.Embedding("v", "m", padding_idx=0).prim.padding_idx
0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Axis, Segment, Type, numel, parse_axis, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, BATCHED_BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size, SizeLike, evaluate, size

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr, OpKind
    from ncd.torch.rules import RuleContext


__all__ = ["EmbeddingOp", "UnembedOp", "Embedding", "Unembed"]


@dataclass(frozen=True)
class EmbeddingOp(Primitive):
    """Look up row ``i`` of a learned ``(vocab, dim)`` table for an index ``i < vocab``.

    ``padding_idx`` (``nn.Embedding``'s) is a row whose lookups pass no gradient into the table; ``None``: every row's do.
    """

    vocab: Size
    dim: Segment
    padding_idx: int | None = None

    op: ClassVar[str] = "embedding"
    weave_policy = weaving.trailing
    family: ClassVar[str] = "embedding"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_padding(self.padding_idx, self.vocab, "embedding")

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



def _check_padding(padding_idx: int | None, vocab: Size, what: str) -> None:
    if padding_idx is None:
        return
    if not isinstance(padding_idx, int) or isinstance(padding_idx, bool) or padding_idx < 0:
        raise ParseError(f"{what}: padding_idx must be a row of the table, a whole number >= 0, not {padding_idx!r}")
    if isinstance(vocab, sympy.Integer) and padding_idx >= int(vocab):
        raise ParseError(f"{what}: padding_idx {padding_idx} is not a row of a table of {vocab} rows")


def _fresh(name: str, seg: Segment) -> str:
    while name in seg.names:
        name += "′"
    return name


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


def Embedding(vocab: str = "v", dim: str = "m", name: str | None = None, padding_idx: int | None = None) -> Box:
    """A learned embedding table: index ``[vocab]`` -> features ``dim`` (``nn.Embedding``).

    ``padding_idx=p``: lookups of row ``p`` pass no gradient into the table (``nn.Embedding(padding_idx=p)``).
    """
    axis = _vocab(vocab, "embedding")
    return Box.make(EmbeddingOp(axis.size, _dim(dim, "embedding"), padding_idx), name)


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


# -- derivative primitives of the family (backward diagrams) -----------------------------------
@dataclass(frozen=True)
class EmbeddingGradOp(Primitive):
    """``(i, g) ↦ onehot(i) ⊗ g``: an embedding table's gradient; with ``batch`` axes, ``Σ_batch`` (an ``index_add``).

    With ``padding_idx`` ``p``, row ``p`` of the gradient is zero (``nn.Embedding(padding_idx=p)``'s backward).
    """

    vocab: Size
    dim: Segment
    batch: Segment = SCALAR
    padding_idx: int | None = None

    op: ClassVar[str] = "embedding_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def __post_init__(self) -> None:
        _check_padding(self.padding_idx, self.vocab, "embedding gradient")

    def signature(self) -> tuple[Type, Type]:
        rows = Axis(_fresh("vocab", self.dim), self.vocab)
        b = self.batch.axes
        return (Type((Segment(b, "index", self.vocab), Segment(b + self.dim.axes))),
                Type((Segment((rows,) + self.dim.axes),)))

    def label(self) -> str:
        return "∂Emb"


def EmbeddingGrad(vocab: SizeLike, dim: str, padding_idx: int | None = None) -> Box:
    """The gradient of an embedding table ``vocab x dim`` at one position: ``onehot(i) ⊗ g`` (row ``padding_idx`` zero)."""
    seg = parse_type(dim)
    if len(seg) != 1 or not seg[0].axes:
        raise ParseError(f"embedding gradient: dim {dim!r} must be one segment of feature axes")
    return Box.make(EmbeddingGradOp(size(vocab), seg[0], padding_idx=padding_idx))


# -- lowering ----------------------------------------------------------------------------------
_TABLES = "ncd_embedding_tables"


def _tables(ctx: RuleContext) -> dict[str, tuple[str, int, int]]:
    """Embedding modules of the class being generated, by box label."""
    return ctx.em.__dict__.setdefault(_TABLES, {})  # type: ignore[no-any-return]


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


@LOWERING.rule(EmbeddingOp)
def lower_embedding(prim: EmbeddingOp, ctx: RuleContext) -> list[str]:
    vocab = ctx.int(prim.vocab, "vocabulary size")
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in prim.dim]
    label = ctx.box.label
    if prim.padding_idx is not None and isinstance(vocab, int) and prim.padding_idx >= vocab:
        raise ctx.fail(f"padding_idx {prim.padding_idx} is not a row of a table of {vocab} rows")
    padding = "" if prim.padding_idx is None else f", padding_idx={prim.padding_idx}"
    module = ctx.em.attr("embedding" + (f"_{label}" if label else ""), f"nn.Embedding({vocab}, {_product(sizes)}{padding})")
    if label:
        _tables(ctx)[label] = (module, vocab, _product(sizes))
    call = f"{module}({ctx.args[0].var})"
    return [call if len(sizes) == 1 else f"{call}.unflatten(-1, {tuple(sizes)})"]


def _cut_out() -> bool:
    from ncd.torch.codegen import lowering_cut_out

    return lowering_cut_out()


@LOWERING.rule(UnembedOp)
def lower_unembed(prim: UnembedOp, ctx: RuleContext) -> list[Expr]:
    vocab = ctx.int(prim.vocab.size, f"axis {prim.vocab.name}")
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in prim.dim]
    x = ctx.args[0].var
    arg = x if len(sizes) == 1 else f"{x}.flatten({-len(sizes)})"
    entry = _tables(ctx).get(prim.tied_to) if prim.tied_to is not None else None
    if prim.tied_to is None or (entry is None and _cut_out()):  # a region costed alone: a weight of its own
        module = ctx.em.attr("unembed" + (f"_{ctx.box.label}" if ctx.box.label else ""),
                             f"nn.Linear({_product(sizes)}, {vocab}, bias={prim.bias})")
        return [_linear(ctx, prim, f"{module}({arg})", "module", module)]
    if entry is None:
        raise ctx.fail(
            f"it is tied to the embedding labelled {prim.tied_to!r}, but no embedding box with that label comes before it"
            " in the same block; put both in one block, the embedding first"
        )
    table, rows, width = entry
    if (rows, width) != (vocab, _product(sizes)):
        raise ctx.fail(
            f"it is tied to embedding {prim.tied_to!r} whose table is {rows} x {width}, but it maps"
            f" {' '.join(prim.dim.names)} ({_product(sizes)}) to {prim.vocab.name}={vocab}"
        )
    bias = ""
    if prim.bias:
        bias = ", " + ctx.em.attr("unembed_bias", f"nn.Parameter(torch.zeros({vocab}))")
    return [_linear(ctx, prim, f"F.linear({arg}, {table}.weight{bias})", "call", "F.linear")]


def _linear(ctx: RuleContext, prim: UnembedOp, text: str, kind: OpKind, target: str) -> Expr:
    """The typed op of the map onto the vocabulary: ``F.linear`` with its weight's shape (``ncd.analysis.targets``)."""
    from ncd.ir.program import Expr

    weight = (prim.vocab.size, numel(prim.dim.axes))
    return Expr(text, kind, target, (ctx.em.values.get(ctx.args[0].var, ctx.args[0]),),
                options=(("function", "linear"), ("weight", weight)))


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(EmbeddingOp)
def cost_embedding(prim: EmbeddingOp, ctx: CostContext) -> list[Tensor]:
    ctx.save(ctx.inputs[0])
    return [ctx.new(ctx.out_axes[0], grad=True)]


@COST.rule(UnembedOp)
def cost_unembed(prim: UnembedOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    fan_in, fan_out = numel(prim.dim.axes), prim.vocab.size
    batch = x.numel / fan_in
    names = list(prim.dim.names)
    flat = x if x.merges([names]) else ctx.new(x.axes, grad=x.grad)
    if len(flat.axes) - len(names) + 1 > 2 and not flat.contiguous:
        flat = ctx.new(x.axes, grad=x.grad)
    ctx.charge(ctx.call_to("linear"), [tuple(a.size for a in x.axes)], grads=(x.grad, True))  # what it calls
    ctx.save(flat)
    if prim.bias:
        ctx.other(batch * fan_out, batch * fan_out)
    return [ctx.output(0)]


# -- backward ------------------------------------------------------------------------------
@BACKWARD.rule(EmbeddingOp)
def backward_embedding(prim: EmbeddingOp, box: Box, builder: Builder) -> BoxBackward:
    return batched_backward_embedding(prim, box, builder, ())


@BATCHED_BACKWARD.rule(EmbeddingOp)
def batched_backward_embedding(prim: EmbeddingOp, box: Box, builder: Builder, batch: tuple[Axis, ...]) -> BoxBackward:
    """An embedding is a one-hot vector through a learned map: the table's gradient is ``Σ onehot(i) ⊗ g``.

    Woven over leading axes, the sum is one ``index_add`` of the cotangent's rows (no one-hot tensor).
    """
    grad = EmbeddingGradOp(prim.vocab, prim.dim, Segment(batch), prim.padding_idx)
    return BoxBackward((("in", 0),), Box(grad), ("weight",))


@BACKWARD.rule(UnembedOp)
def backward_unembed(prim: UnembedOp, box: Box, builder: Builder) -> BoxBackward:
    return batched_backward_unembed(prim, box, builder, ())


@BATCHED_BACKWARD.rule(UnembedOp)
def batched_backward_unembed(prim: UnembedOp, box: Box, builder: Builder, batch: tuple[Axis, ...]) -> BoxBackward:
    """A learned map ``dim -> vocab`` (``Lᵀ``, ``∂L``, bias ``g``).

    Tied (``tied_to="E"``): the weight is embedding ``E``'s table, and ``∂L`` is *added* to the
    table's gradient ``∂Emb`` (``ncd.backward`` draws the sum).
    """
    from ncd.prims.linear import learned_map_backward  # the linear family's rule

    return learned_map_backward(prim.dim, Segment((prim.vocab,)), prim.bias, batch)


@LOWERING.rule(EmbeddingGradOp)
def lower_embedding_grad(prim: EmbeddingGradOp, ctx: RuleContext) -> list[str]:
    n = len(prim.dim)
    vocab = evaluate(prim.vocab, what="vocabulary size")
    i, g = ctx.args[0].var, ctx.args[1].var
    if prim.padding_idx is not None and prim.padding_idx >= vocab:
        raise ctx.fail(f"padding_idx {prim.padding_idx} is not a row of a table of {vocab} rows")
    # the padding row's gradient zeroed in the fresh table (in place: no second table)
    pad = "" if prim.padding_idx is None else f".index_fill_({{}}, torch.tensor([{prim.padding_idx}], device={i}.device), 0)"
    if len(prim.batch):  # Σ over the batch (and any leading dims): rows added at their indices, no one-hot
        sizes = [evaluate(a.size, what=f"axis {a.name}") for a in prim.dim]
        width = 1
        for v in sizes:
            width *= v
        table = f"torch.zeros({vocab}, {width}, dtype={g}.dtype, device={g}.device)"
        added = f"{table}.index_add(0, {i}.reshape(-1), {g}.reshape(-1, {width})){pad.format(0)}"
        return [f"{added}.view({vocab}, {', '.join(map(str, sizes))})"]
    return [f"F.one_hot({i}, {vocab}){pad.format(-1)}.to({g}.dtype)[..., :{', None' * n}] * {g}.unsqueeze({-n - 1})"]


@COST.rule(EmbeddingGradOp)
def cost_embedding_grad(prim: EmbeddingGradOp, ctx: CostContext) -> list[Tensor]:
    """``onehot(i) * g``: autograd keeps the (float) one-hot rows for ``g``'s gradient."""
    i, g = ctx.inputs
    if len(prim.batch):  # index_add: autograd keeps the indices (an index_select routes the gradient back)
        if g.grad:
            ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
        ctx.other(g.numel, sympy.Integer(0))
        return [ctx.output(0)]
    rows = ctx.out_axes[0][len(i.axes)]
    onehot = ctx.new(i.axes + (rows,), grad=False)
    if g.grad:
        ctx.save(onehot)
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]

for _cls in (EmbeddingGradOp,):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
