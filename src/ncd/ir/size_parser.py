"""Size text read without ``eval``: the size symbols and a small recursive-descent parser.

:func:`ncd.ir.size.size` reads text with :func:`parse_size`; untrusted text (JSON files, CLI arguments) is bounded
in length, nesting and the size of its powers, so reading it stays cheap.

>>> parse_size("2*c") == 2 * symbol("c")
True
"""

from __future__ import annotations

import functools
import re
import unicodedata

import sympy

from ncd.errors import ParseError

__all__ = ["symbol", "is_name", "plainly_positive", "parse_size", "NAME"]


@functools.cache
def symbol(name: str) -> sympy.Symbol:
    """The size symbol called ``name`` (positive, so powers and roots simplify)."""
    return sympy.Symbol(name, positive=True)


#: Limits that keep hostile text (JSON files, CLI arguments) cheap to read.
MAX_TEXT = 1000
MAX_DEPTH = 64
MAX_BITS = 4096  # numbers larger than 2**MAX_BITS are refused, not computed

#: a name's text: a letter or ``_``, then anything but space and ASCII punctuation other than ``_`` (the text is then
#: checked to be a Python identifier, :func:`is_name`, so combining accents such as ``x́`` count)
NAME = r"[^\W\d][^\s!-/:-@\[-^`{-~]*"
_TOKEN = re.compile(r"\s*(?:((?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3}(?!\w))?)|(" + NAME + r")|(\*\*|[-+*/^()]))")


@functools.lru_cache(maxsize=4096)
def is_name(text: str) -> bool:
    """Whether ``text`` is one name, which :func:`size` reads as :func:`symbol` of it (``t``, ``d_k``, ``λ``, ``é``):
    a Python identifier in its normal form (NFKC, as Python reads keyword arguments: ``ﬁ`` would arrive as ``fi``).

    >>> is_name("d_k"), is_name("é"), is_name("2k"), is_name("ﬁ")
    (True, True, False, False)
    """
    return text.isidentifier() and unicodedata.normalize("NFKC", text) == text


#: the functions of one size sympy writes in a size's text (a scale by ``t // 2`` is ``1/floor(t/2)``)
_FUNCTIONS = {"sqrt": sympy.sqrt, "floor": sympy.floor, "ceiling": sympy.ceiling}


