"""Numbers read as sizes: the factor of a scaling drawn and lowered as the size it is a power of.

An attention scale ``0.35355339...`` on scores whose head dimension ``k`` is 8 is ``k**-0.5`` (:func:`_factor`), a
mean's ``1/b`` follows the batch (:func:`count_of`), a number the model computed in Python from a size is that
expression of its symbol (:func:`ncd.trace.shape_expressions.factor_of`); a number a user writes (``2``, ``0.5``, ``x / 3``) stays
itself (:func:`written`).  :func:`_scale` makes the ``*c`` box, lowered as the model's division where that is bit for
bit the model's (:func:`divisor`).
"""

from __future__ import annotations

import fractions
import math
import struct
import types
from collections.abc import Sequence

import sympy

from ncd.ir.axes import Axis
from ncd.ir.diagram import Box
from ncd.ir.program import size_code
from ncd.ir.size import symbol
from ncd.prims.elementwise import ScaleOp
from ncd.trace.convert import Converter, Decline
from ncd.trace.naming import PRIME, noted
from ncd.trace.shape_expressions import factor_of

__all__ = ["SYMBOLIZED", "size_constant", "count_of", "written", "divisor"]


#: Names whose sizes :func:`ncd.trace.symbolic.symbolize` makes symbols (a factor read off them would follow them).
SYMBOLIZED = ("b", "t")


def size_constant(conv: Converter, name: str) -> sympy.Symbol | None:
    """The symbol of a wire name (``k`` for the head dimension), its traced size recorded among the diagram's
    defaults; None for a size 1 or a name that is no identifier."""
    base = name.rstrip(PRIME)
    size = noted(conv.namer, conv.namer.size_of.get, base)
    if size is None or size <= 1 or not base.isidentifier():
        return None
    conv.__dict__.setdefault("_constants", {})[base] = size
    return symbol(base)


def count_of(conv: Converter, reduced: Sequence[Axis]) -> sympy.Expr:
    """How many entries a reduction over the wires ``reduced`` reads: the product of their sizes' symbols where the
    names hold them (a mean over the batch is ``1/b``, so it follows the batch when the diagram is lowered at another),
    else the number."""
    exact = all(not a.size.free_symbols and int(a.size) > 1 and a.name.rstrip(PRIME).isidentifier()
                and noted(conv.namer, conv.namer.size_of.get, a.name.rstrip(PRIME)) == int(a.size) for a in reduced)
    if exact:
        return sympy.Mul(*[size_constant(conv, a.name) for a in reduced])
    return sympy.Integer(math.prod(int(a.size) for a in reduced))


def _factor(conv: Converter, factor: float, like: Sequence[str], single: bool = False) -> sympy.Expr:
    """``factor`` as a size of one of the wires ``like`` when it is one (``k**-0.5``, ``1/m``, ``m**0.5``), else the
    number: an attention scale reads as the head dimension's, not as 16 digits.  A factor the model computed in
    Python from the batch or sequence size (``x / x.shape[0]``) is that expression of their symbols.  ``single``: the
    factor is a float32 tensor's, a size's power rounded to float32 as torch rounds it (:func:`_single`)."""
    sized = None if single else factor_of(conv, factor)
    if sized is not None:
        return sized
    choice = _factor_choice(conv, factor, tuple(like), single)
    reads = conv.namer.reads
    if reads is None:
        return _factor_expr(conv, factor, choice)
    # it reads names the walk goes on adding (the config's, merges'): logged in a first layer, the choice as the answer
    reads.append((_factor_choice, (conv, factor, tuple(like), single), choice))
    conv.namer.reads = None
    try:
        return _factor_expr(conv, factor, choice)
    finally:
        conv.namer.reads = reads


#: the powers of a size a factor is read as: ``k**-0.5``, ``1/m``, ``m**0.5``
_POWERS = ((-0.5, sympy.Rational(-1, 2)), (-1.0, sympy.Integer(-1)), (0.5, sympy.Rational(1, 2)))


