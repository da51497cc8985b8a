"""A model reading its tensors' memory layout (``x.is_contiguous()``) while it is captured: checked, and warned about
where the answer changes what it computes.

No capture records the read: the diagram computes the branch the traced inputs' layout takes, and the lowered module
computes it whatever the layout of the tensors it is given.  ``x * 2 if x.is_contiguous() else x`` traced on a
contiguous input gave twice the model's output on a transposed one, with no word.  The common reading,
``if not x.is_contiguous(): x = x.contiguous()``, computes the same values either way; so where the model's own code
reads a layout, the model is run once more on the example inputs and once on copies laid out otherwise (the same
values, strided where they were contiguous and contiguous where they were not), and only outputs that differ are
warned about, naming the lines.

>>> import torch
>>> x = torch.arange(6.0).reshape(2, 3)
>>> y = _relaid(x)
>>> torch.equal(x, y), y.is_contiguous(), _relaid(y).is_contiguous()
(True, False, True)
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any

import torch

from ncd.errors import user_stacklevel

__all__: list[str] = []


@contextlib.contextmanager
def _layout_watched(model: torch.nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """While the model is captured: the lines of its own code reading ``Tensor.is_contiguous``; after a capture that
    saw one, the model run on the inputs and on copies laid out otherwise (:func:`_relaid`), and a ``RuntimeWarning``
    where the outputs differ.  Entered inside :func:`~ncd.trace.watched._state_kept` (the runs change nothing kept)."""
    from ncd.trace.capture import _internal, user_line

    cls = torch.Tensor
    held = cls.__dict__.get("is_contiguous")
    read = torch._C.TensorBase.is_contiguous
    lines: list[str] = []

    def is_contiguous(self: torch.Tensor, *args: Any, **kw: Any) -> bool:
        if not _internal(sys._getframe(1).f_code.co_filename):
            where = user_line() or "?"
            if where not in lines:
                lines.append(where)
        return bool(read(self, *args, **kw))

    cls.is_contiguous = is_contiguous  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        if held is None:
            del cls.is_contiguous
        else:
            cls.is_contiguous = held  # type: ignore[method-assign]
    if lines and not _same_relaid(model, inputs, kwargs):
        warnings.warn(f"ncd.trace({type(model).__name__}): the model reads a tensor's memory layout (.is_contiguous())"
                      f" at {', '.join(lines[:4])}, and computes otherwise on the same inputs laid out otherwise in"
                      " memory: the diagram computes what it computes on inputs laid out as traced (contiguous or"
                      " not), and the lowered module does so whatever the layout it is given; call it on inputs laid"
                      " out as traced", RuntimeWarning, stacklevel=user_stacklevel())


def _copied(value: Any) -> Any:
    """A copy of a plain tensor in its own layout (the model may write into its inputs); anything else as it is."""
    return value.clone() if type(value) is torch.Tensor else value


def _relaid(value: Any) -> Any:
    """A copy of a plain tensor of two or more entries laid out otherwise, with the same values: a strided copy (every
    other entry of a buffer) of a contiguous one, a contiguous copy of any other; anything else as :func:`_copied`."""
    if type(value) is not torch.Tensor or value.numel() < 2 or value.layout != torch.strided \
            or value.device.type == "meta":
        return _copied(value)
    if not torch._C.TensorBase.is_contiguous(value):
        return value.contiguous()
    buffer = value.new_empty((*value.shape, 2))
    buffer[..., 0] = value
    return buffer[..., 0]


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
    outs = []
    for lay in (_copied, _relaid):
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                args, kw = tree.tree_map(lay, given)
                torch.manual_seed(0)
                outs.append(tree.tree_leaves(model(*args, **kw)))
        except Exception:  # noqa: BLE001 - the model's own refusal of an input (a .view of a strided copy)
            return True
        finally:
            with torch.no_grad():
                for t, was in zip(state, saved):
                    if t.shape == was.shape and t.dtype == was.dtype:
                        t.copy_(was)
    return len(outs[0]) == len(outs[1]) and all(_equal(a, b) for a, b in zip(*outs))


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
