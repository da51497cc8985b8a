"""Axis sizes: integers or symbolic expressions (sympy), parsed without ``eval``.

Sizes are sympy expressions over positive symbols.  Text such as ``"x/s"``,
``"2*c"`` or ``"512*2**(1-i)"`` is parsed by a small recursive-descent parser, so
untrusted text (JSON files, CLI arguments) never reaches Python's ``eval``.

>>> size("x/s")
x/s
>>> size("512*2**(1-i)").subs(symbol("i"), 1)
512
>>> size_text(size("k^-0.5"))
'1/sqrt(k)'
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Mapping
from typing import Any, Union

import sympy

from ncd.errors import SizeError
from ncd.ir.size_parser import MAX_BITS, is_name, parse_size, plainly_positive, symbol

Size = sympy.Expr
SizeLike = Union[int, str, sympy.Expr]

__all__ = ["Size", "SizeLike", "symbol", "size", "size_text", "exact_text", "sizes_equal", "is_zero", "simplified",
           "evaluate", "substitute", "at_least", "maximum", "SymbolicSize", "symbolic_sizes", "symbolic_lowering", "symbolic_text",
           "is_name", "plainly_positive", "whole", "as_whole", "size_sum", "size_lt", "size_le", "size_gt", "size_ge",
           "same_size"]


def size(value: SizeLike) -> sympy.Expr:
    """Coerce an ``int``, a size text or a sympy expression to a size expression."""
    if isinstance(value, bool):
        raise SizeError(f"a size must be a whole number or an expression, not {value!r}")
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, float):
        if value.is_integer():
            return sympy.Integer(int(value))
        return sympy.nsimplify(value, rational=True)
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, sympy.Basic):
        return value
    raise SizeError(f"a size must be a whole number or an expression, not {type(value).__name__} {value!r}")


def size_text(value: sympy.Expr) -> str:
    """The text form of a size, readable by :func:`size`: a whole number or a symbol as sympy prints it, without its
    printer (a trace reads the text of new numbers, ~20 µs a first print)."""
    if isinstance(value, sympy.Integer):
        return str(value.p)
    if type(value) is sympy.Symbol:
        return str(value.name)
    return _text(value) if isinstance(value, sympy.Basic) else str(value)


@functools.lru_cache(maxsize=8192)
def _text(value: sympy.Expr) -> str:
    return str(value)  # sympy's printer is slow, and a model repeats a few sizes many times


class _ExactFloats(sympy.printing.str.StrPrinter):  # type: ignore[misc]
    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))


def exact_text(value: sympy.Expr) -> str:
    """The text form of a size that :func:`size` reads back as the same number: :func:`size_text`, but a float in it
    written with every digit its double needs (sympy prints 15: ``x * π`` of a float64 model read back from JSON
    scaled by ``3.14159265358979``).

    >>> import math
    >>> exact_text(sympy.Float(math.pi) / symbol("k")), float(size(exact_text(sympy.Float(math.pi)))) == math.pi
    ('3.141592653589793/k', True)
    """
    if not isinstance(value, sympy.Basic) or not value.atoms(sympy.Float):
        return size_text(value)
    return str(_ExactFloats().doprint(value))


@functools.lru_cache(maxsize=8192)
def sizes_equal(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether two sizes are equal for every value of their symbols.

    >>> m, n = symbol("m"), symbol("n")
    >>> sizes_equal(m, sympy.Integer(32)), sizes_equal(m, m * n / n), sizes_equal(m + 1, (m**2 - 1) / (m - 1))
    (False, True, True)
    """
    if a is b or a == b:
        return True
    if (a.is_Symbol and a not in b.free_symbols) or (b.is_Symbol and b not in a.free_symbols):
        return False  # a symbol against what does not hold it (an axis' name against its size): unequal, no algebra
    return is_zero(a - b)


def is_zero(value: sympy.Expr) -> bool:
    """Whether a size expression is zero for every value of its symbols.

    A number or a symbol is zero only when it is 0, and a rational function of the symbols with rational coefficients
    (sums, products, integer powers, quotients) only when :func:`sympy.cancel` brings it to 0, which decides it
    exactly; anything else (floor, max, roots, logarithms) asks :func:`sympy.simplify`.  (``simplify`` is slow, and its
    first call imports ``sympy.physics``: a fifth of a second of a process's first trace.)

    >>> m, n = symbol("m"), symbol("n")
    >>> is_zero(m * n / n - m), is_zero((m + n) ** 2 - m**2 - 2 * m * n - n**2), is_zero(m - n)
    (True, True, False)
    >>> is_zero(sympy.floor(m / 2) * 2 - m), is_zero(sympy.sqrt(m**2) - m)
    (False, True)
    """
    if not value.args:
        return bool(value == 0)
    if _laurent_polynomial(value):
        return False  # distinct monomials, collected by sympy as it built the sum: not zero, no algebra needed
    return bool(simplified(value) == 0)


