"""The rotary embedding of neighbouring pairs (GPT-J's ``rotate_every_two``, Cohere's ``rotate_half``) drawn with one ``ρ``.

``x * cos + stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2) * sin`` with tables repeated pairwise
(``repeat_interleave(freqs, 2)``: ``cos[..., 2j] = cos[..., 2j+1]``) turns each pair ``(x₂ⱼ, x₂ⱼ₊₁)`` by the angle of
frequency ``j``.  On ``y = cat([x[..., 0::2], x[..., 1::2]])`` (the even entries, then the odd ones) that is RoFormer's
``ρ(y) = y·cos + cat(−y₂, y₁)·sin`` on the half tables ``cat(c, c)``, entry for entry the same products and sum; the
result is ``ρ(y)`` with its halves interleaved again (split into ``2 × k/2``, crossed, merged).  So the eight recorded
calls (two strided slices, a negation, a stack, a flatten, two products, a sum) are drawn as the two slices, their
concatenation, one ``ρ`` and the interleaving, the tables checked as :mod:`ncd.trace.rotary` checks its own (equal to
RoFormer's of the base and scale they give, read off their even entries, whose odd entries must equal them exactly).

>>> import torch, ncd
>>> from ncd.prims.rotary import RotaryOp
>>> class Pairs(torch.nn.Module):
...     def forward(self, q):
...         inv = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
...         emb = torch.repeat_interleave(torch.arange(5).float()[:, None] * inv, 2, dim=-1)
...         turned = torch.stack([-q[..., 1::2], q[..., ::2]], dim=-1).flatten(-2)
...         return q * emb.cos() + turned * emb.sin()
>>> d = ncd.trace(Pairs(), torch.randn(2, 5, 8))
>>> sum(isinstance(b.prim, RotaryOp) for b in d.boxes())
1
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node
from ncd.trace.registry import called
from ncd.trace.rotary import Table, _closed, _laid_out, _products_of_tables, _strided, _tables_read, emit_rotary

if TYPE_CHECKING:
    from collections.abc import Callable

    from ncd.trace.convert import Converter

__all__ = ["prepare"]

_FLATTENS = ("aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view")


def _turned(node: Any, x: Node) -> tuple[Node, Node, list[Node]] | None:
    """``stack([-x[..., 1::2], x[..., 0::2]], -1)`` flattened over its last two axes: the even and odd slices and the
    calls of the turn (the flatten, the stack, the negation)."""
    if called(node) not in _FLATTENS or not isinstance(node.value, torch.Tensor) \
            or tuple(node.value.shape) != tuple(x.value.shape):
        return None
    stack = node.args[0]
    if called(stack) != "aten.stack" or not isinstance(stack.args[0], (list, tuple)) or len(stack.args[0]) != 2:
        return None
    dim = stack.args[1] if len(stack.args) > 1 else stack.kwargs.get("dim", 0)
    k = int(x.value.shape[-1])
    if dim not in (-1, x.value.dim()) or tuple(stack.value.shape) != (*x.value.shape[:-1], k // 2, 2):
        return None  # (the flatten of (…, k/2, 2) to x's shape merges its last two axes, whatever call it is)
    neg, even = stack.args[0]
    if called(neg) != "aten.neg" or len(neg.args) != 1:
        return None
    odd = neg.args[0]
    if not (_strided(even, x, 0) and _strided(odd, x, 1)):
        return None
    return even, odd, [node, stack, neg]


def _pairwise(table: torch.Tensor) -> torch.Tensor | None:
    """The half table ``cat(c, c)`` of a table repeated pairwise (``c`` its even entries, equal to its odd ones)."""
    if table.shape[-1] % 2 or not torch.equal(table[..., 0::2], table[..., 1::2]):
        return None
    return torch.cat((table[..., 0::2], table[..., 0::2]), dim=-1)


def _match(conv: Converter, add: Node, read: list[Any]) -> tuple[Any, ...] | None:
    for first, second, x, cos, flat, sin in _products_of_tables(add):
        k = int(x.value.shape[-1])
        if k % 2 or k == 4 or not isinstance(flat, Node):  # (k = 4: see _emit)
            continue
        turn = _turned(flat, x)
        if turn is None or not isinstance(cos.value, torch.Tensor) or not isinstance(sin.value, torch.Tensor):
            continue
        halves = [_pairwise(v.value) for v in (cos, sin)]
        if halves[0] is None or halves[1] is None:
            continue
        tables = _laid_out(halves, x, k)
        if tables is None or tables[0].shape[-2] < 2:  # (one position's tables would fit an axis of size 1)
            continue
        found = _tables_read(tables[0], tables[1], conv.model, read)
        if found is None:
            continue
        even, odd, calls = turn
        members = [first, second, *calls]
        if not _closed(conv, members, add):
            continue
        between = tables[0].dim() != cos.value.dim()
        return members, x, even, odd, found, between
    return None


def prepare(conv: Converter) -> dict[int, Callable[[Converter, Node], None]]:
    """The sums that are rotations of neighbouring pairs, by node id, with their emitters (their other calls are added
    to ``conv.skip``)."""
    emitters: dict[int, Callable[[Converter, Node], None]] = {}
    read: list[Any] = []
    for node in conv.captured.nodes:
        if node.kind == "call" and node.live and id(node) not in conv.skip and called(node) == "aten.add":
            match = _match(conv, node, read)
            if match is not None:
                members, x, even, odd, table, between = match
                conv.skip |= {id(m) for m in members}
                emitters[id(node)] = functools.partial(_emit, rotation=(x, even, odd, table, between))
    return emitters


def _emit(conv: Converter, node: Node, rotation: tuple[Node, Node, Node, Table, bool]) -> None:
    """``ρ`` of the even entries then the odd ones (:func:`ncd.trace.rotary.emit_rotary`), interleaved again.  (The
    interleaving splits the ``k`` wire into ``2 × k/2``: at ``k = 4`` two wires of size 2, whose names come in no fixed
    order, so that equal layers (moonshine's) would not fold: such rotations are not matched.)"""
    from ncd.trace.boxes_losses import _call

    x, even, odd, table, between = rotation
    aten = torch.ops.aten
    value = node.value
    k = int(value.shape[-1])
    halves = Node(f"{node.name}_halves", "call", value=torch.cat((value[..., 0::2], value[..., 1::2]), dim=-1),
                  stack=node.stack, live=True, line=node.line)
    emit_rotary(conv, halves, x, table, (even, odd), between)
    split = _call(conv, node, "halves_split", aten.view.default, halves, [*value.shape[:-1], 2, k // 2])
    crossed = _call(conv, node, "halves_crossed", aten.transpose.int, split, -1, -2)
    merged = _call(conv, node, "interleaved", aten.flatten.using_ints, crossed, -2)
    conv.bind(node, conv.value(merged))
