"""Custom ``torch.autograd.Function`` calls in a recording: one opaque box each, whose lowering calls the Function.

The recorder sees ATen calls, so a Function's ``forward`` would be recorded as the operations it runs, and the lowered
module's gradient would be those operations' gradient, not the Function's ``backward`` (a straight-through ``round``
would have gradient 0, a gradient reversal ``+g``): training the lowered model would be silently wrong.  While
recording, ``Function.apply`` is wrapped: the forward runs unrecorded and the call is recorded as one operator,
``torch.ops.ncd_function.<Class>`` (registered here with ``torch.library``), whose kernel sits above autograd
(``CompositeImplicitAutograd``) and calls ``<Class>.apply`` itself, so the lowered module's forward and backward are the
Function's.  Whether a Function's ``backward`` is its forward's autograd gradient cannot be told cheaply, so every one is
a box, except those in :data:`EXACT` (their backward recomputes the forward: ``torch.utils.checkpoint``) and those
:func:`proven` on the traced values (their backward's vector-Jacobian products equal autograd's through their forward):
those are recorded as their forward's operations.  The operator
lives in this process: a pickled :class:`~ncd.trace.TracedDiagram` carries each box's Function (by module and
qualified name, as pickle names a class) and its other arguments (:class:`Boxed`), and defines the operator again
where it is lowered (:func:`registered`); a plain diagram read back refuses to lower (no such operator).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ncd.errors import TraceError
from ncd.trace.functions_proof import proven
from ncd.trace.refusals import _NeedValues
from ncd.trace.tensors import _same as _same_values

__all__ = ["NAMESPACE", "EXACT", "Boxed", "FunctionRefused", "boxed_of",
           "registered", "function_op", "functions_boxed", "functions_refused", "proven"]

NAMESPACE = "ncd_function"
#: Functions whose ``backward`` is the autograd gradient of their ``forward`` by construction (they recompute it):
#: recorded as the operations they run, as before
EXACT = frozenset({"torch.utils.checkpoint.CheckpointFunction"})

_LIB: Any = None
#: ``operator.overload`` -> (the Function, the arguments' structure, their non-tensor values, whether it returns a tuple,
#: where its tensors are among the arguments)
_OPS: dict[str, tuple[type, Any, tuple[Any, ...], bool, tuple[int, ...]]] = {}


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _kind(x: Any) -> type:
    """``x``'s type, a number read off a shape taken as the plain number it is pickled as."""
    from ncd.trace.shapes import SizeFloat, SizeInt

    kind = type(x)
    return int if kind is SizeInt else float if kind is SizeFloat else kind


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    try:
        return len(a) == len(b) and all(x is y or (_kind(x) is _kind(y) and bool(x == y)) for x, y in zip(a, b))
    except Exception:  # noqa: BLE001 - values that do not compare: not the same call
        return False


def function_op(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], many: bool) -> Any:
    """The operator standing for ``cls.apply(*args, **kwargs)``: its tensors as a list argument, its other arguments
    held by the operator (one operator per Function and distinct constants), its result one tensor or a list."""
    leaves, spec = tree_flatten((args, kwargs))
    consts = tuple(None if isinstance(v, torch.Tensor) else v for v in leaves)
    at = tuple(i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor))
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
    _define(f"{base}.{overload}", cls, spec, consts, many, at)
    return getattr(getattr(getattr(torch.ops, NAMESPACE), base), overload)


def _define(key: str, cls: type, spec: Any, consts: tuple[Any, ...], many: bool, at: tuple[int, ...]) -> None:
    """Register ``ncd_function.<key>`` (``<Class>.<overload>``) as the operator applying ``cls`` to its tensors (the
    arguments at ``at``), with the other arguments ``consts`` in the structure ``spec``."""
    global _LIB
    if _LIB is None:
        _LIB = torch.library.Library(NAMESPACE, "FRAGMENT")  # type: ignore[no-untyped-call]
    def kernel(xs: list[torch.Tensor]) -> Any:
        values = list(consts)
        for i, x in zip(at, xs):
            values[i] = x
        a, kw = tree_unflatten(values, spec)
        out = cls.apply(*a, **kw)  # type: ignore[attr-defined]
        return list(out) if many else out

    base, overload = key.split(".")
    name = base if overload == "default" else key
    _LIB.define(f"{name}(Tensor[] xs) -> {'Tensor[]' if many else 'Tensor'}")
    _LIB.impl(name, kernel, "CompositeImplicitAutograd")
    _OPS[key] = (cls, spec, consts, many, at)


