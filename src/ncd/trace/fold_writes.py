"""A loop that writes each step's value into its position of a buffer, read as a ``stack`` of those values.

``out[:, i] = f(state, x[:, i])`` for ``i`` in ``range(T)`` (RWKV's WKV recurrence, the chunk loop of the
chunked delta rule) is recorded, write by write, as the buffer rebuilt around the new position
(:mod:`ncd.trace.writes`): ``cat([out[:, :i], y_i.unsqueeze(1), out[:, i+1:]], 1)``, with slices whose sizes
depend on ``i``.  When every position of the buffer is written exactly once by such a chain, and nothing but the
next write reads the buffer in between, the last buffer is ``stack([y_0, ..., y_{T-1}], 1)`` — checked exactly on
the traced values — and :func:`writes_as_stacks` records it so.  The stack is what
:func:`ncd.trace.loops.fold_time_loops` folds into one scan whose step is drawn once.

>>> import torch, ncd
>>> class Running(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, t, m)
...         out, state = torch.zeros_like(x), torch.zeros_like(x[:, 0])
...         for i in range(x.shape[1]):
...             state = torch.tanh(state + x[:, i])
...             out[:, i] = state * 2
...         return out
>>> d = ncd.trace(Running(), torch.randn(2, 5, 3))
>>> [b.prim.op for b in d.boxes()].count("scan")
1
>>> longer = ncd.trace(Running(), torch.randn(2, 9, 3))
>>> len(list(longer.boxes())) == len(list(d.boxes()))  # the step drawn once, whatever the length
True
>>> x = torch.randn(2, 5, 3)
>>> torch.allclose(d.to_torch()(x), Running()(x))
True
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.capture import Captured, Node, refs, without_unread
from ncd.trace.convert import LOG, op_name

__all__ = ["writes_as_stacks", "stacked_writes"]

aten = torch.ops.aten


def stacked_writes(captured: Captured) -> Captured:
    """``captured`` with its chains of writes recorded as stacks (:func:`writes_as_stacks`); as it is if there are none
    or a check cannot run (an unusual recording proves nothing)."""
    try:
        nodes = writes_as_stacks(list(captured.nodes), captured.outputs)
    except Exception as error:  # noqa: BLE001 - every stack is recorded after its own checks
        LOG.debug("writes not read as stacks: %s: %s", type(error).__name__, error)
        return captured
    if len(nodes) == len(captured.nodes):
        return captured
    return Captured(nodes, captured.outputs, captured.method, captured.input_names, captured.escaped)


def writes_as_stacks(nodes: list[Node], outputs: list[Any]) -> list[Node]:
    """``nodes`` with every chain of writes covering a buffer's positions once recorded as a stack (see above)."""
    if not _any_write(nodes):  # no chain ends anywhere: the readers of every call are not gathered
        return nodes
    readers: dict[int, list[Node]] = {}
    for node in nodes:
        if node.kind == "call":
            for r in refs((node.args, node.kwargs)):
                readers.setdefault(id(r), []).append(node)
    outs = {id(r) for r in refs(outputs)}
    seen: set[int] = set()
    dropped: set[int] = set()
    stacks: list[Node] = []
    for node in reversed(nodes):
        if id(node) in seen or node.kind != "call" or op_name(node.target)[1] not in _WRITES:
            continue
        chain = _chain(node, readers, outs)
        if chain is None:
            continue
        writes, dim, values, between = chain
        seen.update(id(w) for w, _ in writes)
        stacked = torch.stack([v.value for v in values], dim)
        if stacked.dtype != node.value.dtype or not torch.equal(stacked, node.value):
            continue
        for write, _ in writes:  # the buffers in between, the pieces they were cut into, selects left unread
            if write is not node:
                dropped.add(id(write))
                dropped.update(id(r) for r in readers.get(id(write), []) if _dead_select(r, readers))
            if op_name(write.target)[1] == "aten.cat.default":
                dropped.update(id(piece) for piece in write.args[0])
        dropped.update(id(v) for v in between)
        dropped.update(id(r) for v in between for r in readers.get(id(v), []) if _dead_select(r, readers))
        node.target, node.args, node.kwargs = aten.stack.default, (list(values), dim), {}
        stacks.append(node)
    if not stacks:
        return nodes
    kept = without_unread(nodes, outputs, dropped)  # a dropped node still read by one that stays, stays
    for stack in stacks:  # recorded where the last write was: moved to just before its first reader, after the loop
        kept.remove(stack)
        first = next((j for j, n in enumerate(kept) if any(r is stack for r in refs((n.args, n.kwargs)))), len(kept))
        kept.insert(first, stack)
    return kept


