"""In-place writes through views, recorded as the functional operations they stand for.

``x[:, 0] = 0``, ``cache[..., :d].copy_(k)``, ``attn[..., i, :i] = row`` write into a *view* of a
tensor (its root, ``view._base``); the model then reads the root.  The recorder keeps the
recording functional: the new value of the view is an operation of its own, and the root's new
value is the old root with that region replaced — slices of the old root around the written
region joined by ``cat`` (``select`` for a single index; a strided range is a range of rows of the dimension reshaped
to (rows, step) where the step divides it, else ``slice_scatter``),
so the diagram shows what the model computes and every operation has an importer rule.

Where the view sits in its root is read off strides and storage offsets (:func:`region`) and
checked exactly: the same region rebuilt from the root with ``select``/``slice``/``permute``
must have the view's sizes, strides and offset (the same memory, element for element).  A diagonal
(``x.diagonal(dim1=1, dim2=2).zero_()``) is no region: it is the main diagonal of one (the square its offset cuts,
:func:`diagonal_of`), whose new value is ``where(eye, diag_embed(new), old square)`` (:func:`put_diagonal`).  The
root's recorded new value is compared with the tensor the model wrote.  Anything else (a
region a reshape scrambled, a write that does not reproduce) is :class:`~ncd.trace.refusals.Unsupported`.

>>> import torch
>>> root = torch.zeros(4, 5, 6)
>>> region(root, root[1:3, 2].transpose(0, 1))
Region(specs=(('range', 1, 2, 1), ('index', 2, 1, 1), ('range', 0, 6, 1)), order=(2, 0))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Region", "region", "write_back", "cut", "diagonal_of", "put_diagonal", "viewed_again"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Region:
    """Where a view sits in its root: per root dimension ``("index", i, 1, 1)`` (one position, the dimension dropped)
    or ``("range", start, length, step)``; ``order``: the view's dimensions of size > 1 as the root dimensions they run
    along, in the view's order (its other dimensions are new, of size 1)."""

    specs: tuple[tuple[str, int, int, int], ...]
    order: tuple[int, ...]


