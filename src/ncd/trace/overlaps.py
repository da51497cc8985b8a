"""A write that reads the memory it writes: ``y /= y[:, :1]``, ``y[:, 1:] = y[:, :-1]``, ``y[:, 1:] += y[:, :-1]``.

Torch refuses such a call where it can tell (contiguous tensors: "some elements of the input tensor and the written-to
tensor refer to a single memory location"), but not where the operand or the written tensor is a strided view: it
then computes entry by entry in the order its kernel visits them, each entry reading what the entries before it wrote
(``y /= y[:, :1]`` divides the first column by itself first, so the others are divided by 1; ``y[:, 1:] = y[:, :-1]``
copies the first column into every one).  The diagram, as any functional program, reads the operands before the
write, so on such a call it computes something else than the model, silently.

:func:`read_first` runs the call on copies of what it writes and of the operands sharing its memory (the diagram's
reading) before the model's call runs; the recorder compares the model's result with it afterwards and warns at the
model's line where they differ (:func:`ncd.trace.record_warnings.warn_recorded`).  A call whose results agree on the traced
values (``y[:, :-1] = y[:, 1:]``, a shift the kernel's order reads before it writes) is left as it is.  On the ``meta``
device no value is known: a write of a value of the inputs with such an operand is recorded again on real values.
A call the recording cannot take at all (``torch.add(y[:, :-1], 1, out=y[:, 1:])``: an ``out=`` write has no functional
version, so ``torch.export`` records it, reading the operands first) is run as the model runs it on a copy of the memory
it writes (:func:`in_model_order`), and the line is warned about on the export path where the two differ.  A model
captured by ``torch.export`` itself (``capture="export"``, or a recording that fell back to it) is run once more, eagerly,
with only its writes watched (:func:`watched`): the same comparison, the same warning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ncd.trace.aliases import _memory_of, by_memory
from ncd.trace.tensors import _one_memory
from ncd.trace.undo import Undo, writes_of

__all__ = ["read_first", "differing", "overlaps", "in_model_order", "watched"]


def _root(t: torch.Tensor) -> torch.Tensor:
    return t if t._base is None else t._base


def _span(t: torch.Tensor) -> tuple[int | torch.SymInt, int | torch.SymInt]:
    """The bytes of its memory ``t`` reads, as a range (its first and one past its last byte)."""
    size = t.element_size()
    low = high = t.storage_offset() * size
    for n, s in zip(t.shape, t.stride()):
        if n > 1:
            step = (n - 1) * s * size
            if step < 0:
                low += step
            else:
                high += step
    return low, high + size


def overlaps(a: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``a`` reads memory ``w`` holds, other than as ``w`` itself (entry for entry the same: an elementwise
    ``w.mul_(w)`` reads each entry before it writes it).  Meta tensors: views of one tensor whose ranges meet."""
    if a is w or not a.numel() or not w.numel() or a.layout != torch.strided or w.layout != torch.strided:
        return False
    if a.device.type == "meta" or w.device.type == "meta":
        if a.device != w.device or _root(a) is not _root(w):
            return False
        if a.shape == w.shape and a.stride() == w.stride() and a.storage_offset() == w.storage_offset():
            return False
    else:
        if a.device != w.device or a.untyped_storage().data_ptr() != w.untyped_storage().data_ptr():
            return False
        if _one_memory(a, w) or (a.dtype == w.dtype and a.data_ptr() == w.data_ptr() and a.shape == w.shape
                                 and a.stride() == w.stride()):
            return False
    (lo, hi), (lo2, hi2) = _span(a), _span(w)
    return lo < hi2 and lo2 < hi


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors among a call's arguments (an ATen call's: tensors, or lists and tuples of them)."""
    out = []
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(t for t in v if isinstance(t, torch.Tensor))
    return out


def operands(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The tensors the call writes and the other tensors it reads that share their memory (none: ``[]``, ``[]``)."""
    written = [w for w, _ in writes_of(func, args, kwargs)]
    if not written:
        return [], []
    shared = [t for t in _tensors(args, kwargs) if not any(t is w for w in written)
              and any(overlaps(t, w) for w in written)]
    return (written, shared) if shared else ([], [])