#: the recorded forms of a write of one entry: the buffer cut around it and joined, or the entry scattered into it
#: (:func:`ncd.trace.writes.write_back`)
_WRITES = frozenset({"aten.cat.default", "aten.as_strided_scatter.default"})


def _any_write(nodes: list[Node]) -> bool:
    """Whether some ``cat`` may end a chain of writes: it is read as one write (:func:`_write`, along its own
    dimension, as :func:`_chain` reads the last) or reading it raises (then :func:`_chain` decides, as before)."""
    for node in nodes:
        if node.kind != "call" or op_name(node.target)[1] not in _WRITES:
            continue
        try:
            size = node.value.shape
            dim = _dim(node)
            if not isinstance(dim, int) or not isinstance(node.value, torch.Tensor) or node.value.dim() == 0:
                continue
            dim %= node.value.dim()
            if _write(node, dim, int(size[dim])) is not None:
                return True
        except Exception:  # noqa: BLE001 - read by the chain itself, as before
            return True
    return False


def _dead_select(node: Node, readers: dict[int, list[Node]]) -> bool:
    return op_name(node.target)[1] == "aten.select.int" and not readers.get(id(node))


def _chain(last: Node, readers: dict[int, list[Node]],
           outs: set[int]) -> tuple[list[tuple[Node, int]], int, list[Node], list[Node]] | None:
    """The writes ending at ``last`` (each with its position), the dimension, the value written at each position
    (in position order) and the views between one write and the next (a batch of one), if they cover every position
    of the buffer once."""
    size = last.value.shape
    dim = _dim(last)
    if not isinstance(dim, int) or not isinstance(last.value, torch.Tensor) or last.value.dim() == 0:
        return None
    dim %= last.value.dim()
    length = int(size[dim])
    writes: list[tuple[Node, int]] = []
    at_position: dict[int, Node] = {}
    views: list[Node] = []
    node = last
    while True:
        parsed = _write(node, dim, length)
        if parsed is None:
            break
        base, position, value = parsed
        if position in at_position:
            return None
        writes.append((node, position))
        at_position[position] = value
        if base is None:
            break
        between = _through_units(base)  # the buffer before, and the views from it to what the pieces cut
        earlier = between[0]
        if not (earlier.kind == "call" and op_name(earlier.target)[1] in _WRITES and earlier.value.shape == size):
            while base.kind == "call" and op_name(base.target)[1] == "aten.select.int":  # the first buffer's views:
                views.append(base)  # dropped with the pieces that read them (kept if anything else reads them)
                base = base.args[0]
            break
        # the buffer in between: read only by the next write's pieces (and selects the recorder left unread), through
        # the views between them
        pieces = {id(p) for p in node.args[0]} if op_name(node.target)[1] == "aten.cat.default" else {id(node)}
        nexts = [{id(v)} for v in between[1:]] + [pieces]
        if any(id(v) in outs or any(id(r) not in allowed and not _dead_select(r, readers) for r in readers.get(id(v), []))
               for v, allowed in zip(between, nexts)):
            break
        views.extend(between[1:])
        node = earlier
    if length < 2 or len(at_position) != length:
        return None
    return writes, dim, [at_position[i] for i in range(length)], views


def _through_units(base: Node) -> list[Node]:
    """``[buffer, views...]`` from the buffer a write cut: ``base`` itself, or, for a write through size-1 dimensions
    (``out[:, :, i] = y`` with a batch of one), the cat inside ``unsqueeze(cat, d)...`` and the views
    ``unsqueeze..., select(·, d, 0)...`` that lead from it back to ``base``."""
    selects: list[Node] = []
    node = base
    while node.kind == "call" and op_name(node.target)[1] == "aten.select.int" and isinstance(node.args[0], Node) and \
            node.args[2] == 0 and isinstance(node.args[1], int) and node.args[0].value.shape[node.args[1]] == 1:
        selects.append(node)
        node = node.args[0]
    unsqueezes: list[Node] = []
    for s in reversed(selects):  # the select nearest the buffer undoes the outermost unsqueeze
        d = s.args[1] % node.value.dim()
        if not (node.kind == "call" and op_name(node.target)[1] == "aten.unsqueeze.default" and
                isinstance(node.args[0], Node) and isinstance(node.args[1], int) and
                node.args[1] % node.value.dim() == d):
            return [base]
        unsqueezes.append(node)
        node = node.args[0]
    return [node] + list(reversed(unsqueezes)) + list(reversed(selects))