class _Parser:
    """Grammar: sum := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
    unary := '-' unary | power; power := atom (('**'|'^') unary)?;
    atom := number | name | ('sqrt'|'floor'|'ceiling') '(' sum ')' | '(' sum ')'.

    >>> t = symbol("t")
    >>> [parse_size(str(e)) == e for e in (1 / sympy.floor(t / 2), sympy.ceiling((t + 1) / 3), sympy.sqrt(t))]
    [True, True, True]
    """

    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_TEXT:
            raise ParseError(f"cannot read size {text[:40]!r}...: it is longer than {MAX_TEXT} characters")
        self.depth = 0
        self.tokens: list[tuple[str, str]] = []
        self.positions: list[int] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            start = len(text) - len(text[pos:].lstrip())
            if not match:
                raise ParseError(f"cannot read size {text!r}: unexpected character {text[start]!r} at position {start}")
            number, name, op = match.groups()
            if name and not is_name(name):
                raise ParseError(f"cannot read size {text!r}: {name!r} at position {start} is not a name (a Python "
                                 "identifier in normal form NFKC)")
            self.tokens.append(("num", number) if number else ("name", name) if name else ("op", op))
            self.positions.append(start)
            pos = match.end()
        self.index = 0

    def where(self, index: int | None = None) -> str:
        """`` at position N`` for token ``index`` (default: the current one), or the end of the text."""
        k = self.index if index is None else index
        return f" at position {self.positions[k] if k < len(self.positions) else len(self.text)}"

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, op: str) -> bool:
        token = self.peek()
        if token == ("op", op):
            self.index += 1
            return True
        return False

    def parse(self) -> sympy.Expr:
        if not self.tokens:
            raise ParseError(f"cannot read size {self.text!r}: it is empty")
        value = self.sum()
        if self.peek() is not None:
            raise ParseError(f"cannot read size {self.text!r}: unexpected {self.peek()[1]!r}{self.where()}")  # type: ignore[index]
        return value

    def sum(self) -> sympy.Expr:
        value = self.term()
        while True:
            if self.take("+"):
                value = value + self.term()
            elif self.take("-"):
                value = value - self.term()
            else:
                return value

    def term(self) -> sympy.Expr:
        value = self.unary()
        while True:
            if self.take("*"):
                value = value * self.unary()
            elif self.take("/"):
                value = value / self.unary()
            else:
                return value

    def unary(self) -> sympy.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"cannot read size {self.text!r}: it is nested more than {MAX_DEPTH} deep")
        try:
            if self.take("-"):
                return -self.unary()
            return self.power()
        finally:
            self.depth -= 1

    def power(self) -> sympy.Expr:
        base = self.atom()
        if self.take("**") or self.take("^"):
            exponent = self.unary()
            _check_power(self.text, base, exponent)
            return base**exponent
        return base

    def atom(self) -> sympy.Expr:
        token = self.peek()
        if token is None:
            raise ParseError(f"cannot read size {self.text!r}: it ends too early{self.where()}")
        self.index += 1
        kind, text = token
        if kind == "num":
            return sympy.Rational(text) if "." in text or "e" in text.lower() else sympy.Integer(int(text))  # (1e-20:
            # sympy's text of a float)
        if kind == "name":
            if text in _FUNCTIONS and self.take("("):
                inner = self.sum()
                if not self.take(")"):
                    raise ParseError(f"cannot read size {self.text!r}: missing ')'{self.where()}")
                return _FUNCTIONS[text](inner)
            return symbol(text)
        if text == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ParseError(f"cannot read size {self.text!r}: it is nested more than {MAX_DEPTH} deep")
            inner = self.sum()
            self.depth -= 1
            if not self.take(")"):
                raise ParseError(f"cannot read size {self.text!r}: missing ')'{self.where()}")
            return inner
        raise ParseError(f"cannot read size {self.text!r}: unexpected {text!r}{self.where(self.index - 1)}")


def _check_power(text: str, base: sympy.Expr, exponent: sympy.Expr) -> None:
    """Refuse powers whose value would be astronomically large (sympy computes them eagerly)."""
    if not exponent.is_number or (base.is_number and abs(base) in (sympy.Integer(0), sympy.Integer(1))):
        return
    bits = abs(exponent)
    if bits <= MAX_BITS and base.is_number:
        bits = bits * abs(sympy.log(abs(base), 2))
    if bits > MAX_BITS:
        raise ParseError(f"cannot read size {text!r}: the power is too large to be a size")


def plainly_positive(value: sympy.Expr) -> bool:
    """Whether ``value`` is positive by its form alone: positive numbers and symbols assumed positive, in sums,
    products and powers with rational exponents.  ``False`` says nothing (sympy's assumptions may still find it
    positive).  It answers without sympy's assumptions, which derive every fact of each new expression (a tenth of
    a millisecond or more each: the first trace or drawing of a model with new sizes paid it per size)."""
    if value.is_Symbol:
        return value.is_positive is True  # (given when the symbol was made: no derivation)
    if value.is_Rational:
        return value.p > 0  # type: ignore[no-any-return]
    if value.is_Mul or value.is_Add:
        return all(plainly_positive(arg) for arg in value.args)
    if value.is_Pow:
        return value.exp.is_Rational and plainly_positive(value.base)
    return False


@functools.lru_cache(maxsize=4096)
def parse_size(text: str) -> sympy.Expr:
    """The size a text says (:func:`ncd.ir.size.size` of a string), refused with a :class:`~ncd.errors.ParseError`
    when it is not one."""
    value = _Parser(text).parse()
    if "." in text:
        value = sympy.nsimplify(value, rational=True)
    if value.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise ParseError(f"cannot read size {text!r}: it divides by zero or is infinite")
    if not plainly_positive(value) and value.is_real is False:
        raise ParseError(f"cannot read size {text!r}: it is not a real number")
    return value
