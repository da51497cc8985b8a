"""A mask that keeps everything: the expert-group selection of a router with one group, read as no mask at all.

DeepSeek-style routers (glm4_moe, glm4_moe_lite, glm4v_moe, exaone_moe, mistral_large4, dots3 …) keep the experts of
the ``topk_group`` best of ``n_group`` groups::

    group_idx = topk(group_scores, k=topk_group, dim=-1)[1]        # (tokens, n_group)
    group_mask = zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(...).reshape(-1, n_experts)
    scores = scores.masked_fill(~score_mask.bool(), -inf)

With one group (GLM-4.5's own configuration, and the corpus's toys) the top-1 of an axis of one entry is index 0 on
every input: the scatter writes every place, the mask is all ones, its negation all zeros, and ``masked_fill`` returns
its input.  :func:`find_fills` checks exactly that shape — a value scatter into a constant, at the indices of a
top-``k`` over an axis of ``k = 1`` entry, the index as large as the constant, then only shape and unary logic calls,
ending in ``masked_fill``s whose recorded mask is all false — and skips the whole chain: the scatter, its mask
calls, and the calls only its indices read (the group scores' top-2 and sum).  Each ``masked_fill`` is its input.
An axis of one entry that a model input also has (a batch of one) could be an input's size: nothing is skipped then.

A fill by a *constant* mask (made without reading the inputs' values) that is all false is its input as well, read off
the mask's recorded entries: DeBERTa's ``XSoftmax`` without an attention mask (``~ones(b, t).bool()``, filled with
``finfo.min`` before the softmax and with ``0`` after it), or ``torch.where`` of such a mask, all false (the second
branch) or all true (the first); and a product by constant ones (DeBERTa's embeddings times that mask).  The constant
is the same on every input, so this is exact by construction where the operand kept has the result's shape and dtype
(its entries, ``-0.0`` and NaN included, are returned unchanged, and so is the gradient).  Only a constant made in
the forward counts: one read from a buffer or parameter (state a checkpoint may set) stays drawn.  Such a constant may
be a table computed from the inputs' sizes (a mask of padding at the traced length): the diagram then keeps the traced
batch and sequence sizes (a ``fixed`` entry), as the constant box it replaces would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node, from_state, refs, upstream
from ncd.trace.registry import called

if TYPE_CHECKING:
    from ncd.trace.convert import Converter

__all__ = ["find_fills", "constant_fill"]

#: calls that move or relabel a mask's entries, or negate them: a mask of one value stays of one value
_SHAPE_LOGIC = frozenset({"aten.unsqueeze", "aten.expand", "aten.reshape", "aten.view", "aten._unsafe_view",
                          "aten.to", "aten._to_copy", "aten.bitwise_not", "aten.logical_not", "aten.clone",
                          "aten.contiguous", "aten.squeeze", "aten.flatten", "aten.alias"})


def _full_scatter(node: Node, ones: bool) -> bool:
    """``constant.scatter(d, topk(x, 1, d)[1], v)`` over an axis ``d`` of one entry, the index the constant's shape:
    every place is written, on every input (``ones``: no model input has an axis of one entry)."""
    if called(node) != "aten.scatter" or len(node.args) != 4 or node.kwargs or not isinstance(node.value, torch.Tensor):
        return False
    target, dim, index, value = node.args
    if not (isinstance(target, Node) and not target.live and isinstance(target.value, torch.Tensor)) \
            or isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(dim, int):
        return False
    if not (called(index) == "operator.getitem" and index.args[1] == 1 and called(index.args[0]) == "aten.topk"):
        return False
    topk = index.args[0]
    source = topk.args[0]
    k = topk.args[1] if len(topk.args) > 1 else topk.kwargs.get("k")
    along = topk.args[2] if len(topk.args) > 2 else topk.kwargs.get("dim", -1)
    if not (isinstance(source, Node) and isinstance(source.value, torch.Tensor) and isinstance(along, int)) \
            or topk.sized or node.sized or ones:
        return False
    rank = source.value.dim()
    if rank == 0 or rank != target.value.dim() or dim % rank != along % rank or k != 1 \
            or source.value.shape[along] != 1 or tuple(index.value.shape) != tuple(target.value.shape):
        return False
    return bool((node.value == value).all())


def _mask_chain(conv: Converter, scatter: Node) -> tuple[set[int], list[Node]] | None:
    """The shape and logic calls reading only the scatter (and each other), and the ``masked_fill``s they end in (their
    recorded mask all false); None if anything else reads them."""
    chain = {id(scatter)}
    ends: list[Node] = []
    todo = [scatter]
    outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
    while todo:
        node = todo.pop()
        if id(node) in outputs:
            return None
        for user in conv.consumers.get(id(node), []):
            if id(user) in chain or user in ends:
                continue
            if called(user) in _SHAPE_LOGIC and len(refs((user.args, user.kwargs))) == 1:
                chain.add(id(user))
                todo.append(user)
            elif called(user) == "aten.masked_fill" and len(user.args) == 3 and user.args[1] is node \
                    and isinstance(user.args[0], Node) and id(user.args[0]) not in chain and user.args[0].live \
                    and not (isinstance(user.args[2], Node)) and _keeps(user):
                ends.append(user)
            else:
                return None
    return (chain, ends) if ends else None


def _keeps(fill: Node) -> bool:
    """``masked_fill(x, mask, v)`` with a recorded mask all false, of ``x``'s shape and dtype: ``x`` itself."""
    x, mask = fill.args[0], fill.args[1]
    return isinstance(mask.value, torch.Tensor) and mask.value.dtype == torch.bool and not bool(mask.value.any()) \
        and isinstance(fill.value, torch.Tensor) and tuple(fill.value.shape) == tuple(x.value.shape) \
        and fill.value.dtype == x.value.dtype