def whole(value: Any) -> int | None:
    """``value`` as a Python int when it is a whole number (an ``int`` or a sympy ``Integer``), else None.

    The size checks of the boxes a trace builds by the dozen (slice, put, pad) compare and add whole numbers as Python
    ints (:func:`size_lt` and the like, :func:`same_size`): sympy's comparisons and arithmetic of numbers it has
    not met yet cost ~5-10 µs each.

    >>> whole(3), whole(sympy.Integer(-4)), whole(symbol("m")), whole(sympy.Rational(1, 2)), whole(True)
    (3, -4, None, None, None)
    """
    if type(value) is int:
        return value
    return int(value.p) if isinstance(value, sympy.Integer) else None


def as_whole(value: Any) -> Any:
    """``value`` as a Python int when it is a whole number (:func:`whole`), else itself: arithmetic of such values is
    Python's when all are whole, sympy's (the very expressions) otherwise."""
    number = whole(value)
    return value if number is None else number


def size_sum(*terms: Any) -> Any:
    """``terms`` added left to right: Python ints when all are whole numbers, else as sympy adds them.

    >>> size_sum(sympy.Integer(3), 1, 2), size_sum(symbol("m"), 1, 2)
    (6, m + 3)
    """
    ints = [whole(term) for term in terms]
    if all(k is not None for k in ints):
        return sum(ints)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def size_lt(a: Any, b: Any) -> bool:
    """``a < b``: of Python ints when both are whole numbers, else as sympy decides it (``bool(a < b)``, which
    raises ``TypeError`` when sympy cannot).

    >>> m = symbol("m")
    >>> size_lt(sympy.Integer(2), 3), size_lt(m + 1, m), size_lt(sympy.Rational(1, 2), 1)
    (True, False, True)
    """
    x, y = whole(a), whole(b)
    return x < y if x is not None and y is not None else bool(a < b)


def size_le(a: Any, b: Any) -> bool:
    """``a <= b``, as :func:`size_lt` compares."""
    x, y = whole(a), whole(b)
    return x <= y if x is not None and y is not None else bool(a <= b)


def size_gt(a: Any, b: Any) -> bool:
    """``a > b``, as :func:`size_lt` compares."""
    x, y = whole(a), whole(b)
    return x > y if x is not None and y is not None else bool(a > b)


def size_ge(a: Any, b: Any) -> bool:
    """``a >= b``, as :func:`size_lt` compares."""
    x, y = whole(a), whole(b)
    return x >= y if x is not None and y is not None else bool(a >= b)


def same_size(a: Any, b: Any) -> bool:
    """Whether ``a - b`` is zero for every value of the symbols: of Python ints when both are whole numbers, else
    :func:`is_zero`."""
    x, y = whole(a), whole(b)
    if x is not None and y is not None:
        return x == y
    return a == b or is_zero(a - b)  # (the very expression: zero)


def _monomial(term: sympy.Basic) -> bool:
    """A number times symbols to whole powers (``4*b``, ``m*n**-2``): sympy keeps one form of each."""
    factors = term.args if isinstance(term, sympy.Mul) else (term,)
    return all(isinstance(f, (sympy.Rational, sympy.Symbol))
               or (isinstance(f, sympy.Pow) and isinstance(f.base, sympy.Symbol) and isinstance(f.exp, sympy.Integer))
               for f in factors)


def _laurent_polynomial(value: sympy.Basic) -> bool:
    """Whether ``value`` (not a number) is a sum of monomials: sympy collected equal ones as it built the sum, so the
    monomials left are distinct functions of the symbols and the sum is zero for no choice of the symbols'
    coefficients but all zero, which sympy would have reduced to 0."""
    return all(_monomial(t) for t in (value.args if isinstance(value, sympy.Add) else (value,)))


def simplified(value: sympy.Expr) -> sympy.Expr:
    """``value`` simplified: a rational function of the symbols with rational coefficients (sums, products, integer
    powers, quotients) by :func:`sympy.cancel` (a constant comes out as that number), anything else by
    :func:`sympy.simplify` (whose first call imports ``sympy.physics``, a fifth of a second).

    >>> m, n = symbol("m"), symbol("n")
    >>> simplified((m + n) ** 2 - m**2 - 2 * m * n - n**2 + 3), simplified(m * n / n - m + n)
    (3, n)
    """
    if all(isinstance(node, (sympy.Add, sympy.Mul, sympy.Symbol, sympy.Rational))
           or (isinstance(node, sympy.Pow) and node.exp.is_Integer) for node in sympy.preorder_traversal(value)):
        return sympy.cancel(value)
    return sympy.simplify(value)