def _dim(node: Node) -> Any:
    """The dimension a recorded write writes one entry of: ``cat``'s, or the one entry of a scatter's region (else
    None)."""
    if op_name(node.target)[1] == "aten.cat.default":
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    found = _entry(node)
    return found[0] if found is not None else None


def _entry(node: Node) -> tuple[int, int] | None:
    """``as_strided_scatter(base, value, ...)`` writing one entry along one dim of a contiguous ``base`` with no size-1
    dims (every other dim whole): that dim and the entry (read back as :func:`~ncd.trace.idioms_slicing.put_region`
    does, checked to give exactly those arguments)."""
    from ncd.trace.idioms_slicing import put_region

    if len(node.args) < 4 or not isinstance(node.args[0], Node) or not isinstance(node.args[1], Node) or node.kwargs:
        return None
    x, value = node.args[0].value, node.args[1].value
    size, stride = node.args[2], node.args[3]
    offset = node.args[4] if len(node.args) > 4 else 0
    if not isinstance(x, torch.Tensor) or not isinstance(value, torch.Tensor) or not x.is_contiguous() \
            or not isinstance(offset, int) or not all(isinstance(v, int) for v in (*size, *stride)):
        return None
    shape = tuple(int(s) for s in x.shape)
    found = put_region(shape, list(size), list(stride), offset)
    if found is None or 1 in shape or tuple(int(s) for s in value.shape) != tuple(size):
        return None
    starts, steps, lengths = found
    entries = [d for d in range(len(shape)) if lengths[d] is None]
    if len(entries) != 1 or any(lengths[d] != shape[d] or starts[d] for d in range(len(shape)) if d != entries[0]):
        return None
    return entries[0], starts[entries[0]]


def _write(node: Node, dim: int, length: int) -> tuple[Node | None, int, Node] | None:
    """``cat([base[:i], value.unsqueeze(dim), base[i+1:]], dim)`` or the entry ``i`` along ``dim`` of ``base``
    scattered (``as_strided_scatter``): (base, i, value); ``base`` is ``None`` when no slice of it is kept (a buffer of
    one position)."""
    if node.kind != "call":
        return None
    if op_name(node.target)[1] == "aten.as_strided_scatter.default":
        found = _entry(node)
        if found is None or found[0] != dim % node.value.dim():
            return None
        return node.args[0], found[1], node.args[1]
    if op_name(node.target)[1] != "aten.cat.default":
        return None
    pieces = node.args[0]
    d = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(pieces, (list, tuple)) or not isinstance(d, int) or d % node.value.dim() != dim or \
            not all(isinstance(p, Node) and p.kind == "call" and isinstance(p.value, torch.Tensor) for p in pieces):
        return None
    units = [j for j, p in enumerate(pieces) if op_name(p.target)[1] == "aten.unsqueeze.default"
             and p.value.shape[dim] == 1 and isinstance(p.args[1], int) and p.args[1] % p.value.dim() == dim
             and isinstance(p.args[0], Node)]
    if len(units) != 1:
        return None
    (u,) = units
    before, after = pieces[:u], pieces[u + 1:]
    if len(before) > 1 or len(after) > 1:
        return None
    position = 0
    bases: list[Node] = []
    for piece, first in ((before, True), (after, False)):
        if not piece:
            continue
        s = piece[0]
        if op_name(s.target)[1] != "aten.slice.Tensor" or not isinstance(s.args[0], Node):
            return None
        sdim, start, end = (list(s.args[1:4]) + [None, None, None])[:3]
        step = s.args[4] if len(s.args) > 4 else 1
        if not isinstance(sdim, int) or sdim % s.value.dim() != dim or step != 1 or \
                not isinstance(start, int) or not isinstance(end, int):
            return None
        if first:
            if start != 0:
                return None
            position = end
        elif end < length or start != position + 1:
            return None
        bases.append(s.args[0])
    if len({id(b) for b in bases}) > 1 or (not after and position + 1 != length):
        return None
    return (bases[0] if bases else None), position, pieces[u].args[0]