def _single(value: float) -> float:
    """``value`` rounded to float32 (to nearest, ties to even), as torch stores a Python float in a float32 tensor."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _power_of(factor: float, n: int, power: float, single: bool) -> bool:
    """Whether ``factor`` is ``n ** power``: to 12 digits, or (``single``) exactly as rounded to float32."""
    if single:
        return _single(n ** power) == factor
    return math.isclose(factor, n ** power, rel_tol=1e-12, abs_tol=0.0)


def _factor_choice(conv: Converter, factor: float, like: tuple[str, ...], single: bool = False
                   ) -> tuple[str, int] | None:
    """Which size ``factor`` is a power of: (the name, the power's index in :data:`_POWERS`; ``k`` also for the config's
    head dimension while no wire holds it), or None.  It changes nothing (asked again by :mod:`ncd.trace.reuse`)."""
    merged = {name for key, name in conv.namer.generated.items() if len(key) > 3}  # (b h) as one wire: no size's role
    for name in like + (_config_names(conv) if like else ()):
        base = name.rstrip(PRIME)
        n = conv.namer.size_of.get(base)
        if n is None or n <= 1 or base in SYMBOLIZED or base in merged or not base.isidentifier():
            continue
        for k, (power, _) in enumerate(_POWERS):
            if _power_of(factor, n, power, single):
                return base, k
    heads = conv.namer.own["k"]
    if like and len(heads) == 1:  # the config's one head dimension, though no wire holds it (bloom's fused q k v: d)
        n = next(iter(heads))
        if n > 1 and conv.namer.size_of.get("k", n) == n and _power_of(factor, n, -0.5, single):
            return "k", 0
    return None


def _factor_expr(conv: Converter, factor: float, choice: tuple[str, int] | None) -> sympy.Expr:
    """The expression :func:`_factor_choice`'s answer stands for (the size recorded among the diagram's defaults)."""
    if choice is None:
        return sympy.Float(factor) if not float(factor).is_integer() else sympy.Integer(int(factor))
    base, k = choice
    s = size_constant(conv, base)
    if s is None:  # the config's head dimension, no wire's yet: its size (a wire named k later has it too)
        conv.__dict__.setdefault("_constants", {})["k"] = next(iter(conv.namer.own["k"]))
        s = symbol("k")
    result: sympy.Expr = s ** _POWERS[k][1]
    return result


def _config_names(conv: Converter) -> tuple[str, ...]:
    """The names the diagram has given a size in the role the model's config gives it (head features ``k`` first):
    attention scores scaled after ``q @ kᵀ`` hold no head-feature wire, yet their scale is the head dimension's."""
    config = conv.namer.config
    named = [name for name, size in conv.namer.size_of.items() if name in config.get(size, ())]
    return tuple(sorted(named, key=lambda name: (name != "k", name)))


def written(factor: float) -> bool:
    """Whether a factor is a number as a user writes one (``2``, ``0.5``, ``0.125``: six significant digits or fewer;
    ``x / 3`` or ``x / 7``: a fraction of a small denominator), not one computed from a size (``8**-0.5`` is
    0.35355339...).  A written number is drawn as itself: ``x * 2`` on a wire of width 4 is not ``m**0.5``,
    ``x * 0.5`` on a width 2 is not ``1/n``, ``x / 3`` on a width 9 is not ``m**-0.5``."""
    if float(f"{factor:.6g}") == factor:
        return True
    if not math.isfinite(factor):
        return False
    near = fractions.Fraction(factor).limit_denominator(1000)
    return math.isclose(factor, near.numerator / near.denominator, rel_tol=1e-12, abs_tol=0.0)


def _scale(conv: Converter, vid: int, factor: float | sympy.Expr, like: Sequence[str] = (),
           by: float | None = None, single: bool = False) -> int:
    """``vid`` times ``factor`` (a number, read as a size of the wires ``like`` where it is one, or an expression).
    ``by``: the number the model divided by (``factor`` its reciprocal), lowered as that division where
    :func:`divisor` finds it the model's (``single``: a float32 tensor's number)."""
    if factor == 1:  # (x / 1 too: exact)
        return vid
    if not isinstance(factor, sympy.Expr) and not math.isfinite(factor):
        raise Decline("a factor that is not finite (Scale refuses inf and nan)")
    expr = factor if isinstance(factor, sympy.Expr) else _factor(conv, float(factor), like)
    return conv.apply(Box(ScaleOp(expr, divisor(conv, expr, by, single) if by is not None else None)), [vid])


def divisor(conv: Converter, factor: sympy.Expr, by: float, single: bool = False) -> sympy.Expr | None:
    """What a Scale box by ``factor`` standing for a division by the number ``by`` divides by when lowered
    (:attr:`~ncd.prims.elementwise.ScaleOp.divisor`: ``x / 3`` is not ``x * 0.3333333333333333``, bit for bit), or
    None: a number whose reciprocal is a power of two (``x / 4`` is ``x * 0.25`` exactly: drawn and lowered as
    before), or ``1 / factor`` as the lowered module computes it (reading its sizes by name: ``sizes.k ** 0.5``,
    Python's power, which is not always ``math.sqrt``) is not ``by`` (``single``: rounded to float32 as torch reads
    the number for a float32 tensor) — lowered as the multiplication, one rounding off, as before."""
    if not math.isfinite(by) or by == 0:
        return None
    same = _single if single else float
    if not factor.free_symbols:
        if abs(math.frexp(by)[0]) == 0.5:
            return None
        number = sympy.Integer(int(by)) if by.is_integer() and abs(by) < 2**53 else sympy.Float(by)
        return number if same(float(number)) == same(by) else None
    inverse = 1 / factor
    code = size_code(inverse)
    constants = conv.__dict__.get("_constants", {})  # the sizes the diagram records as its defaults, else the wires'
    sizes = {str(s): constants.get(str(s)) or noted(conv.namer, conv.namer.size_of.get, str(s))
             for s in inverse.free_symbols}
    if code is None or any(not isinstance(n, int) for n in sizes.values()):
        return None
    value = eval(code, {"__builtins__": {}}, {"sizes": types.SimpleNamespace(**sizes)})  # noqa: S307 (sizes' Python)
    return inverse if same(float(value)) == same(by) else None
