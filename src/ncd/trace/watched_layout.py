"""A model reading its tensors' memory layout (``x.is_contiguous()``, ``x.stride()``, ``x.storage_offset()``,
``x.data_ptr()``) while it is captured: checked, and warned about where the answer changes what it computes.

No capture records the read: the diagram computes the branch the traced inputs' layout takes, and the lowered module
computes it whatever the layout of the tensors it is given.  ``x * 2 if x.is_contiguous() else x`` traced on a
contiguous input gave twice the model's output on a transposed one, with no word; so did ``if x.stride(-1) == 1``,
``if x.storage_offset() == 0``, ``if x.data_ptr() % 64 == 0`` and ``x.is_contiguous(memory_format=torch.channels_last)``
(the strided copy is not channels-last either: only a copy laid out in another order of its dimensions tells).  The
common reading, ``if not x.is_contiguous(): x = x.contiguous()``, computes the same values either way; so where the
model's own code reads a layout (``is_contiguous`` here; a stride, an offset or an address of a value of the inputs as
:mod:`ncd.trace.shapes` and :mod:`ncd.trace.reads` hand it out, :func:`noted`), the model is run once more on the
example inputs and on copies laid out otherwise (the same values: strided and one entry into their memory where they
were contiguous, contiguous where they were not; then in another order of their dimensions), and only outputs that
differ are warned about, naming the reads and lines.

>>> import torch
>>> x = torch.arange(6.0).reshape(2, 3)
>>> y = _relaid(x)
>>> torch.equal(x, y), y.is_contiguous(), y.storage_offset(), _relaid(y).is_contiguous()
(True, False, 1, True)
>>> z = _reordered(x)
>>> torch.equal(x, z), z.stride()
(True, (1, 2))
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any

import torch

from ncd.errors import user_stacklevel

__all__: list[str] = []


#: while a capture is watched: the layout reads of the model's own code, ``(".stride()", "file.py:12")`` (None: none is)
_READ: list[tuple[str, str]] | None = None


def noted(method: str, line: str) -> None:
    """A read of a tensor's layout by the model's own ``line`` (``stride()`` of a value of the inputs), checked after
    the capture by :func:`_layout_watched` when one is watched."""
    if _READ is not None and (method, line) not in _READ:
        _READ.append((method, line))


def laid_as_given(tensor: torch.Tensor, node_of: Any) -> bool:
    """Whether a read of ``tensor``'s layout (a stride, an offset, an address) is checked on inputs laid out otherwise:
    it is an input, a view of one, or a value computed from one elementwise or by views only (``(x * 2).stride()``,
    laid out as that input is: a pointwise kernel keeps its input's strides) (``node_of``: a tensor -> its recorded
    node).  A value another kernel computed is laid out as that kernel makes it, most often whatever its inputs' layout
    (a matmul's, a copy's; a view of one transposed by the model itself: Longformer's chunked strides), and its reads
    cost no runs (each is a call of the model: they made Longformer's trace 1.6x slower)."""
    return any(whole is not None and _laid_as_input(node_of(whole)) for whole in (tensor, tensor._base))


#: how many recorded calls :func:`_laid_as_input` looks back through, at most
_LOOKED = 64


def _laid_as_input(node: Any) -> bool:
    """Whether the recorded ``node`` is an input, or reaches one through pointwise calls and views alone."""
    from ncd.trace.capture import Node

    pointwise = torch.Tag.pointwise
    todo: list[Any] = [node]
    seen: set[int] = set()
    while todo and len(seen) < _LOOKED:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        kind = getattr(node, "kind", None)
        if kind == "input":
            return True
        target = getattr(node, "target", None)
        if kind == "call" and (pointwise in getattr(target, "tags", ()) or getattr(target, "is_view", False)):
            todo.extend(a for a in node.args if isinstance(a, Node) and a.live)
    return False


@contextlib.contextmanager
def _layout_watched(model: torch.nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """While the model is captured: the lines of its own code reading ``Tensor.is_contiguous`` (any memory format),
    and those :func:`noted`; after a capture that saw one, the model run on the inputs and on copies laid out
    otherwise (:func:`_relaid`, :func:`_reordered`), and a ``RuntimeWarning`` where the outputs differ.  Entered
    inside :func:`~ncd.trace.watched._state_kept` (the runs change nothing kept)."""
    global _READ
    from ncd.trace.capture import _internal, user_line

    cls = torch.Tensor
    held = cls.__dict__.get("is_contiguous")
    read = torch._C.TensorBase.is_contiguous
    lines: list[tuple[str, str]] = []

    def is_contiguous(self: torch.Tensor, *args: Any, **kw: Any) -> bool:
        if not _internal(sys._getframe(1).f_code.co_filename):
            noted(".is_contiguous()", user_line() or "?")
        return bool(read(self, *args, **kw))

    outer, _READ = _READ, lines
    cls.is_contiguous = is_contiguous  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        _READ = outer
        if held is None:
            del cls.is_contiguous
        else:
            cls.is_contiguous = held  # type: ignore[method-assign]
    if lines and not _same_relaid(model, inputs, kwargs):
        reads = list(dict.fromkeys(method for method, _ in lines))
        at = list(dict.fromkeys(line for _, line in lines))
        warnings.warn(f"ncd.trace({type(model).__name__}): the model reads a tensor's memory layout"
                      f" ({', '.join(reads)}) at {', '.join(at[:4])}, and computes otherwise on the same inputs laid"
                      " out otherwise in memory: the diagram computes what it computes on inputs laid out as traced"
                      " (contiguous or not, their strides and offsets), and the lowered module does so whatever the"
                      " layout it is given; call it on inputs laid out as traced", RuntimeWarning,
                      stacklevel=user_stacklevel())


def _copied(value: Any) -> Any:
    """A copy of a plain tensor in its own layout (the model may write into its inputs); anything else as it is."""
    return value.clone() if type(value) is torch.Tensor else value


def _relaid(value: Any) -> Any:
    """A copy of a plain tensor of two or more entries laid out otherwise, with the same values: a strided copy (the
    second of each pair of entries of a buffer: its offset 1) of a contiguous one, a contiguous copy of any other;
    anything else as :func:`_copied`."""
    if type(value) is not torch.Tensor or value.numel() < 2 or value.layout != torch.strided \
            or value.device.type == "meta":
        return _copied(value)
    if not torch._C.TensorBase.is_contiguous(value):
        return value.contiguous()
    buffer = value.new_empty((*value.shape, 2))  # (the second entry of each pair: one entry into its memory, so its
    buffer[..., 1] = value  # offset and its address's alignment differ too)
    return buffer[..., 1]


def _reordered(value: Any) -> Any:
    """A copy of a plain tensor of two or more dimensions of more than one entry laid out in another order of its
    dimensions (channels-last for four or five, else the reverse order), with the same values; else :func:`_copied`."""
    if type(value) is not torch.Tensor or value.layout != torch.strided or value.device.type == "meta" \
            or sum(n > 1 for n in value.shape) < 2:
        return _copied(value)
    orders = [torch.channels_last] if value.dim() == 4 else [torch.channels_last_3d] if value.dim() == 5 else []
    for order in orders:
        out = value.contiguous(memory_format=order)
        if out.stride() != value.stride():
            return out
    back = tuple(reversed(range(value.dim())))
    out = value.permute(back).contiguous().permute(back)
    return out if out.stride() != value.stride() else value.contiguous()


def _same_relaid(model: torch.nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the model's outputs on the inputs equal those on the inputs laid out otherwise (each run without
    gradients, from one random state and the parameters and buffers the capture left, put back after it); a run that
    raises, or inputs with nothing to lay out otherwise, prove no difference (the model refusing a layout is said by
    the model)."""
    tree = torch.utils._pytree
    given = (tuple(inputs), dict(kwargs))
    if not any(type(t) is torch.Tensor and t.numel() >= 2 and t.layout == torch.strided and t.device.type != "meta"
               for t in tree.tree_leaves(given)):
        return True
    # its parameters and buffers as the capture's run left them, put back after each run (a buffer written in place,
    # a step counter, would make the second run differ from the first, and tracing runs the model once)
    state = [t for t in (*model.parameters(), *model.buffers()) if type(t) in (torch.Tensor, torch.nn.Parameter)]
    with torch.no_grad():
        saved = [t.detach().clone() for t in state]
    outs: list[list[Any]] = []
    for lay in (_copied, _relaid, _reordered):
        args, kw = tree.tree_map(lay, given)
        if outs and all(not isinstance(t, torch.Tensor) or t.stride() == u.stride() and t.storage_offset() == 0
                        for t, u in zip(tree.tree_leaves((args, kw)), tree.tree_leaves(given))):
            continue  # (laid out as given: nothing else to tell)
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                outs.append(tree.tree_leaves(model(*args, **kw)))
        except Exception:  # noqa: BLE001 - the model's own refusal of an input (a .view of a strided copy)
            if not outs:
                return True
        finally:
            with torch.no_grad():
                for t, was in zip(state, saved):
                    if t.shape == was.shape and t.dtype == was.dtype:
                        t.copy_(was)
    return all(len(outs[0]) == len(out) and all(_equal(a, b) for a, b in zip(outs[0], out)) for out in outs[1:])


def _equal(a: Any, b: Any) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        try:
            return bool(a is b or a == b)
        except Exception:  # noqa: BLE001 - values that do not compare: taken as the same (nothing drawn of them)
            return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():  # (a strided copy may take another kernel: summed in another order)
        return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True))
    return bool(torch.equal(a, b))
