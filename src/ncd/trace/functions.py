"""Custom ``torch.autograd.Function`` calls in a recording: one opaque box each, whose lowering calls the Function.

The recorder sees ATen calls, so a Function's ``forward`` would be recorded as the operations it runs, and the lowered
module's gradient would be those operations' gradient, not the Function's ``backward`` (a straight-through ``round``
would have gradient 0, a gradient reversal ``+g``): training the lowered model would be silently wrong.  While
recording, ``Function.apply`` is wrapped: the forward runs unrecorded and the call is recorded as one operator,
``torch.ops.ncd_function.<Class>`` (registered here with ``torch.library``), whose kernel sits above autograd
(``CompositeImplicitAutograd``) and calls ``<Class>.apply`` itself, so the lowered module's forward and backward are the
Function's.  Whether a Function's ``backward`` is its forward's autograd gradient cannot be told cheaply, so every one is
a box, except those in :data:`EXACT` (their backward recomputes the forward: ``torch.utils.checkpoint``).  The operator
lives in this process: a diagram saved with such a box and loaded elsewhere refuses to lower (no such operator).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["NAMESPACE", "EXACT", "function_op", "functions_boxed", "functions_refused"]

NAMESPACE = "ncd_function"
#: Functions whose ``backward`` is the autograd gradient of their ``forward`` by construction (they recompute it):
#: recorded as the operations they run, as before
EXACT = frozenset({"torch.utils.checkpoint.CheckpointFunction"})

_LIB: Any = None
#: ``operator.overload`` -> (the Function, the arguments' structure, their non-tensor values, whether it returns a tuple)
_OPS: dict[str, tuple[type, Any, tuple[Any, ...], bool]] = {}


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    try:
        return len(a) == len(b) and all(x is y or (type(x) is type(y) and bool(x == y)) for x, y in zip(a, b))
    except Exception:  # noqa: BLE001 - values that do not compare: not the same call
        return False


def function_op(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], many: bool) -> Any:
    """The operator standing for ``cls.apply(*args, **kwargs)``: its tensors as a list argument, its other arguments
    held by the operator (one operator per Function and distinct constants), its result one tensor or a list."""
    global _LIB
    leaves, spec = tree_flatten((args, kwargs))
    consts = tuple(None if isinstance(v, torch.Tensor) else v for v in leaves)
    at = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
    base = re.sub(r"\W", "_", cls.__name__).strip("_") or "Function"
    if not base[0].isalpha():
        base = "F" + base
    k = 0
    while True:  # one operator per class name (its label), one overload per Function and constants
        overload = "default" if k == 0 else f"v{k}"
        held = _OPS.get(f"{base}.{overload}")
        if held is None:
            break
        if held[0] is cls and held[1] == spec and held[3] == many and _same(held[2], consts):
            return getattr(getattr(getattr(torch.ops, NAMESPACE), base), overload)
        k += 1
    if _LIB is None:
        _LIB = torch.library.Library(NAMESPACE, "FRAGMENT")  # type: ignore[no-untyped-call]

    def kernel(xs: list[torch.Tensor]) -> Any:
        values = list(consts)
        for i, x in zip(at, xs):
            values[i] = x
        a, kw = tree_unflatten(values, spec)
        out = cls.apply(*a, **kw)  # type: ignore[attr-defined]
        return list(out) if many else out

    name = base if overload == "default" else f"{base}.{overload}"
    _LIB.define(f"{name}(Tensor[] xs) -> {'Tensor[]' if many else 'Tensor'}")
    _LIB.impl(name, kernel, "CompositeImplicitAutograd")
    _OPS[f"{base}.{overload}"] = (cls, spec, consts, many)
    return getattr(getattr(getattr(torch.ops, NAMESPACE), base), overload)


@contextlib.contextmanager
def functions_boxed(rec: Any) -> Iterator[None]:
    """While recording: ``Function.apply`` runs the forward unrecorded and hands the call to ``rec.function``."""
    from torch.autograd.function import Function

    saved = Function.__dict__.get("apply")
    if not isinstance(saved, classmethod):  # another torch: calls are recorded as their operations
        yield
        return
    original = saved.__func__

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if rec.inside or qualified(cls) in EXACT:
            return original(cls, *args, **kwargs)
        rec.inside += 1
        try:
            out = original(cls, *args, **kwargs)  # its own operations: not recorded
        finally:
            rec.inside -= 1
        return rec.function(cls, args, kwargs, out)

    Function.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        Function.apply = saved  # type: ignore[method-assign, assignment]


@contextlib.contextmanager
def functions_refused(model: torch.nn.Module) -> Iterator[None]:
    """While ``torch.export`` (or ``make_fx``) captures: a custom ``Function`` it would inline as its forward's operations
    (its backward lost) makes the capture raise :class:`~ncd.TraceError` naming it."""
    from torch.autograd.function import Function

    from ncd.errors import TraceError
    from ncd.trace.capture import user_line

    saved = Function.__dict__.get("apply")
    if not isinstance(saved, classmethod):
        yield
        return
    original = saved.__func__
    seen: dict[str, str] = {}
    depth = [0]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if not depth[0] and qualified(cls) not in EXACT:
            seen.setdefault(cls.__qualname__, user_line() or "?")
        depth[0] += 1
        try:
            return original(cls, *args, **kwargs)
        finally:
            depth[0] -= 1

    Function.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        Function.apply = saved  # type: ignore[method-assign, assignment]
    if seen:
        where = ", ".join(f"{name} at {line}" for name, line in seen.items())
        raise TraceError(f"cannot trace {type(model).__name__} with torch.export: it applies custom autograd.Functions"
                         f" ({where}), which export records as their forward's operations, losing their backward;"
                         " the default capture (capture='dispatch') draws each as a box calling the Function, unless"
                         " the model also reads input values into Python")
