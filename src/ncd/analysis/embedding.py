"""Cost rules for embeddings (a table lookup) and unembeddings (a learned map to the vocabulary).

``nn.Embedding`` keeps only its indices; the unembedding is ``F.linear`` (``2·batch·dim·vocab``
FLOPs, the input kept).  Backward: the table's gradient is ``onehot(i) ⊗ g`` summed over
positions; an unembedding differentiates like a learned map; a tied one's weight gradient is
added to the table's (the two gradients of one shared weight are summed).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward, batched_rule
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.linear import learned_map_backward
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.axes import Axis, Segment
from ncd.ir.diagram import Box
from ncd.prims.derivative import EmbeddingGradOp
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
@batched_rule
def backward_embedding(box: Box, builder: object, batch: tuple[Axis, ...] = ()) -> BoxBackward:
    """An embedding is a one-hot vector through a learned map: the table's gradient is ``Σ onehot(i) ⊗ g``.

    Woven over leading axes, the sum is one ``index_add`` of the cotangent's rows (no one-hot tensor).
    """
    prim = box.prim
    return BoxBackward((("in", 0),), Box(EmbeddingGradOp(prim.vocab, prim.dim, Segment(batch))), ("weight",))


@backward_rule(UnembedOp)
@batched_rule
def backward_unembed(box: Box, builder: object, batch: tuple[Axis, ...] = ()) -> BoxBackward:
    """A learned map ``dim -> vocab`` (``Lᵀ``, ``∂L``, bias ``g``).

    Tied (``tied_to="E"``): the weight is embedding ``E``'s table, and ``∂L`` is *added* to the
    table's gradient ``∂Emb`` (``ncd.backward`` draws the sum).
    """
    prim = box.prim
    return learned_map_backward(prim.dim, Segment((prim.vocab,)), prim.bias, batch)