def at_least(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether ``a >= b`` for every positive value of the sizes: ``a - b`` has no negative coefficient (``False``
    when that cannot be read off, e.g. a ``floor``: the caller then keeps both).

    >>> m, n = symbol("m"), symbol("n")
    >>> at_least(m * n + m, m), at_least(m, n), at_least(sympy.floor(m / 2), m)
    (True, False, False)
    """
    difference = a - b
    if difference.is_Number:
        return bool(difference >= 0)
    split = [term.as_coeff_Mul() for term in sympy.Add.make_args(difference)]
    if all(c.is_Number and power_product(rest) for c, rest in split):  # already expanded: read the signs
        return all(c >= 0 for c, _ in split)
    difference = sympy.expand(difference)
    if difference.is_Number:
        return bool(difference >= 0)
    try:
        return all(c >= 0 for c in sympy.Poly(difference, *sorted(difference.free_symbols, key=str)).coeffs())
    except sympy.PolynomialError:
        return False


def power_product(expr: sympy.Expr) -> bool:
    """A product of powers of symbols (positive whole exponents), or 1."""
    return all(f.is_Symbol or (f.is_Pow and f.base.is_Symbol and f.exp.is_Integer and f.exp > 0) or f == 1
               for f in sympy.Mul.make_args(expr))


def maximum(values: list[sympy.Expr]) -> sympy.Expr:
    """The largest of ``values`` (sizes, totals of sizes): a number when all are numbers, else a ``Max`` of those no
    other one provably exceeds (:func:`at_least`), built unevaluated.  sympy's evaluated ``Max`` compares every pair
    again through its assumptions (about cubic in the values: a chain of 20 layers of distinct widths took 4.8 s) and,
    sizes being positive, drops no more than this dominance frontier does; equal values are kept once.

    >>> m, n = symbol("m"), symbol("n")
    >>> maximum([m, 2 * m, m * n]), maximum([sympy.Integer(3), sympy.Integer(5)]), maximum([])
    (Max(2*m, m*n), 5, 0)
    """
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return sympy.Integer(0)
    if all(v.is_number for v in distinct):
        return max(distinct, key=float)
    frontier: list[sympy.Expr] = []
    for v in distinct:
        if any(at_least(f, v) for f in frontier):
            continue
        frontier = [f for f in frontier if not at_least(v, f)] + [v]
    return sympy.Max(*frontier, evaluate=False) if len(frontier) > 1 else frontier[0]


class Substitution(dict[sympy.Symbol, sympy.Expr]):
    """A size mapping that remembers what it substituted (``memo``: axes, primitives, ... to their results).

    One :meth:`~ncd.ir.diagram.Diagram.bind` uses one, so the boxes and axes a long model repeats
    are substituted (and checked) once.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.memo: dict[Any, Any] = {}


def substitute(value: sympy.Expr, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``value`` with symbols replaced; a no-op when none of them occur."""
    if not mapping or not (value.free_symbols & mapping.keys()):
        return value
    symbols = value.free_symbols  # a few; the mapping may bind thousands of sizes (look each symbol up)
    relevant = tuple(sorted(((k, mapping[k]) for k in symbols if k in mapping), key=lambda kv: kv[0].name))
    return _substituted(value, relevant)


@functools.lru_cache(maxsize=65536)
def _substituted(value: sympy.Expr, mapping: tuple[tuple[sympy.Symbol, sympy.Expr], ...]) -> sympy.Expr:
    """``substitute`` for the symbols that occur (memoised: a diagram repeats the same sizes everywhere)."""
    _check_powers(value, dict(mapping))
    value = value.xreplace(dict(mapping))
    return value if not value.args else sympy.simplify(value)  # a number or a symbol is as simple as it gets


def _check_powers(value: sympy.Expr, mapping: dict[sympy.Symbol, sympy.Expr]) -> None:
    """Refuse ``value`` when binding ``mapping`` makes one of its powers with a size in the exponent astronomically large
    (``t**t**t`` at t=5, ``2**(m*m*m)`` at m=10**4: sympy computes them eagerly, so a diagram read from JSON hung in
    ``to_torch``, ``cost`` or ``to_source``); the parser bounds powers of numbers alike (``size_parser.MAX_BITS``)."""
    powers = [p for p in value.atoms(sympy.Pow) if p.exp.free_symbols & mapping.keys()]
    for power in sorted(powers, key=sympy.count_ops):  # inner powers first: an exponent's own powers are checked
        base, exponent = power.base.xreplace(mapping), power.exp.xreplace(mapping)
        if not (exponent.is_number and base.is_number) or abs(base) in (sympy.Integer(0), sympy.Integer(1)):
            continue
        bits = abs(exponent)
        if bits <= MAX_BITS:
            bits = bits * abs(sympy.log(abs(base), 2))
        if bits > MAX_BITS:
            at = ", ".join(f"{k}={v}" for k, v in sorted(mapping.items(), key=lambda kv: kv[0].name)
                           if k in power.free_symbols)
            raise SizeError(f"size {size_text(value)[:80]} at {at}: the power {size_text(power)[:60]} is too large to"
                            f" compute (more than 2**{MAX_BITS})")


_SYMBOLIC: contextvars.ContextVar[bool] = contextvars.ContextVar("ncd_symbolic_sizes", default=False)


@contextlib.contextmanager
def symbolic_sizes() -> Iterator[None]:
    """Inside this block :func:`evaluate` gives a :class:`SymbolicSize` for a size whose symbols are free
    (lowering a diagram on symbolic sizes: the program prints sizes by name) instead of raising."""
    token = _SYMBOLIC.set(True)
    try:
        yield
    finally:
        _SYMBOLIC.reset(token)


@functools.lru_cache(maxsize=8192)
def symbolic_text(value: sympy.Expr) -> str:
    """A size as a program on symbolic sizes prints it: each symbol read from ``sizes`` (``sizes.k*sizes.h``),
    so that no size is mistaken for a local variable of the same name."""
    return str(value.xreplace({s: sympy.Symbol(f"sizes.{s}") for s in value.free_symbols}))


def symbolic_lowering() -> bool:
    """Whether a program on symbolic sizes is being lowered (:func:`symbolic_sizes`)."""
    return _SYMBOLIC.get()


class SymbolicSize:
    """A size lowering prints by name (``m``, ``k*h``): arithmetic stays symbolic, and anything that needs the
    number itself (``range``, indexing, ``int``) raises a :class:`~ncd.errors.SizeError`.

    >>> n = SymbolicSize(symbol("k") * symbol("h"))
    >>> f"nn.Linear({n}, {2 * n})", n == symbol("h") * symbol("k"), n == 1
    ('nn.Linear(sizes.h*sizes.k, 2*sizes.h*sizes.k)', True, False)
    """

    __slots__ = ("expr",)

    def __init__(self, expr: Any) -> None:
        self.expr: sympy.Expr = expr.expr if isinstance(expr, SymbolicSize) else sympy.sympify(expr)

    def __str__(self) -> str:
        return symbolic_text(self.expr)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    @staticmethod
    def _of(other: Any) -> sympy.Expr:
        return other.expr if isinstance(other, SymbolicSize) else sympy.sympify(other)

    def __add__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self.expr + self._of(other))

    __radd__ = __add__

    def __mul__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self.expr * self._of(other))

    __rmul__ = __mul__

    def __sub__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self.expr - self._of(other))

    def __rsub__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self._of(other) - self.expr)

    def __floordiv__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(sympy.floor(self.expr / self._of(other)))

    def __truediv__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self.expr / self._of(other))

    def __rtruediv__(self, other: Any) -> SymbolicSize:
        return SymbolicSize(self._of(other) / self.expr)

    def __neg__(self) -> SymbolicSize:
        return SymbolicSize(-self.expr)

    def __eq__(self, other: object) -> bool:
        return is_zero(self.expr - self._of(other))

    def __hash__(self) -> int:
        return hash(self.expr)

    def _unbound(self, *_: Any) -> Any:
        names = ", ".join(sorted(str(s) for s in self.expr.free_symbols))
        raise SizeError(f"size {size_text(self.expr)} is needed as a number here: give {names}")

    __index__ = __int__ = __float__ = __mod__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _unbound


def evaluate(value: sympy.Expr, sizes: Mapping[str, int] | None = None, *, what: str = "size") -> int:
    """The whole-number value of a size once its symbols are bound (a :class:`SymbolicSize` when
    its symbols are free inside :func:`symbolic_sizes`)."""
    expr = value
    if sizes:
        expr = substitute(expr, {symbol(k): sympy.Integer(v) for k, v in sizes.items()})
    if expr.free_symbols and _SYMBOLIC.get():
        return SymbolicSize(expr)  # type: ignore[return-value]
    if expr.free_symbols:
        names = ", ".join(sorted(str(s) for s in expr.free_symbols))
        raise SizeError(f"{what} {size_text(value)} is not bound: give {names}")
    if not expr.is_integer:
        expr = sympy.nsimplify(expr)
        if not expr.is_integer:
            raise SizeError(f"{what} {size_text(value)} is {expr}, which is not a whole number")
    result = int(expr)
    return result
