"""The numbers a model computes in Python from its inputs' shapes while it is recorded: :class:`SizeInt` (a size read
from a tensor, or an int computed from such sizes) and :class:`SizeFloat` (a non-integer result), each remembering the
expression of sizes it is; the recording that hands them out is :class:`ncd.trace.shapes.Shapes`.

>>> t = SizeInt(6, ("atom", None, 1))
>>> half = t // 2
>>> type(half).__name__, int(half), half.expr[0]
('SizeInt', 3, 'floordiv')
>>> type(1 / t).__name__
'SizeFloat'
"""

from __future__ import annotations

import operator
import sys
from typing import Any

__all__ = ["SizeInt", "SizeFloat", "Tree"]


def _recording() -> Any:
    """The recording now running (:attr:`ncd.trace.shapes.Shapes.active`), or None."""
    from ncd.trace.shapes import Shapes

    return Shapes.active


Tree = tuple[Any, ...]  # ("atom", node, dim) | ("num", value) | (operator name, tree, tree) | ("neg", tree)

_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
        "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow}


def _tree(value: Any) -> Tree | None:
    if isinstance(value, (SizeInt, SizeFloat)):
        return value.expr
    if type(value) in (int, float):
        return ("num", value)
    return None


def _binary(name: str, reflected: bool) -> Any:
    op = _OPS[name]

    def method(self: Any, other: Any) -> Any:
        theirs = _tree(other)
        if theirs is None:
            return NotImplemented
        mine = self.expr
        plain = self._plain()
        try:
            value = op(_plain(other), plain) if reflected else op(plain, _plain(other))
        except TypeError:
            return NotImplemented
        expr = (name, theirs, mine) if reflected else (name, mine, theirs)
        if type(value) is int:
            return SizeInt(value, expr)
        if type(value) is float:
            return SizeFloat(value, expr)
        return value

    return method


def _comparison(name: str) -> Any:
    op = getattr(operator, name)
    sign = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[name]

    def method(self: Any, other: Any) -> Any:
        theirs = _tree(other)
        if theirs is None:
            return NotImplemented
        result = op(self._plain(), _plain(other))
        _guard(self, sign, theirs, sys._getframe(1))
        return result

    return method


def _plain(value: Any) -> Any:
    if isinstance(value, SizeInt):
        return int.__int__(value)
    if isinstance(value, SizeFloat):
        return float.__float__(value)
    return value


#: the ids of the :class:`SizeInt` and :class:`SizeFloat` that exist (made and not yet freed) -> their expressions:
#: while there is none, no torch call can be handed one, and the mode that looks for them (:class:`_Calls`) can rest
#: (:meth:`Shapes.rest`).  The expression is kept here, not in an attribute: an int's attribute makes a dict per
#: number (~1 µs, a recording makes thousands: every shape read of a live tensor)
_ALIVE: dict[int, Tree] = {}


def _freed(self: Any) -> None:
    alive = _ALIVE
    if alive is not None:  # (None at interpreter exit)
        alive.pop(id(self), None)


class _Sized:
    """What :class:`SizeInt` and :class:`SizeFloat` share: a number of their ``_base`` type (``int``, ``float``) read
    from tensors' shapes or computed from such numbers, with the expression of sizes it is (kept in :data:`_ALIVE`)."""

    _base: Any  # int or float (the class whose number it is)

    def __new__(cls, value: Any, expr: Tree) -> Any:
        self = cls._base.__new__(cls, value)
        _ALIVE[id(self)] = expr
        return self

    @property
    def expr(self) -> Tree:
        """The expression of sizes it is."""
        return _ALIVE[id(self)]

    __del__ = _freed

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        # pickled as the plain number (a saved diagram keeps what it holds, not the trace that read it)
        return self._base, (self._plain(),)

    def __copy__(self) -> Any:  # a number: copies are itself, still followed
        return self

    def __deepcopy__(self, memo: object) -> Any:
        return self

    def _plain(self) -> Any:
        raise NotImplementedError

    def __neg__(self) -> Any:
        return type(self)(-self._plain(), ("neg", self.expr))

    def __pos__(self) -> Any:
        return self


