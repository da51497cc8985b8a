"""Lowering rules for embeddings (``nn.Embedding``) and the output head, with weight tying.

An embedding box labelled ``E`` records its module in the class being generated; an
``Unembed(tied_to="E")`` later in the same class reads ``self.<that module>.weight``, so the
table is one parameter shared by both (``module.parameters()`` lists it once).
"""

from __future__ import annotations

from ncd.prims.embedding import EmbeddingOp, UnembedOp
from ncd.torch.rules import RuleContext, register

_TABLES = "ncd_embedding_tables"


def _tables(ctx: RuleContext) -> dict[str, tuple[str, int, int]]:
    """Embedding modules of the class being generated, by box label."""
    return ctx.em.__dict__.setdefault(_TABLES, {})  # type: ignore[no-any-return]


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


@register(EmbeddingOp, weave_aware=True)
def lower_embedding(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, EmbeddingOp)
    vocab = ctx.int(prim.vocab, "vocabulary size")
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in prim.dim]
    label = ctx.box.label
    module = ctx.em.attr("embedding" + (f"_{label}" if label else ""), f"nn.Embedding({vocab}, {_product(sizes)})")
    if label:
        _tables(ctx)[label] = (module, vocab, _product(sizes))
    call = f"{module}({ctx.args[0].var})"
    return [call if len(sizes) == 1 else f"{call}.unflatten(-1, {tuple(sizes)})"]


@register(UnembedOp, weave_aware=True)
def lower_unembed(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, UnembedOp)
    vocab = ctx.int(prim.vocab.size, f"axis {prim.vocab.name}")
    sizes = [ctx.int(a.size, f"axis {a.name}") for a in prim.dim]
    x = ctx.args[0].var
    arg = x if len(sizes) == 1 else f"{x}.flatten({-len(sizes)})"
    if prim.tied_to is None:
        module = ctx.em.attr("unembed" + (f"_{ctx.box.label}" if ctx.box.label else ""),
                             f"nn.Linear({_product(sizes)}, {vocab}, bias={prim.bias})")
        return [f"{module}({arg})"]
    entry = _tables(ctx).get(prim.tied_to)
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
    return [f"F.linear({arg}, {table}.weight{bias})"]
