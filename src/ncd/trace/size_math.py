"""The functions of ``math`` and ``operator`` that read a :class:`ncd.trace.sized.SizeInt` without asking it (CPython
takes an int subclass's value in C: ``math.log2(t)``, ``math.gcd(t, 4)``, ``operator.index(t)``), patched while a
model is recorded so that what they make of a size is held (refused at other sizes where the model is not at hand to
check them), never a plain number that silently keeps the traced size.  The logarithms are handed ``float(t)``
(noted as ``math.sqrt(t)`` is); the integer functions note each size they are given as ``int(t)`` is.

They are patched where the model can reach them: on the modules (``math.log2``), and in the globals of the model's code
that reads sizes (``from math import log2`` bound the function itself at import time), each restored on exit.

>>> import math
>>> with Patched() as patched:
...     math.gcd is _ORIGINAL["gcd"], math.gcd(6, 4)
(False, 2)
>>> math.gcd is _ORIGINAL["gcd"]
True
"""

from __future__ import annotations

import functools
import math
import operator
import sys
from typing import Any

from ncd.trace.sized import SizeInt, _held

__all__: list[str] = []

#: the logarithms (a float of a size: handed ``float(t)``, noted by :meth:`SizeInt.__float__`)
_FLOATED = ("log", "log2", "log10", "log1p")
#: the integer functions of ``math`` (their result held at the traced sizes)
_INTEGER = ("gcd", "lcm", "isqrt", "comb", "perm", "factorial")
_ORIGINAL: dict[str, Any] = {**{name: getattr(math, name) for name in (*_FLOATED, *_INTEGER)}, "index": operator.index}


def _floated(function: Any) -> Any:
    """``function`` given ``float(t)`` for each :class:`SizeInt` ``t`` (its ``__float__`` notes it)."""

    @functools.wraps(function)
    def floated(*args: Any) -> Any:
        return function(*(float(a) if type(a) is SizeInt else a for a in args))

    return floated


def _holding(function: Any) -> Any:
    """``function`` noting each :class:`SizeInt` it is given as held (its result is a plain int)."""

    @functools.wraps(function)
    def holding(*args: Any) -> Any:
        value = function(*args)
        if any(type(a) is SizeInt for a in args):
            frame = sys._getframe(1)
            for a in args:
                if type(a) is SizeInt:
                    _held(a, f"{function.__name__}() = {value}", frame)
        return value

    return holding


_PATCHED = {name: (_floated if name in _FLOATED else _holding)(function) for name, function in _ORIGINAL.items()}
_BY_ID = {id(function): (function, _PATCHED[name]) for name, function in _ORIGINAL.items()}


class Patched:
    """While entered: ``math``'s and ``operator``'s functions patched, and in the globals :meth:`reach`-ed."""

    def __init__(self) -> None:
        self._seen: set[int] = set()  # the ids of the globals reached
        self._classes: set[int] = set()  # the ids of the classes reached
        self._bound: list[tuple[dict[str, Any], str, Any, Any]] = []  # (globals, name, original, patched)

    def __enter__(self) -> Patched:
        for name, patched in _PATCHED.items():
            setattr(operator if name == "index" else math, name, patched)
        return self

    def reach(self, scope: dict[str, Any]) -> None:
        """The names of the globals ``scope`` (once each) bound to one of the functions patched, patched too."""
        if id(scope) in self._seen:
            return
        self._seen.add(id(scope))
        for name, value in list(scope.items()):
            pair = _BY_ID.get(id(value))
            if pair is not None and value is pair[0]:
                scope[name] = pair[1]
                self._bound.append((scope, name, *pair))

    def reach_class(self, cls: type) -> None:
        """The globals of ``cls``'s module and of its ``forward``'s (once per class): before the module runs (a name
        is looked up before the arguments it is called with are read: ``log2(x.size(1))``)."""
        if id(cls) in self._classes:
            return
        self._classes.add(id(cls))
        module = sys.modules.get(cls.__module__)
        if module is not None:
            self.reach(vars(module))
        scope = getattr(getattr(cls, "forward", None), "__globals__", None)
        if isinstance(scope, dict):
            self.reach(scope)

    def __exit__(self, *exc: Any) -> None:
        for name, function in _ORIGINAL.items():
            setattr(operator if name == "index" else math, name, function)
        for scope, name, original, patched in reversed(self._bound):
            if scope.get(name) is patched:
                scope[name] = original
        self._bound.clear()