def read_first(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each tensor the call writes with what the call gives it reading its operands before writing (on copies: the
    diagram's reading), where an operand shares its memory (none: ``[]``); run before the call."""
    written, shared = operands(func, args, kwargs)
    if not shared:
        return []
    copies = {id(t): t.clone() for t in written + shared}
    a, kw = torch.utils._pytree.tree_map(
        lambda v: copies.get(id(v), v) if isinstance(v, torch.Tensor) else v, (tuple(args), dict(kwargs)))
    try:
        with torch._C._DisablePythonDispatcher():
            func(*a, **kw)
    except Exception:  # noqa: BLE001 - the call does not run so (the model's own call decides)
        return []
    return [(w, copies[id(w)]) for w in written]


def differing(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether the model's written tensors (after its call) differ from the diagram's reading of the call."""
    from ncd.trace.tensors import _same

    return any(not _same(w.detach(), first) for w, first in pairs)


def in_model_order(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                   pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether the model's call, run on a copy of the memory it writes (its views and operands sharing it rebuilt on
    the copy, so the kernel reads what it wrote as the model's does), gives the written tensors other values than
    :func:`read_first`'s reading ``pairs``: for a call run elsewhere (``torch.export``, which reads the operands first)
    without running it on the model's tensors."""
    from ncd.trace.tensors import _same

    if not pairs:
        return False
    memory = {w.untyped_storage().data_ptr() for w, _ in pairs}
    copies: dict[int, torch.UntypedStorage] = {}
    remade: dict[int, torch.Tensor] = {}

    def on_copy(v: Any) -> Any:
        if not isinstance(v, torch.Tensor) or v.layout != torch.strided or v.untyped_storage().data_ptr() not in memory:
            return v
        if id(v) not in remade:
            storage = v.untyped_storage()
            copy = copies.setdefault(storage.data_ptr(), storage.clone())  # type: ignore[no-untyped-call]
            remade[id(v)] = torch.empty(0, dtype=v.dtype, device=v.device).set_(copy, v.storage_offset(), v.shape,
                                                                                  v.stride())
        return remade[id(v)]

    try:
        with torch._C._DisablePythonDispatcher(), torch.no_grad():
            a, kw = torch.utils._pytree.tree_map(on_copy, (tuple(args), dict(kwargs)))
            func(*a, **kw)
    except Exception:  # noqa: BLE001 - the call does not run so: nothing to tell
        return False
    return any(not _same(remade[id(w)], first) for w, first in pairs if id(w) in remade)


class _Watch(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """The model's eager run with its writes watched (:func:`watched`): each write's result compared with the
    diagram's reading of it, the model's parameters and buffers it writes kept (put back after)."""

    def __init__(self, undo: Undo, state: dict[int, list[torch.Tensor]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.undo, self.state = undo, state
        self.found: dict[str, str] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        written = writes_of(func, args, kwargs)
        if not written:
            return func(*args, **kwargs)
        for w, _ in written:  # (a view written under a dispatch mode has a ``_base`` of its own wrapping: by memory)
            for held in self.state.get(_memory_of(w), ()):
                self.undo.keep(held)
        pairs = read_first(func, args, kwargs)
        out = func(*args, **kwargs)
        if pairs and differing(pairs):
            from ncd.trace.capture import user_line

            self.found.setdefault(user_line() or "?", func.overloadpacket.__name__)
        return out


def watched(model: torch.nn.Module, flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> dict[str, str]:
    """The model's lines (``line -> operator``) writing memory the same call reads where its result differs from the
    diagram's reading (:func:`read_first`, :func:`differing`): ``flat`` (the model, :class:`ncd.trace.capture._Flat`)
    run once eagerly on copies of the inputs, only its writes watched, and the model's state put back after
    (:class:`ncd.trace.undo.Undo`); what ``torch.export``, which reads every operand first, cannot tell.  A model that
    does not run so again (it raises at a second call, under ``no_grad``: ``torch.export``'s own mode) is warned about:
    its writes are not checked."""
    from ncd.trace.capture import copied

    watch = _Watch(Undo(model), by_memory(model))  # the model's parameters and buffers by their memory
    clones: dict[int, torch.Tensor] = {}

    def clone(v: Any) -> Any:  # (one tensor passed twice: one copy, passed twice)
        if isinstance(v, torch.Tensor):
            if id(v) not in clones:
                clones[id(v)] = v.detach().clone()
            return clones[id(v)]
        return v

    try:
        run_args, run_kwargs = torch.utils._pytree.tree_map(clone, (tuple(copied(list(args))),
                                                                    dict(zip(kwargs, copied(list(kwargs.values()))))))
        with torch.random.fork_rng(devices=[]), torch.no_grad(), watch:
            flat(*run_args, **run_kwargs)
    except Exception as error:  # noqa: BLE001 - the model does not run eagerly so: said, not checked
        import warnings

        from ncd.errors import user_stacklevel
        from ncd.trace.capture import _first_line

        warnings.warn(f"ncd.trace({type(model).__name__}): the model's writes in place are not checked for reading"
                      " memory they write (y[:, 1:] = y[:, :-1], which torch computes entry by entry and the diagram"
                      " reads before the write): the model run once more eagerly, under no_grad as torch.export runs it,"
                      f" raised {type(error).__name__}: {_first_line(error)}", RuntimeWarning,
                      stacklevel=user_stacklevel())
        return {}
    finally:
        watch.undo.undo()
    return watch.found