def _only_for(conv: Converter, index: Node, skipped: set[int]) -> set[int]:
    """The calls read only by the skipped ones, back from the scatter's index (the group scores' top-k and sum)."""
    outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
    dead: set[int] = set()
    todo = [index]
    while todo:
        node = todo.pop()
        if node.kind != "call" or id(node) in dead or id(node) in outputs \
                or any(id(u) not in skipped and id(u) not in dead for u in conv.consumers.get(id(node), [])):
            continue
        dead.add(id(node))
        todo.extend(refs((node.args, node.kwargs)))
    return dead


def find_fills(conv: Converter) -> dict[int, Any]:
    """Skip every group selection of one group (the module's docstring); returns the ``masked_fill``s' emitters."""
    ones = any(isinstance(n.value, torch.Tensor) and 1 in tuple(n.value.shape)
               for n in conv.captured.nodes if n.kind == "input")
    emitters: dict[int, Any] = {}
    for node in conv.captured.nodes:
        if node.kind != "call" or not node.live or id(node) in conv.skip or not _full_scatter(node, ones):
            continue
        found = _mask_chain(conv, node)
        if found is None:
            continue
        chain, ends = found
        conv.skip |= chain | _only_for(conv, node.args[2], chain)
        for fill in ends:
            emitters[id(fill)] = _same
    return emitters


def _same(conv: Converter, node: Node) -> None:
    conv.bind(node, conv.value(node.args[0]))


def constant_fill(conv: Converter, node: Node) -> bool:
    """Bind a ``masked_fill`` or ``where`` by a constant mask that selects one operand everywhere, or a product by
    constant ones, to that operand (the module's docstring): whether it did (its rule draws it otherwise)."""
    from ncd.trace.registry import where

    kept = _kept_branch(node)
    if kept is None:
        return False
    fixed = conv.__dict__.setdefault("_size_fixed", [])
    if not any(text.endswith(_UNDRAWN) for _, text in fixed):  # (one entry says it)
        fixed.append((("b", "t"), f"{called(node)} {where(node)}{_UNDRAWN}"))
    conv.bind(node, conv.value(kept))
    return True


def _kept_branch(node: Node) -> Node | None:
    """The operand ``node`` returns unchanged: ``x`` of ``masked_fill(x, mask, v)`` with ``mask`` all false, ``b`` of
    ``where(c, a, b)`` with ``c`` all false, ``a`` with ``c`` all true, ``x`` of ``x * ones`` (real numbers: ``x · 1``
    is ``x`` exactly, ``-0.0``, infinities and NaN too); the mask or the ones a constant with recorded entries, the
    operand a live tensor of the result's shape and dtype; else None."""
    name = called(node)
    if len(node.args) != (2 if name == "aten.mul" else 3) or node.kwargs:
        return None
    if name == "aten.masked_fill":
        x, mask = node.args[:2]
    elif name == "aten.where":
        mask = node.args[0]
        if not _recorded(mask) or mask.value.dtype != torch.bool:
            return None
        x = node.args[1] if bool(mask.value.reshape(-1)[0]) else node.args[2]
    elif name == "aten.mul":
        x, mask = node.args if isinstance(node.args[0], Node) and node.args[0].live else node.args[::-1]
    else:
        return None
    if not (_recorded(mask) and isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)
            and isinstance(node.value, torch.Tensor) and tuple(x.value.shape) == tuple(node.value.shape)
            and x.value.dtype == node.value.dtype and mask.value.dim() <= node.value.dim()):
        return None
    m = mask.value
    if name == "aten.mul":
        real = not (x.value.is_complex() or m.is_complex())
        return x if real and bool((m == 1).all()) else None
    if m.dtype != torch.bool:
        return None
    return x if (bool(m.all()) if name == "aten.where" and x is node.args[1] else not bool(m.any())) else None


def _recorded(mask: Any) -> bool:
    """Whether ``mask`` is a constant made in the forward (without the inputs' values, nor a buffer's or parameter's)
    whose entries were recorded."""
    return isinstance(mask, Node) and mask.kind in ("call", "constant") and not mask.live \
        and isinstance(mask.value, torch.Tensor) and mask.value.device.type != "meta" and mask.value.numel() > 0 \
        and _made_in_forward(mask)


def _made_in_forward(node: Node, limit: int = 200) -> bool:
    """Whether every constant ``node`` is computed from was made in the forward (no state-dict source), within
    ``limit`` calls."""
    for count, n in enumerate(upstream(node), 1):
        if n.live or from_state(n) or count > limit:
            return False
    return True


_UNDRAWN = ": its constant mask (or ones), made at the traced sizes and keeping one operand everywhere, is not drawn"
