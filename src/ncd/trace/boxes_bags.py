"""Conversion rule for bags of embeddings: ``nn.EmbeddingBag`` / ``F.embedding_bag`` over bags of one size.

``F.embedding_bag`` on a ``(bags, size)`` table of ids flattens them and passes the offsets ``0, size, 2·size, …``: that
call is drawn as its definition — the ``(bags, size)`` ids the model passed, the embedding lookup, the per-sample weights'
product (``mode="sum"``) and the sum (``"mean"``: the mean) over the bag — each part read by the rule of its own
operator from a step made for the occasion (as :mod:`ncd.trace.boxes_losses`), so the diagram is exact by construction.
Ragged bags (other offsets), ``mode="max"``, a ``padding_idx``, ``scale_grad_by_freq`` and sparse gradients stay
opaque.
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.boxes import _used
from ncd.trace.boxes_losses import _call
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.registry import op_name

__all__: list[str] = []

aten = torch.ops.aten
SUM, MEAN = 0, 1


@rule("aten.embedding_bag", "aten._embedding_bag")
def embedding_bag(conv: Converter, node: Node) -> None:
    """The bags' sum (or mean) of the looked-up rows, for bags of one size."""
    names = ("weight", "indices", "offsets", "scale_grad_by_freq", "mode", "sparse", "per_sample_weights",
             "include_last_offset", "padding_idx")
    given: dict[str, Any] = dict(zip(names, node.args)) | dict(node.kwargs)
    weight, ids, offsets, mode = given["weight"], given["indices"], given["offsets"], given.get("mode", SUM)
    samples = given.get("per_sample_weights")
    if given.get("scale_grad_by_freq") or given.get("sparse") or given.get("include_last_offset") \
            or given.get("padding_idx") not in (None, -1) or mode not in (SUM, MEAN) or used_beyond(conv, node):
        raise Decline("ragged, max, padding, frequency-scaled or sparse bags, or their bookkeeping read")
    if not all(isinstance(v, Node) and isinstance(v.value, torch.Tensor) for v in (weight, ids, offsets)) \
            or ids.value.dim() != 1 or offsets.value.dim() != 1 or not weight.value.is_floating_point():
        raise Decline("not a table, flat ids and offsets")
    n, bags = int(ids.value.numel()), int(offsets.value.numel())
    size = n // bags if bags else 0
    if offsets.live or size < 1 or n != bags * size or not torch.equal(
            offsets.value, torch.arange(0, n, size, dtype=offsets.value.dtype)):
        raise Decline("bags of several sizes")
    rows = _call(conv, node, "rows", aten.embedding.default, weight, _unflattened(ids, (bags, size)))
    if samples is not None:
        if mode != SUM or not isinstance(samples, Node):
            raise Decline("per-sample weights of another mode")
        scale = _call(conv, node, "scale", aten.unsqueeze.default, _unflattened(samples, (bags, size)), -1)
        rows = _call(conv, node, "weighted", aten.mul.Tensor, rows, scale)
    bag = _call(conv, node, "bag", aten.sum.dim_IntList if mode == SUM else aten.mean.dim, rows, [1])
    if tuple(bag.value.shape) != tuple(node.value[0].shape) or bag.value.dtype != node.value[0].dtype:
        raise Decline("the bags come out in another shape or dtype")
    conv._picked[(id(node), 0)] = conv.values[id(bag)]


def _unflattened(x: Node, shape: tuple[int, int]) -> Node:
    """The ``(bags, size)`` tensor ``F.embedding_bag`` flattened into ``x`` (its ids or per-sample weights): read as
    the model gave it, its sizes stay those of the model's wires."""
    if x.kind == "call" and op_name(x.target)[0] in ("aten.reshape", "aten.view", "aten._unsafe_view", "aten.flatten") \
            and isinstance(x.args[0], Node) and isinstance(x.args[0].value, torch.Tensor) \
            and tuple(x.args[0].value.shape) == shape:
        return x.args[0]
    raise Decline("ids that are not a table of bags flattened")


def used_beyond(conv: Converter, node: Node) -> bool:
    """Whether the model reads more than the bags (offsets, bag sizes, the positions of maxima)."""
    return bool(_used(conv, node) - {0})