class Boxed:
    """A boxed Function's operator as a diagram carries it: ``ncd_function.<key>`` applies ``cls`` (found by
    ``where``, its module and qualified name, in a diagram read back) to its tensors, with the other arguments
    ``consts`` in the structure ``spec``; :func:`registered` defines it again in a process that has not."""

    __slots__ = ("key", "cls", "where", "spec", "consts", "many", "at")

    def __init__(self, key: str, cls: type | None, where: tuple[str, str], spec: Any, consts: tuple[Any, ...] | None,
                 many: bool, at: tuple[int, ...]) -> None:
        self.key, self.cls, self.where, self.spec, self.consts, self.many, self.at = key, cls, where, spec, consts, many, at

    def __reduce__(self) -> Any:
        import pickle

        from torch.utils._pytree import treespec_dumps

        try:  # a constant argument that does not pickle: the diagram still does, and lowering it elsewhere says why
            spec, consts = treespec_dumps(self.spec), self.consts
            pickle.dumps(consts)
        except Exception:  # noqa: BLE001 - any failure to pickle
            spec, consts = None, None
        return (_read, (self.key, self.where, spec, consts, self.many, self.at))


def _read(key: str, where: tuple[str, str], spec: str | None, consts: tuple[Any, ...] | None, many: bool,
          at: tuple[int, ...]) -> Boxed:
    """A :class:`Boxed` read back: its class is found when the diagram is lowered (:func:`registered`)."""
    from torch.utils._pytree import treespec_loads

    return Boxed(key, None, where, None if spec is None else treespec_loads(spec), consts, many, at)


def boxed_of(opaque: Iterable[tuple[str, int]]) -> tuple[Boxed, ...]:
    """The operators of the custom Functions among the opaque boxes ``(name, count)`` of a recording."""
    out = []
    for name, _ in opaque:
        key = name.removeprefix(f"{NAMESPACE}.")
        if key != name and key in _OPS:
            cls, spec, consts, many, at = _OPS[key]
            out.append(Boxed(key, cls, (cls.__module__, cls.__qualname__), spec, consts, many, at))
    return tuple(out)


def registered(boxed: tuple[Boxed, ...], model: str) -> None:
    """Define in this process the operators of a diagram's custom Function boxes (a diagram pickled in another
    process); raise :class:`~ncd.errors.TraceError` when one cannot be, or when its name stands for another Function
    here (the lowered module would call that one)."""
    from ncd.errors import TraceError

    for b in boxed:
        what = f"{b.where[0]}.{b.where[1]}"
        held = _OPS.get(b.key)
        cls = b.cls
        if cls is None and held is not None and (held[0].__module__, held[0].__qualname__) == b.where:
            cls = held[0]  # pickled and read back in this process (a class defined inside a function too)
        if cls is None:
            cls = _found(b.where)
        if cls is None or b.spec is None or b.consts is None:
            why = ("its class cannot be found in this process (a class defined inside a function, or in another"
                   " script's __main__): import it, or trace the model again here") if cls is None else \
                ("its constant arguments could not be pickled with the diagram: trace the model again here")
            raise TraceError(f"cannot lower {model}: its box {NAMESPACE}.{b.key} calls the custom autograd.Function"
                             f" {what}, and {why}")
        if held is None:
            _define(b.key, cls, b.spec, b.consts, b.many, b.at)
        elif not (held[0] is cls and held[1] == b.spec and held[3] == b.many and _same(held[2], b.consts)):
            raise TraceError(f"cannot lower {model}: its box {NAMESPACE}.{b.key} calls the custom autograd.Function"
                             f" {what}, but in this process that operator was defined for"
                             f" {held[0].__module__}.{held[0].__qualname__} with other arguments (a diagram read back"
                             " after another trace): trace the model again here")


def _found(where: tuple[str, str]) -> type | None:
    """The Function class named by its module and qualified name, if importable (as pickle finds a class)."""
    import importlib

    module, qualname = where
    if "<locals>" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - not importable here: said by the caller
        return None
    from torch.autograd.function import Function

    return found if isinstance(found, type) and issubclass(found, Function) else None


