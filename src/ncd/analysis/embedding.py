"""Cost rules for embeddings (a table lookup) and unembeddings (a learned map to the vocabulary).

``nn.Embedding`` keeps only its indices; the unembedding is ``F.linear`` (``2·batch·dim·vocab``
FLOPs, the input kept).  Backward: the table's gradient is ``onehot(i) ⊗ g`` summed over
positions; an untied unembedding differentiates like a learned map; a tied one is not
supported yet (its weight gets two gradients).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward, route
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import AnalysisError, backward_rule, cost_rule
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.prims.derivative import EmbeddingGradOp, LinearTransposeOp, LinearWeightGradOp, weight_segment
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


# -- backward ------------------------------------------------------------------------------
@backward_rule(EmbeddingOp)
def backward_embedding(box: Box, builder: object) -> BoxBackward:
    """An embedding is a one-hot vector through a learned map: the table's gradient is ``onehot(i) ⊗ g``."""
    prim = box.prim
    return BoxBackward((("in", 0),), Box(EmbeddingGradOp(prim.vocab, prim.dim)), ("weight",))


@backward_rule(UnembedOp)
def backward_unembed(box: Box, builder: object) -> BoxBackward:
    """Untied: a learned map ``dim -> vocab`` (``Lᵀ``, ``∂L``, bias ``g``)."""
    prim = box.prim
    if prim.tied_to is not None:
        raise AnalysisError(f"backward of {box.text()}: a tied unembedding shares its weight with embedding"
                            f" {prim.tied_to!r}, whose two gradients ncd.backward does not add up yet")
    x, g = prim.dim, Segment((prim.vocab,))
    w = weight_segment(x, g)
    picks = [2, 1, 0, 2] + ([2] if prim.bias else [])
    parts = [Box(LinearTransposeOp(x, g)), Box(LinearWeightGradOp(x, g))] + ([Identity(Type((g,)))] if prim.bias else [])
    grads = ("weight", "bias") if prim.bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route([x, w, g], picks), Par.of(*parts)), grads)
