"""The model's own lines testing ``a is b`` of the copies of one tensor passed twice (:func:`_identity_watched`).

The trace runs the model on a separate copy of each input, so a test ``a is b`` of two inputs given one tensor took the
branch for two different tensors; ``is`` is no operator anything can intercept, so a tracer reads the two operands'
values (:func:`_named`) at the lines whose code tests two names, attributes or constant subscripts of them
(:func:`_identity_tests`, read off the bytecode), and the trace names those lines.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__: list[str] = []


#: the instructions loading a name, whose value a tracer reads off the frame (:func:`_identity_watched`)
_NAME_LOADS = {"LOAD_FAST": "local", "LOAD_DEREF": "local", "LOAD_CLOSURE": "local", "LOAD_NAME": "name",
               "LOAD_GLOBAL": "global"}


#: an operand of an ``is`` test :func:`_identity_watched` reads: a name (how it is loaded), then attributes and
#: constant subscripts (``self.cache``, ``xs[0]``)
_Operand = tuple[tuple[str, Any], ...]


def _operand(ins: list[Any], end: int) -> tuple[_Operand, int] | None:
    """The operand whose instructions end at ``ins[end]`` (a name, then attributes and constant subscripts), and the
    index of its first instruction; None for anything else (a call, arithmetic: a new object each time)."""
    steps: list[tuple[str, Any]] = []
    k = end
    while k >= 0:
        op = ins[k].opname
        if op in _NAME_LOADS:
            return ((_NAME_LOADS[op], str(ins[k].argval)), *reversed(steps)), k
        if op == "LOAD_ATTR":
            steps.append(("attr", str(ins[k].argval)))
            k -= 1
        elif op == "BINARY_SUBSCR" and k >= 1 and ins[k - 1].opname == "LOAD_CONST" \
                and isinstance(ins[k - 1].argval, (int, str)):
            steps.append(("item", ins[k - 1].argval))
            k -= 2
        else:
            return None
    return None


def _identity_tests(code: Any) -> dict[int, list[tuple[_Operand, _Operand]]]:
    """The ``x is y`` (and ``is not``) tests in ``code`` of two names, attributes or constant subscripts of them:
    line -> the two operands.  A test of a constant (``mask is None``) or of a computed value is not one."""
    import dis

    found: dict[int, list[tuple[_Operand, _Operand]]] = {}
    ins = list(dis.get_instructions(code))
    for k, test in enumerate(ins):
        if test.opname != "IS_OP":
            continue
        right = _operand(ins, k - 1)
        left = _operand(ins, right[1] - 1) if right is not None else None
        if left is None or right is None:
            continue
        for at in {i.positions.lineno for i in ins[left[1]:k + 1] if i.positions is not None and i.positions.lineno}:
            found.setdefault(at, []).append((left[0], right[0]))
    return found


def _named(frame: Any, operand: _Operand) -> Any:
    """The value ``operand`` has in ``frame``, or None: attributes only from the object's own ``__dict__`` and subscripts
    only of lists, tuples and dicts (nothing of the model's runs: no property, no ``__getitem__`` of its own)."""
    import builtins

    (how, name), *steps = operand
    if how != "global" and name in frame.f_locals:
        value = frame.f_locals[name]
    elif how == "local":
        return None
    else:
        value = frame.f_globals.get(name, getattr(builtins, name, None))
    for kind, key in steps:
        if kind == "attr":
            value = getattr(value, "__dict__", {}).get(key)
        elif type(value) in (list, tuple) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        elif type(value) is dict:
            value = value.get(key)
        else:
            return None
    return value


@contextlib.contextmanager
def _identity_watched(groups: list[tuple[list[str], list[Any]]], found: dict[str, str], alike: bool = False) -> Any:
    """While the model runs on its inputs: the lines of the model's own code testing ``a is b`` where ``a`` and ``b``
    are the copies the model runs on of one tensor passed twice (``groups``: the inputs' names and the tensors run on),
    into ``found`` (line -> the inputs).

    The trace runs the model on a separate copy of each input (the diagram takes them as separate inputs: ``labels``
    given the ``input_ids`` tensor stays an input of its own), so such a test took the branch for two different
    tensors, and the diagram holds that branch: called with one tensor twice, the model computes the other.  ``is`` is
    no operator anything can intercept: a tracer reads the two names' values at the lines of the frames whose code
    tests two names (the model's own files only: torch's ``query is key`` fast paths compute the same values).

    ``alike``: the model runs on stand-ins of the tensors in ``groups`` (``torch.export``'s fake tensors), so a test of
    two different tensors of one group's shape and dtype is counted (it may be of the two copies)."""
    import os
    import sys

    import torch

    from ncd.trace.capture import _internal

    if not groups:
        yield
        return
    twin = {id(t): k for k, (_, runs) in enumerate(groups) for t in runs}
    kinds = {(tuple(runs[0].shape), runs[0].dtype): k for k, (_, runs) in enumerate(groups)} if alike else {}

    def group(value: Any) -> int | None:
        if not alike:
            return twin.get(id(value))
        if not isinstance(value, torch.Tensor):
            return None
        try:
            return kinds.get((tuple(int(n) for n in value.shape), value.dtype))
        except Exception:  # noqa: BLE001 - a size that is no number: not one of the inputs' copies
            return None
    tests: dict[int, tuple[Any, dict[int, list[tuple[_Operand, _Operand]]]]] = {}
    before: Any = sys.gettrace()  # a tracer already set (a debugger, coverage): still called

    def tested(code: Any) -> dict[int, list[tuple[_Operand, _Operand]]]:
        known = tests.get(id(code))
        if known is None or known[0] is not code:
            known = tests[id(code)] = (code, {} if _internal(code.co_filename) else _identity_tests(code))
        return known[1]

    def watch(frame: Any, event: str, arg: Any) -> Any:
        outer = before(frame, event, arg) if before is not None else None
        lines = tested(frame.f_code)
        if not lines:
            return outer

        def local(frame: Any, event: str, arg: Any) -> Any:
            nonlocal outer
            if outer is not None:
                outer = outer(frame, event, arg)
            if event == "line" and frame.f_lineno in lines:
                for a, b in lines[frame.f_lineno]:
                    x, y = _named(frame, a), _named(frame, b)
                    k = group(x)
                    if k is not None and x is not y and group(y) == k:
                        at = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
                        found.setdefault(at, " and ".join(groups[k][0]))
            return local

        return local

    sys.settrace(watch)
    try:
        yield
    finally:
        sys.settrace(before)
