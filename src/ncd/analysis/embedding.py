"""Cost rules for embeddings (a table lookup) and unembeddings (a learned map to the vocabulary).

``nn.Embedding`` keeps only its indices; the unembedding is ``F.linear`` (``2·batch·dim·vocab``
FLOPs, the input kept).  Their backward diagrams are not supported yet: the embedding's
transpose is a scatter-add into the table, and a tied unembedding shares its weight.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import cost_rule, unsupported
from ncd.prims.embedding import EmbeddingOp, UnembedOp


@cost_rule(EmbeddingOp)
def cost_embedding(ctx: CostContext) -> list[Tensor]:
    ctx.save(ctx.inputs[0])
    return [ctx.new(ctx.out_axes[0], grad=True)]


@cost_rule(UnembedOp)
def cost_unembed(ctx: CostContext) -> list[Tensor]:
    prim = ctx.prim
    x = ctx.inputs[0]
    fan_in, fan_out = numel(prim.dim.axes), prim.vocab.size
    batch = x.numel / fan_in
    names = list(prim.dim.names)
    flat = x if x.merges([names]) else ctx.new(x.axes, grad=x.grad)
    if len(flat.axes) - len(names) + 1 > 2 and not flat.contiguous:
        flat = ctx.new(x.axes, grad=x.grad)
    flops = 2 * batch * fan_in * fan_out
    ctx.matmul(flops, flops * (1 + int(x.grad)))
    ctx.save(flat)
    if prim.bias:
        ctx.other(batch * fan_out, batch * fan_out)
    _ = sympy
    return [ctx.output(0)]


unsupported("embedding", "its transpose is a scatter-add of the cotangent into the table", backward=True)
unsupported("unembed", "a tied unembedding shares its weight with the embedding", backward=True)
