"""The recorder's fast path through torch's pre-dispatch machinery, while it records.

torch calls a pre-dispatch mode through general machinery made for any stack of modes: a handler made per operator
call, the mode popped and pushed around it with a closure and counts of the stack, the arguments flattened to list
tensor subclasses, a ``torch._dynamo`` guard.  While the recorder (a ``Recorder`` class of
:mod:`ncd.trace.record`) is the only mode, these context managers do the same writes in a few steps and hand every
call to its recording; any other state goes to torch's own functions, and everything is put back on exit.  Without
the torch internals they replace (another torch), nothing is replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__: list[str] = []


@contextlib.contextmanager
def _straight_to(recorder: Any) -> Iterator[None]:
    """While recording: an operator torch hands to a ``recorder`` mode reaches its recording directly.

    torch calls a pre-dispatch mode through ``torch._library.utils.handle_dispatch_mode``, which flattens the arguments
    to list the tensor subclasses among them (the ``types`` the recorder never reads) and wraps the call in a
    ``torch._dynamo`` guard: about a tenth of a small model's trace.  The mode's own calls skip both; any other mode is
    handed on unchanged.  Without that function (another torch), nothing is replaced."""
    utils = torch._library.utils
    handle = getattr(utils, "handle_dispatch_mode", None)
    if handle is None:
        yield
        return

    def straight(curr_mode: Any, op_overload: Any, *args: Any, **kwargs: Any) -> Any:
        if type(curr_mode) is recorder:
            return curr_mode._recording.call(op_overload, args, kwargs)
        return handle(curr_mode, op_overload, *args, **kwargs)

    utils.handle_dispatch_mode = straight
    try:
        with _recorder_alone(recorder):
            yield
    finally:
        utils.handle_dispatch_mode = handle


@contextlib.contextmanager
def _recorder_alone(recorder: Any) -> Iterator[None]:
    """While recording: torch's pre-dispatch mode stack, popped and pushed around every operator, in a few steps when
    the ``recorder`` is the only mode on it.

    Around each call torch pops the mode off its pre-dispatch stack and pushes it back (``torch._ops``: a closure, two
    counts of the stack as lists, three imports and the class checks, per operator).  With the recorder alone on the
    stack these do the same writes (its slot, and the ``PreDispatch`` key included exactly while a mode is on the
    stack); any other state goes to torch's own functions.  Without those functions (another torch), nothing is
    replaced."""
    ops = torch._ops
    names = ("_pop_mode_from_pre_dispatch", "_set_mode_pre_dispatch", "_len_torch_dispatch_stack_pre_dispatch")
    saved: list[Any] = [getattr(ops, name, None) for name in names]
    state: Any = getattr(ops, "_mode_stack_state_for_pre_dispatch", None)
    modes = getattr(state, "_ModeStackStateForPreDispatch__infra_modes", None)
    if any(f is None for f in saved) or type(modes) is not list or len(modes) != 2 or \
            not hasattr(state, "_schema_check_mode"):
        yield
        return
    pop, push, count = saved
    key = torch._C.DispatchKey.PreDispatch
    include = torch._C._dispatch_tls_set_dispatch_key_included

    def popped() -> Any:
        mode = modes[0]
        if type(mode) is recorder and modes[1] is None and state._schema_check_mode is None \
                and ops._mode_stack_state_for_pre_dispatch is state:
            modes[0] = None
            include(key, False)
            return mode
        return pop()

    def pushed(mode: Any) -> None:
        if type(mode) is recorder and modes[0] is None and modes[1] is None and state._schema_check_mode is None \
                and ops._mode_stack_state_for_pre_dispatch is state:
            modes[0] = mode
            include(key, True)
            return
        push(mode)

    def counted() -> int:
        if ops._mode_stack_state_for_pre_dispatch is not state:
            return int(count())
        return (modes[0] is not None) + (modes[1] is not None) + (state._schema_check_mode is not None)

    ops._pop_mode_from_pre_dispatch, ops._set_mode_pre_dispatch = popped, pushed
    ops._len_torch_dispatch_stack_pre_dispatch = counted
    try:
        with _handlers_kept(recorder, popped, pushed, (modes, state)):
            yield
    finally:
        for name, f in zip(names, saved):
            setattr(ops, name, f)


@contextlib.contextmanager
def _handlers_kept(recorder: Any, popped: Any, pushed: Any, stack: Any = None) -> Iterator[None]:
    """While recording: each operator's pre-dispatch handler, made at its first call, is kept in its dispatch cache.

    torch makes a new handler at every call at the ``PreDispatch`` key (``OpOverload._get_dispatch``: a closure and a
    context manager made per call, not cached, since the modes on the stack may change).  While the ``recorder`` alone
    is on the stack, the kept handler does what torch's does: pop the mode, hand the call to its recording, push the
    mode back; in any other state it asks torch's ``_get_dispatch`` (the cache entry set aside meanwhile).  Every kept
    handler leaves the caches on exit.  Without ``_get_dispatch`` or ``_op_dk`` (another torch), nothing is kept."""
    overload: Any = torch._ops.OpOverload
    original = overload.__dict__.get("_get_dispatch")
    if original is None:
        yield
        return
    key = torch._C.DispatchKey.PreDispatch
    excluded = torch._C._dispatch_tls_is_dispatch_key_excluded
    python = torch._C.DispatchKey.Python
    ops: Any = torch._ops
    kept: list[Any] = []

    #: an operator's id -> it and torch's answer at the key while no mode's handler is due (:func:`torch_handler`)
    resolved: dict[int, tuple[Any, Any]] = {}

    def torch_handler(op: Any, cache: dict[Any, Any], handler: Any, args: Any, kwargs: Any) -> Any:
        # with no mode on the pre-dispatch stack, or the Python key excluded (``torch.tensor``'s own empty and copy),
        # torch's answer is the operator's kernel (``resolve_key``: its registrations, fixed while recording), not
        # cached by torch at this key (~40 µs a call: SEW-D's 10 ``torch.tensor`` a forward, 20 lookups): asked once
        static = excluded(python) or not ops._len_torch_dispatch_stack_pre_dispatch()
        held = resolved.get(id(op)) if static else None
        if held is not None and held[0] is op:
            found = held[1]
        else:
            del cache[key]  # (torch's _get_dispatch refuses a key already cached)
            try:
                found = original(op, key)
            finally:
                cache[key] = handler
            if static:
                resolved[id(op)] = (op, found)
        if isinstance(found, torch._C.DispatchKey):
            return op._op_dk(found, *args, **kwargs)
        return found(*args, **kwargs)

    # the pre-dispatch mode stack's two slots and its state (:func:`_recorder_alone`): with the recorder alone on it, the
    # handler does what ``popped()`` and ``pushed()`` do (their writes) without calling them (~1 µs a call)
    modes: Any = stack[0] if stack is not None else [None, None]  # (a recorder never in this one: torch's path)
    state: Any = stack[1] if stack is not None else None
    include = torch._C._dispatch_tls_set_dispatch_key_included

    def made(op: Any) -> Any:
        cache = op._dispatch_cache

        def handler(*args: Any, **kwargs: Any) -> Any:
            mode: Any = modes[0]
            if type(mode) is recorder and modes[1] is None and state._schema_check_mode is None \
                    and ops._mode_stack_state_for_pre_dispatch is state and not excluded(python):
                modes[0] = None
                include(key, False)
                try:
                    return mode._recording.call(op, args, kwargs)
                finally:
                    if modes[0] is None and modes[1] is None and state._schema_check_mode is None \
                            and ops._mode_stack_state_for_pre_dispatch is state:
                        modes[0] = mode
                        include(key, True)
                    else:
                        pushed(mode)
            mode = popped() if not excluded(python) and ops._len_torch_dispatch_stack_pre_dispatch() else None
            if type(mode) is not recorder:
                if mode is not None:
                    pushed(mode)
                return torch_handler(op, cache, handler, args, kwargs)
            try:
                return mode._recording.call(op, args, kwargs)
            finally:
                pushed(mode)

        return handler

    def get_dispatch(op: Any, k: Any) -> Any:
        if k == key and not isinstance(op, torch._ops.TorchBindOpOverload) and hasattr(op, "_op_dk"):
            handler = op._dispatch_cache[key] = made(op)
            kept.append(op)
            return handler
        return original(op, k)

    overload._get_dispatch = get_dispatch
    try:
        yield
    finally:
        overload._get_dispatch = original
        for op in kept:
            if op._dispatch_cache.get(key) is not None:
                del op._dispatch_cache[key]
