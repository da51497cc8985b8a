"""``expand`` of a live value read as a broadcast copy (:class:`~ncd.prims.derivative.ExpandOp`): the new wires
named after the batch, or after the wire a reader of the expansion holds at the same place.
"""

from __future__ import annotations

import torch

from ncd.ir.diagram import Box
from ncd.trace.capture import Node, refs
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms import _shape, _tensor
from ncd.trace.naming import PRIME

__all__ = ["expand"]


def _batch_name(conv: Converter, size: int) -> str:
    """A new leading wire of the batch's size is the batch (a class token expanded over the examples)."""
    for vid in conv.inputs:
        axes = conv.segs[vid].axes
        if axes and axes[0].name == "b" and not axes[0].size.free_symbols and int(axes[0].size) == size:
            return "b"
    return conv.namer.fresh(size)


def _broadcast_name(conv: Converter, node: Node, at: int, size: int, taken: set[str]) -> str | None:
    """The name of the wire a new wire of an expansion is broadcast against: the wire at the same place of a live
    value its reader also reads, of the expansion's rank (a learned query expanded to ``stacked.shape[:-2]`` and read
    by the attention beside ``stacked``: the tokens ``t``, not the name every other wire of their size shares)."""
    rank = len(_shape(node))
    for reader in conv.consumers.get(id(node), ()):
        for other in refs((reader.args, reader.kwargs)):
            if other is node or not other.live or id(other) not in conv.values or not isinstance(other.value, torch.Tensor):
                continue
            names = conv.names(conv.values[id(other)])
            if len(names) == rank and int(other.value.shape[at]) == size and names[at] != "1" \
                    and names[at].rstrip(PRIME) not in {n.rstrip(PRIME) for n in taken}:
                return names[at]
    return None


@rule("aten.expand", "aten.expand_as", "aten.broadcast_to")
def expand(conv: Converter, node: Node) -> None:
    """A broadcast copy of a value (live, or a parameter or constant expanded like a live one: GPT-NeoX Japanese's
    ``attn_bias.expand_as(residual)``) along new or size-1 wires; ``torch.broadcast_to`` is the same call (Falcon's
    keys and values broadcast to the query heads)."""
    from ncd.prims.derivative import ExpandOp

    source = node.args[0]
    if not _tensor(source) or source.value.dtype != node.value.dtype:
        raise Decline("not a tensor of the same dtype")
    vid = conv.value(source)
    shape_in, shape_out = _shape(source), _shape(node)
    if shape_in == shape_out:
        conv.bind(node, vid)
        return
    names = conv.names(vid)
    lead = len(shape_out) - len(shape_in)
    if lead < 0:
        raise Decline("fewer wires")
    kept: list[str] = []
    kept_shape: list[int] = []
    out: list[str] = []
    taken = set(names)
    for j, size in enumerate(shape_out):
        i = j - lead
        if i >= 0 and shape_in[i] == size:
            out.append(names[i])
            kept.append(names[i])
            kept_shape.append(size)
            continue
        if i >= 0 and shape_in[i] != 1:
            raise Decline("expands a wire that is not of size 1")
        name = _batch_name(conv, size) if j == 0 else (_broadcast_name(conv, node, j, size, taken)
                                                         or conv.namer.fresh(size))
        while name in taken:
            name += PRIME
        taken.add(name)
        out.append(name)
    seg = conv.segs[vid]
    rng = None if seg.range is None else int(seg.range)
    src = conv.view(vid, kept, tuple(kept_shape))
    target = conv.namer.segment(out, shape_out, seg.dtype, rng)
    (result,) = conv.emit(Box(ExpandOp(conv.segs[src], target)), [src], [target])
    conv.bind(node, result)
