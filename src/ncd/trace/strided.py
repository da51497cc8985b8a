"""``x.as_strided(size, stride)`` recorded as the entries of ``x`` it reads (``x.reshape(-1)[positions]``, leading axes
read whole kept as they are): its result depends on how ``x`` lies in memory, which the lowered module need not
reproduce; the entries read do not."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import user_line
from ncd.trace.refusals import Unsupported
from ncd.trace.tensors import _same

if TYPE_CHECKING:
    from ncd.trace.recording import _Recording


def strided_read(rec: _Recording, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``x.as_strided(size, stride)`` (overlapping windows read straight from memory) as the entries of ``x`` it
    reads: ``x.reshape(-1)[positions]``.  Its result depends on how ``x`` lies in memory, which the lowered module
    need not reproduce; the entries read do not."""
    x = args[0]
    out: torch.Tensor = func(*args, **kwargs)
    if not isinstance(x, torch.Tensor) or x.device.type == "meta":
        raise Unsupported("as_strided of a tensor without values")
    entries = x.untyped_storage().nbytes() // max(x.element_size(), 1)
    # the positions worked out in int32 where they fit: half the memory (each temporary here is memory touched for
    # the first time, ~0.25 ms per 512 kB on a first call)
    kind = torch.int32 if max(entries, x.numel(), out.numel()) < 2 ** 31 else torch.int64
    read = _addresses(out, kind)
    positions, outside = _positions(x, entries, read, kind)
    base = x._base
    if outside and isinstance(base, torch.Tensor) and id(base) in rec.by_id:  # a view read past its own entries:
        x = base  # (x[:2].as_strided((3, n), (n, 1))) the entries of the tensor it views, which it may read
        positions, outside = _positions(x, entries, read, kind)
    if outside:
        raise Unsupported(f"as_strided reads memory outside its input at {user_line() or '?'}")
    # axes read whole, in order (a batch): kept, not flattened (a contiguous x's positions are its addresses less
    # its offset: linear in out's strides, so read from them)
    linear = x.is_contiguous() and x.numel() and out.numel()
    lead = _kept_leading_linear(x, out) if linear else _kept_leading(x, out, positions)
    flat = rec.emit(torch.ops.aten.reshape.default, x, [*x.shape[:lead], -1])
    index = (positions[(0,) * lead] if lead else positions).to(torch.int64)  # (recorded as int64 indices)
    got = rec.emit(torch.ops.aten.index.Tensor, flat, [*([None] * lead), index])
    if not _same(got, out):
        raise Unsupported("as_strided: the entries read do not give the tensor the model read")
    rec.by_id[id(out)] = rec.by_id[id(got)]
    rec.keep.append(out)
    if out._base is not None:
        rec.views.setdefault(id(out._base), []).append(out)
    return out


def _addresses(t: torch.Tensor, kind: torch.dtype) -> torch.Tensor:
    """The address (in entries, from its memory's start) of each entry of ``t``: ``arange(entries).as_strided(...)``
    of ``t``'s size, strides and offset, made at ``t``'s size (not its memory's: longformer reads 32 k entries of a
    262 k-entry memory), in ``kind`` (every partial sum is at most the last address: no overflow)."""
    addresses = torch.full((), int(t.storage_offset()), dtype=kind)
    for d, (n, step) in enumerate(zip(t.shape, t.stride())):
        along = [1] * t.dim()
        along[d] = int(n)
        addresses = addresses + (torch.arange(int(n), dtype=kind) * int(step)).reshape(along)
    return addresses


def _memory_order(x: torch.Tensor) -> list[int] | None:
    """``x``'s dimensions by decreasing stride when its entries lie one after another in its memory, each once (a
    permuted contiguous tensor: ``x.permute(order)`` is contiguous); ``None`` otherwise (gaps, overlaps, no entries)."""
    if not x.numel():
        return None
    strides = x.stride()
    order = sorted(range(x.dim()), key=lambda d: -strides[d])
    step = 1
    for d in reversed(order):
        n = int(x.shape[d])
        if n == 1:
            continue
        if strides[d] != step:
            return None
        step *= n
    return order


def _positions(x: torch.Tensor, entries: int, read: torch.Tensor,
               kind: torch.dtype) -> tuple[torch.Tensor, bool]:
    """The entries of ``x`` the addresses ``read`` hold, and whether any lies outside ``x`` (``entries``: how many its
    memory holds)."""
    if x.is_contiguous() and x.numel():  # x's entry j at address offset + j: the position is the address less it
        positions = read - int(x.storage_offset())  # (the map below, without its two tensors of the memory's size)
        low, high = torch.aminmax(positions) if positions.numel() else (0, 0)
        return positions, bool(low < 0) or bool(high >= x.numel())
    order = _memory_order(x)
    if order is not None:  # a permuted contiguous x: the entry at address offset + m is the m-th of x in memory order
        at = read - int(x.storage_offset())
        low, high = torch.aminmax(at) if at.numel() else (0, 0)
        if bool(low < 0) or bool(high >= x.numel()):
            return at, True
        of = torch.arange(x.numel(), dtype=kind).reshape(x.shape).permute(order).reshape(-1)  # memory order -> entry
        return of[at], False
    memory = torch.arange(entries, dtype=kind)
    mine = memory.as_strided(x.shape, x.stride(), x.storage_offset()).reshape(-1)  # any layout: each address's
    entry = torch.full_like(memory, -1)  # entry of x (-1: none)
    entry[mine] = torch.arange(mine.numel(), dtype=kind)
    positions = entry[read]
    return positions, bool((positions < 0).any())


def _kept_leading(x: torch.Tensor, out: torch.Tensor, positions: torch.Tensor) -> int:
    """How many leading axes an ``as_strided`` read keeps as they are: ``out[i]`` reads from ``x[i]`` what
    ``out[0]`` reads from ``x[0]`` (a batch of windows), so the entries read are ``x[i].reshape(-1)[positions[0]]``."""
    lead = 0
    while lead < min(x.dim(), out.dim()) - 1 and out.shape[lead] == x.shape[lead] and out.shape[lead] > 1:
        inner = math.prod(x.shape[lead + 1:])
        size = out.shape[:lead + 1]
        step = (torch.arange(math.prod(size), dtype=positions.dtype) * inner).reshape(size + (1,) * (out.dim() - lead - 1))
        first = positions[(0,) * (lead + 1)]
        if not bool((positions.reshape(size + positions.shape[lead + 1:]) == first + step).all()):
            break
        lead += 1
    return lead


def _kept_leading_linear(x: torch.Tensor, out: torch.Tensor) -> int:
    """:func:`_kept_leading` where the positions are linear in ``out``'s strides (``x`` contiguous: each position is
    the address read less ``x``'s offset; both hold entries), from the strides alone: ``positions[i, rest] -
    positions[0, rest]`` is then ``sum(i_d * out.stride(d))``, and the read keeps axes ``0..lead`` iff that is ``x``'s
    flat offset of ``i`` for every ``i``: iff ``out.stride(d)`` is ``prod(x.shape[d + 1:])`` along each such axis of
    more than one entry (one index at 1, the others 0; linear, so enough).  The same answer without an arange and a
    comparison per axis (~0.25 ms a read on longformer)."""
    lead = 0
    while lead < min(x.dim(), out.dim()) - 1 and out.shape[lead] == x.shape[lead] and out.shape[lead] > 1:
        if out.stride(lead) != math.prod(x.shape[lead + 1:]):
            break
        lead += 1
    return lead