class SizeInt(_Sized, int):  # (int's arithmetic is replaced below: _binary)
    """An int read from a tensor's shape (or computed from such ints), with the expression of sizes it is."""

    _base = int
    _plain = int.__int__

    def __divmod__(self, other: Any) -> Any:  # divmod(t, 2): both parts followed (int's own gives plain ints)
        return (self // other, self % other) if _tree(other) is not None else NotImplemented

    def __rdivmod__(self, other: Any) -> Any:
        return (other // self, other % self) if _tree(other) is not None else NotImplemented

    def __float__(self) -> float:  # math.sqrt(t), float(t): the model goes on with a number ncd cannot follow
        shapes = _recording()
        if shapes is not None and not shapes.calling:
            from ncd.trace.capture import user_line

            shapes.escaped.append((self.expr, user_line() or "?"))
        return float(self._plain())


class SizeFloat(_Sized, float):
    """A float computed from sizes read from tensors' shapes (``1 / b``, ``(t * m) ** -0.5``), with its expression."""

    _base = float
    _plain = float.__float__


for _name in _OPS:
    for _cls in (SizeInt, SizeFloat):
        setattr(_cls, f"__{_name}__", _binary(_name, False))
        setattr(_cls, f"__r{_name}__", _binary(_name, True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):  # a branch on a size (ncd.trace.size_guards): noted as a guard
    for _cls in (SizeInt, SizeFloat):
        setattr(_cls, f"__{_name}__", _comparison(_name))
SizeInt.__hash__ = int.__hash__  # type: ignore[method-assign]
SizeFloat.__hash__ = float.__hash__  # type: ignore[method-assign]

_SIZED = (SizeInt, SizeFloat)


def _noting(frame: Any) -> Any:
    """The recording, when what the model's own line (``frame``'s) did with a sized number is to be noted (not inside
    a recorded call or a kernel, not torch's or ncd's own code); else None."""
    shapes = _recording()
    if shapes is None or shapes.calling or shapes.kernels or _internal_caller(frame):
        return None
    return shapes


def _guard(self: Any, sign: str, theirs: Tree, frame: Any) -> None:
    """A comparison of ``self`` on the model's own line, noted as a guard (:mod:`ncd.trace.size_guards`)."""
    shapes = _noting(frame)
    if shapes is not None:
        from ncd.trace.capture import user_line
        from ncd.trace.size_guards import Compared

        shapes.escaped.append(Compared(self.expr, sign, theirs, user_line() or "?"))


def _held(self: Any, how: str, frame: Any) -> None:
    """``self`` turned by the model's own line (``frame``'s) into a plain number ncd does not follow (``int(t / 4)``,
    ``round(t / 4)``, ``t & 3``): noted as ``len(x)`` is (held: :func:`ncd.trace.shape_expressions.fixed_boxes`)."""
    shapes = _noting(frame)
    if shapes is not None:
        from ncd.trace.capture import user_line

        shapes.escaped.append((self.expr, user_line() or "?", how))


def _truth(self: Any) -> bool:
    """``if t - 6:``, ``bool(t % 4)``: a comparison with 0, noted as a guard as ``t != 0`` is."""
    _guard(self, "!=", ("num", 0), sys._getframe(1))
    return bool(self._plain() != 0)


def _shift(name: str, reflected: bool) -> Any:
    """``t >> k``, ``t << k`` by a plain ``k >= 0``: followed as ``t // 2**k``, ``t * 2**k`` (the same ints); any other
    shift and the bitwise ``&``, ``|``, ``^`` (``name``: the :mod:`operator` function's) are held at the traced value."""
    op = getattr(operator, name)

    def method(self: Any, other: Any) -> Any:
        if _tree(other) is None:
            return NotImplemented
        if not reflected and type(other) is int and other >= 0 and name in ("rshift", "lshift"):
            return self // (1 << other) if name == "rshift" else self * (1 << other)
        plain = self._plain()
        value = op(_plain(other), plain) if reflected else op(plain, _plain(other))
        _held(self, f"{name.rstrip('_')} = {value}", sys._getframe(1))
        return value

    return method


def _rounded(how: str, keep: bool) -> Any:
    """``int(t / 4)``, ``round(t / 4)``, ``math.floor(t / 4)`` of a :class:`SizeFloat` (``keep``: False) make a plain
    int: held at the traced value.  Of a :class:`SizeInt` (``keep``: True) the same int: itself, still followed (but
    ``round(t, -1)``, held)."""

    def method(self: Any, *digits: Any) -> Any:
        if keep and (not digits or digits[0] is None or digits[0] >= 0):
            return self
        value = getattr(self._base, f"__{how}__")(self._plain(), *digits)
        _held(self, f"{how}() = {value}", sys._getframe(1))
        return value

    return method


for _name, _op in (("rshift", "rshift"), ("lshift", "lshift"), ("and", "and_"), ("or", "or_"), ("xor", "xor")):
    setattr(SizeInt, f"__{_name}__", _shift(_op, False))
    setattr(SizeInt, f"__r{_name}__", _shift(_op, True))
for _how in ("trunc", "floor", "ceil", "round"):
    setattr(SizeInt, f"__{_how}__", _rounded(_how, True))
    setattr(SizeFloat, f"__{_how}__", _rounded(_how, False))
SizeFloat.__int__ = _rounded("int", False)  # type: ignore[method-assign]


def _int(self: Any) -> int:
    """``int(t)``: CPython makes a plain int of it whatever ``__int__`` returns (an int subclass is copied), which ncd
    does not follow: held at the traced value, as ``len(x)`` is.  (``operator.index(t)``, ``range(t)``, ``math.gcd(t,
    4)`` read an int subclass without asking it at all: ``math``'s and ``operator``'s are patched while recording,
    :mod:`ncd.trace.shapes`.)"""
    value = int.__int__(self)
    _held(self, f"int() = {value}", sys._getframe(1))
    return value


SizeInt.__int__ = _int  # type: ignore[method-assign]
SizeInt.__bool__ = SizeFloat.__bool__ = _truth  # type: ignore[method-assign]


def _internal_caller(frame: Any) -> bool:
    """Whether ``frame`` runs torch's or ncd's code (their own ``len(x)``), not the model's."""
    from ncd.trace.capture import _internal

    return _internal(frame.f_code.co_filename)