@contextlib.contextmanager
def functions_boxed(rec: Any) -> Iterator[None]:
    """While recording: ``Function.apply`` runs the forward unrecorded and hands the call to ``rec.function``."""
    from torch.autograd.function import Function

    saved = Function.__dict__.get("apply")
    if not isinstance(saved, classmethod):  # another torch: calls are recorded as their operations
        yield
        return
    original = saved.__func__
    #: the Functions whose proof failed in this recording, with their other arguments and their tensors' dtypes: a
    #: later call of one of them is boxed without a proof (its backward is not its forward's gradient somewhere, so
    #: the box is right at every call; the proof costs two runs of each side: recurrent_gemma 2 × 7 ms)
    unproven: list[tuple[type, Any, tuple[Any, ...]]] = []

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if rec.inside or qualified(cls) in EXACT:
            return original(cls, *args, **kwargs)
        if rec.meta:  # its proof needs values (and its forward may not run on meta): record on real values
            raise _NeedValues(f"the custom autograd.Function {cls.__qualname__} is proven on values")
        rec.plain = False  # (recorded otherwise on meta: not switched to it, :mod:`ncd.trace.switch`)
        if rec.pending:  # writes through views compared before its proof and forward read (or write into) them
            rec.check_writes()
        leaves, spec = tree_flatten((args, kwargs))
        held = tuple(v.dtype if isinstance(v, torch.Tensor) else v for v in leaves)
        exact = False
        if not any(c is cls and s == spec and _same(h, held) for c, s, h in unproven):
            rec.inside += 1  # the proof's operations are not recorded
            try:
                with _unrecorded():
                    exact = proven(cls, args, kwargs, list(rec.root.parameters()))
            finally:
                rec.inside -= 1
            if not exact:
                unproven.append((cls, spec, held))
        if exact:
            return original(cls, *args, **kwargs)  # recorded as its forward's operations
        given = [t for t in leaves if isinstance(t, torch.Tensor)]
        versions = [t._version for t in given]
        # the tensors held by the objects it is given (a key/value cache: Reformer's layers, called with use_cache,
        # fill the one passed to its _ReversibleFunction): a box holding the object would run on what the trace left
        objects = [v for v in leaves if not isinstance(v, (torch.Tensor, torch.nn.Module)) and not callable(v)
                   and isinstance(getattr(v, "__dict__", None), dict)]
        before = _held_state(objects)
        # the values of the constants it is given (no parameter's, no input's): the box holds them, and a write through
        # ``.data`` bumps no version (w.data.mul_(0) in its forward: the box would call it on the written values)
        consts = [] if rec.meta else [(t, t.clone()) for t in given if id(t) not in rec.state
                                      and t.device.type != "meta" and not getattr(rec.by_id.get(id(t)), "live", False)]
        rng = torch.random.get_rng_state()
        rec.inside += 1
        try:
            with _unrecorded():
                out = original(cls, *args, **kwargs)  # its own operations: not recorded
        finally:
            rec.inside -= 1
        if not torch.equal(rng, torch.random.get_rng_state()):  # it drew random numbers (torch.distributions'
            _drew(rec, cls, given)  # Dirichlet(...).sample()): held without a word where its inputs were constants
        if any(t._version != v for t, v in zip(given, versions)) or any(not _same_values(t, c) for t, c in consts):
            from ncd.errors import TraceError
            from ncd.trace.capture import user_line

            raise TraceError(f"cannot trace the custom autograd.Function {cls.__qualname__} at {user_line() or '?'}: its"
                             " forward writes into its inputs in place, which a box calling it would not show (the"
                             " model's later reads of them would be drawn unchanged)")
        if objects and _held_state(objects) != before:
            from ncd.trace.capture import user_line

            raise FunctionRefused(f"cannot trace the custom autograd.Function {cls.__qualname__} at {user_line() or '?'}: its"
                             f" forward writes into an object it is given ({type(objects[0]).__name__}, ...: a cache?),"
                             " which a box calling it would hold as the trace left it and write again at every call;"
                             " call the model without it (use_cache=False)")
        return rec.function(cls, args, kwargs, out)

    Function.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        Function.apply = saved  # type: ignore[method-assign, assignment]


def _drew(rec: Any, cls: type, given: list[torch.Tensor]) -> None:
    """Note that a boxed Function drew random numbers, as the recorder notes torch's draws: the diagram holds its
    numbers where none of its inputs depends on the model's inputs, else its box draws anew at every call."""
    from ncd.trace.capture import user_line

    live = any(getattr(rec.by_id.get(id(t)), "live", False) for t in given)
    (rec.drawing if live else rec.random).setdefault(user_line() or "?", cls.__qualname__)


class FunctionRefused(TraceError):
    """A custom Function no box can stand for, refused while recording (not retried by another capture)."""


def _held_state(objects: list[Any]) -> list[tuple[int, int]]:
    """The tensors ``objects`` hold (:func:`ncd.trace.capture.held_tensors`), each as its identity and version."""
    from ncd.trace.capture import held_tensors

    return [(id(t), t._version) for t in held_tensors(objects)] if objects else []


@contextlib.contextmanager
def _unrecorded() -> Iterator[None]:
    """Torch calls that reach none of the recording's machinery: no torch-function mode (the size-following one), no
    pre-dispatch mode (the recorder) and no Python dispatcher.  A proof's operations and a boxed Function's own forward
    are not recorded (the recorder would hand each straight back to torch, ``_Recording.inside``), so they run at
    torch's speed instead of through three Python layers per operator (SEW-D's XSoftmax proofs: 20 -> 7 ms)."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.PreDispatch)
    with torch._C.DisableTorchFunction(), torch._C._DisablePythonDispatcher(), torch._C._ExcludeDispatchKeyGuard(keys):
        yield


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