def region(root: torch.Tensor, view: torch.Tensor) -> Region | None:
    """The region of ``root`` that ``view`` is, if ``select``/``slice``/``permute`` and new size-1 dimensions make it."""
    n = root.dim()
    strides, sizes = list(root.stride()), list(root.shape)
    plain = [int.__int__(s) for s in sizes]  # (compared only: no sized number made per comparison while recording)
    order: list[int] = []
    for j in range(view.dim()):
        size_j = int.__int__(view.size(j))
        if size_j == 1:
            continue
        stride, best = view.stride(j), None
        for d in range(n):
            sd = strides[d]
            if d in order or plain[d] < size_j or sd <= 0 or stride % sd:
                continue
            if (stride // sd) * (size_j - 1) >= plain[d]:
                continue
            if best is None or sd > strides[best]:
                best = d
        if best is None:
            return None
        order.append(best)
    offset = view.storage_offset() - root.storage_offset()
    start = [0] * n
    for d in sorted(range(n), key=lambda d: -strides[d]):
        if sizes[d] > 1 and strides[d] > 0:
            start[d] = min(offset // strides[d], sizes[d] - 1)
            offset -= start[d] * strides[d]
    if offset:
        return None
    specs: list[tuple[str, int, int, int]] = []
    runs = [k for k in range(view.dim()) if int.__int__(view.size(k)) != 1]  # the view's dimensions in ``order``
    for d in range(n):
        if d in order:
            j = runs[order.index(d)]
            length, step = view.size(j), view.stride(j) // strides[d]
            if int.__int__(start[d]) + step * (int.__int__(length) - 1) >= plain[d]:
                return None
            specs.append(("range", start[d], length, step))
        else:
            specs.append(("index", start[d], 1, 1))
    found = Region(tuple(specs), tuple(order))
    if not view.numel():
        return None
    if all(spec[1] >= 0 and spec[3] > 0 for spec in specs):
        # _cut(root, found) viewed as ``view``'s shape would start at root's offset plus each start times its stride
        # (the offset found above, to the element: the view's own) and step each kept dimension by its stride times
        # the step (the view's own stride, which it divides): only the address is left to compare (a view of another
        # dtype or memory), without running the operations while the model is recorded (~0.3 ms a region)
        at = root.data_ptr() + (view.storage_offset() - root.storage_offset()) * root.element_size()
        return found if at == view.data_ptr() else None
    rebuilt = _cut(root, found).reshape(view.shape)  # (a negative start wraps, a zero step raises: as torch does)
    if rebuilt is None or rebuilt.data_ptr() != view.data_ptr() or rebuilt.storage_offset() != view.storage_offset() \
            or any(a != b for a, b, s in zip(rebuilt.stride(), view.stride(), view.shape) if s != 1):
        return None
    return found


def _cut(root: torch.Tensor, found: Region) -> torch.Tensor:
    """The region of ``root``, its kept dimensions in the view's order (new size-1 dimensions left out)."""
    t = root
    for d in reversed(range(root.dim())):
        kind, s, length, step = found.specs[d]
        if kind == "index":
            t = t.select(d, s)
        else:
            t = t[(slice(None),) * d + (slice(s, s + step * (length - 1) + 1, step),)]
    kept = sorted(found.order)
    return t.permute([kept.index(d) for d in found.order])


#: ``emit(operator, *args, **kwargs)``: run and record one operation on recorded tensors, its result
Emit = Callable[..., torch.Tensor]


def cut(emit: Emit, base: torch.Tensor, found: Region, shape: tuple[int, ...]) -> torch.Tensor:
    """The region ``found`` of ``base`` as recorded operations (``select``, ``slice``, ``permute``, ``reshape``): a
    view read again after a write into the tensor it views."""
    t = base
    for d in reversed(range(base.dim())):
        kind, s, length, step = found.specs[d]
        if kind == "index":
            t = emit(aten.select.int, t, d, s)
        elif not (s == 0 and length == base.size(d) and step == 1):
            t = emit(aten.slice.Tensor, t, d, s, s + step * (length - 1) + 1, step)
    kept = sorted(found.order)
    perm = [kept.index(d) for d in found.order]
    if perm != list(range(len(perm))):
        t = emit(aten.permute.default, t, perm)
    if tuple(t.shape) != tuple(shape):
        t = emit(aten.reshape.default, t, list(shape))
    return t


#: ``known(operator, value, *args)``: record one operation on recorded tensors whose result, ``value``, is known
Known = Callable[..., torch.Tensor]


def write_back(emit: Emit, old: torch.Tensor, found: Region, new: torch.Tensor, known: Known | None = None,
               reuse: bool = False) -> torch.Tensor:
    """The root after its region (``found``) became ``new`` (of the view's shape): recorded operations on ``old``.

    With ``known``, the root's new value is made first, as one copy of ``old`` with the region copied in, and each
    ``cat`` joining the region's pieces is recorded with its part of that copy as its value (a view): not computed
    again at every level (longformer: a chunk of a (8, 2, 256, 513) score tensor written, 4 MB joined inside it and
    then the whole 8 MB, six times a layer); the tensor compared with the one the model wrote is the same.  ``reuse``:
    that copy is ``old`` itself, written (its values read by no one after: :meth:`ncd.trace.inplace.InPlace.freeable`;
    the pieces cut from it for the joins then hold the new entries)."""
    kept = [new.size(j) for j in range(new.dim()) if new.size(j) != 1]
    sizes = [new.size(j) for j in range(new.dim())]
    if len(kept) != len(sizes) or len(kept) != len(found.order):  # the view's new size-1 dimensions
        inner = [new.size(j) if new.size(j) != 1 else None for j in range(new.dim())]
        if len([s for s in inner if s is not None]) != len(found.order):
            raise ValueError("the view's dimensions do not match its region")
        new = emit(aten.reshape.default, new, [s for s in inner if s is not None])
    ranked = sorted(found.order)
    perm = [list(found.order).index(d) for d in ranked]
    if perm != list(range(len(perm))):
        new = emit(aten.permute.default, new, perm)
    into = None
    if known is not None and new.dtype == old.dtype and new.device == old.device and old.dim() == len(found.specs) \
            and not all(kind == "range" and at == 0 and length == old.size(d) and step == 1
                        for d, (kind, at, length, step) in enumerate(found.specs)):  # (all of ``old``: ``new`` it is)
        into = old if reuse and old.is_contiguous() else \
            aten.clone.default(old, memory_format=torch.contiguous_format)  # (as ``cat`` lays out its result)
        region_ = into
        for d in reversed(range(old.dim())):
            kind, s, length, step = found.specs[d]
            region_ = aten.select.int(region_, d, s) if kind == "index" else \
                aten.slice.Tensor(region_, d, s, s + step * (length - 1) + 1, step)
        if tuple(region_.shape) != tuple(new.shape):
            into = None
        else:
            aten.copy_.default(region_, new)
    region_put = _as_strided(old, found, new)
    if region_put is not None:  # one recorded operation (one box): the region of ``old`` replaced by ``new``
        if into is not None and known is not None:
            return known(aten.as_strided_scatter.default, into, old, new, *region_put)
        return emit(aten.as_strided_scatter.default, old, new, *region_put)
    return _put(emit, old, list(found.specs), new, into, known)


def _as_strided(old: torch.Tensor, found: Region, new: torch.Tensor) -> tuple[list[int], list[int], int] | None:
    """``as_strided_scatter``'s size, stride and offset for the region ``found`` of ``old`` written with ``new`` (its
    ranges in ``old``'s order): when ``old`` holds numbers laid out contiguously from its memory's start (a loop's
    write of its step's value, one entry along one dimension, is read as a stack by :mod:`ncd.trace.fold_writes`;
    into a tensor with size-1 dimensions it stays cut); else None (the region is cut and joined)."""
    if not old.is_floating_point() or new.dtype != old.dtype or new.device != old.device or old.storage_offset() \
            or not old.is_contiguous() or old.dim() != len(found.specs):
        return None
    shape = [int.__int__(s) for s in old.shape]
    cut = [(d, kind) for d, (kind, at, length, step) in enumerate(found.specs) if shape[d] > 1 and not (
        kind == "range" and at == 0 and length == shape[d] and step == 1)]
    if not cut or (len(cut) == 1 and cut[0][1] == "index" and 1 in shape):
        return None  # (a loop's step written through size-1 dims: the cut form, which fold_writes reads past them)
    stride = [int(s) for s in old.stride()]
    size, strides, offset = [], [], 0
    for d, (kind, at, length, step) in enumerate(found.specs):
        if at < 0 or step < 1:
            return None
        offset += int(at) * stride[d]
        if kind == "range":
            size.append(int(length))
            strides.append(int(step) * stride[d])
    if tuple(size) != tuple(int(s) for s in new.shape):
        return None
    return size, strides, offset


def _put(emit: Emit, base: torch.Tensor, specs: list[tuple[str, int, int, int]], new: torch.Tensor,
         into: torch.Tensor | None = None, known: Known | None = None) -> torch.Tensor:
    """``base`` with the region ``specs`` replaced by ``new``: the outermost cut dimension first, then inside it.
    ``into``: that result, made already (:func:`write_back`), recorded as the value of each ``cat`` (or None)."""
    for i, (kind, at, length, step) in enumerate(specs):
        size = base.size(i)
        if kind == "range" and at == 0 and length == size and step == 1:
            continue
        if kind == "index":
            sub = emit(aten.select.int, base, i, at)
            part = aten.select.int(into, i, at) if into is not None else None
            piece = emit(aten.unsqueeze.default, _put(emit, sub, specs[:i] + specs[i + 1:], new, part, known), i)
            end = at + 1
        elif step != 1 and size % step == 0:  # every step-th entry: a range of the rows of the dimension split in two
            shape = list(base.shape)
            rows = emit(aten.reshape.default, base, shape[:i] + [size // step, step] + shape[i + 1:])
            put = _put(emit, rows, specs[:i] + [("range", at // step, length, 1), ("index", at % step, 1, 1)]
                       + specs[i + 1:], new)
            return emit(aten.reshape.default, put, shape)
        else:
            end = at + step * (length - 1) + 1
            sub = emit(aten.slice.Tensor, base, i, at, end, step)
            part = aten.slice.Tensor(into, i, at, end, step) if into is not None else None
            inner = _put(emit, sub, specs[:i] + [("range", 0, length, 1)] + specs[i + 1:], new, part, known)
            if step != 1:
                return emit(aten.slice_scatter.default, base, inner, i, at, end, step)
            piece = inner
        pieces = ([emit(aten.slice.Tensor, base, i, 0, at)] if at > 0 else []) + [piece] \
            + ([emit(aten.slice.Tensor, base, i, end, size)] if end < size else [])
        if len(pieces) == 1:
            return piece
        if into is not None and known is not None and _joins(pieces, i, into):
            return known(aten.cat.default, into, pieces, i)
        return emit(aten.cat.default, pieces, i)
    return new


def _joins(pieces: list[torch.Tensor], dim: int, into: torch.Tensor) -> bool:
    """Whether ``cat(pieces, dim)`` has the shape and dtype of ``into`` (its value, made already)."""
    shape = list(into.shape)
    total = 0
    for p in pieces:
        if p.dtype != into.dtype or p.dim() != len(shape) \
                or any(p.size(d) != shape[d] for d in range(len(shape)) if d != dim):
            return False
        total += p.size(dim)
    return total == shape[dim]


def diagonal_of(candidates: list[torch.Tensor], view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
    """The first of ``candidates`` of which ``view`` is a diagonal (``t.diagonal(offset, dim1, dim2)``, the same memory
    element for element): that tensor, the square the offset cuts (``narrow`` of ``dim1`` and ``dim2``, a region of
    it) and the two dims."""
    if view.dim() < 1 or view.numel() < 2:
        return None
    for t in candidates:
        if t.dim() != view.dim() + 1 or t.dtype != view.dtype or t.untyped_storage().data_ptr() \
                != view.untyped_storage().data_ptr():
            continue
        for d1 in range(t.dim()):
            for d2 in range(t.dim()):
                if d1 == d2 or t.stride(d1) + t.stride(d2) != view.stride(-1):
                    continue
                first = (view.storage_offset() - t.storage_offset())
                for offset in {first // t.stride(d2) if t.stride(d2) else 0, -(first // t.stride(d1)) if t.stride(d1)
                               else 0, 0}:
                    diagonal = t.diagonal(offset, d1, d2)
                    if diagonal.shape == view.shape and diagonal.stride() == view.stride() \
                            and diagonal.storage_offset() == view.storage_offset():
                        rows, cols = (0, offset) if offset >= 0 else (-offset, 0)
                        side = view.size(-1)
                        return t, t.narrow(d1, rows, side).narrow(d2, cols, side), d1, d2
    return None


def put_diagonal(emit: Emit, square: torch.Tensor, new: torch.Tensor, d1: int, d2: int) -> torch.Tensor:
    """``square`` with its main diagonal over dims ``d1``, ``d2`` replaced by ``new`` (that diagonal's shape: the
    diagonal last), as recorded operations: ``where(eye, diag_embed(new), square)``, the identity matrix a constant."""
    side = square.size(d1)
    shape = [1] * square.dim()
    shape[d1] = shape[d2] = side
    eye = torch.eye(side, dtype=torch.bool, device=square.device)
    eye = (eye if d1 < d2 else eye.t()).reshape(shape)
    embedded = emit(aten.diag_embed.default, new, 0, d1, d2)
    return emit(aten.where.self, eye, embedded, square)


def viewed_again(node: Any, root: torch.Tensor, own: set[int]) -> torch.Tensor | None:
    """A recorded ``node``'s value (a view operation's result, of the shape and dtype it has) made again from the recorded
    value of its one tensor argument when that is in memory the model never sees (its id in ``own``: it keeps its
    entries when ``root`` is written): a view, instead of a copy of its own
    (:meth:`ncd.trace.inplace.InPlace.freeze`); else None."""
    from ncd.trace.capture import Node, refs

    source = node.args[0] if node.kind == "call" and node.args and getattr(node.target, "is_view", False) else None
    if not isinstance(source, Node) or id(source.value) not in own or not isinstance(source.value, torch.Tensor) \
            or source.value.device != root.device or refs((node.args[1:], node.kwargs)):
        return None
    try:
        with torch._C._DisablePythonDispatcher():
            value = node.target(source.value, *node.args[1:], **node.kwargs)
    except Exception:  # noqa: BLE001 - copied instead
        return None
    old = node.value
    if not isinstance(value, torch.Tensor) or value.shape != old.shape or value.dtype != old.dtype:
        return None
    return value
