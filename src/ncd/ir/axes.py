"""Axes, segments (one tensor each) and types (tuples of segments), with their text form.

Text form: spaces separate axes, commas separate segments.  A token is an axis name,
optionally followed by ``:size``; without a size, the name itself is read as the size
expression (so ``x/s`` has size ``x/s`` and ``64`` has size 64).  A leading ``~`` (or a
combining overline, ``x̄``) marks an *item* axis (tokens, pixels); ``(k h)`` is a bound
axis of size ``k*h``.  A segment may end with ``[v]`` (integer indices below ``v``) or
``[bool]`` (a boolean mask).

>>> t = parse_type("b ~t m, b s m:512")
>>> str(t)
'b t\u0305 m, b s m:512'
>>> t.segments[1].axes[2].size
512
>>> str(parse_type("b (k h)").segments[0].axes[1].size)
'h*k'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

import sympy

from ncd.errors import LimitError, ParseError, SizeError
from ncd.ir.size import Size, SizeLike, Substitution, is_name, plainly_positive, size, size_text, sizes_equal, substitute, symbol
from ncd.limits import limits

__all__ = ["Axis", "Segment", "Type", "parse_axis", "parse_segment", "parse_type", "as_type", "as_axis", "TypeLike", "AxisLike",
           "numel", "SCALAR", "SCALAR_TYPE"]

Role = Literal["feature", "item"]
Dtype = Literal["float", "index", "bool", "complex"]
OVERLINE = "\u0305"
#: Characters an axis name may not contain (names end up in generated code's comments and docstrings).
_FORBIDDEN = ",[]:'\"\\"
#: The text form of a segment with no axes (a scalar), as in the elementwise boxes' domain.
SCALAR_TEXT = "()"
_MACRON = "\u0304"


#: ``(name, bare)`` pairs already checked to be valid axis names (``bare``: an axis without parts, no spaces allowed)
_VALID_NAMES: set[tuple[str, bool]] = set()


def _hash_once(node: Any, key: tuple[Any, ...]) -> int:
    """The hash of a frozen record, computed on first use and kept (types, segments and axes are memo keys of every
    substitution and rule: rehashing their nested tuples was a tenth of costing a large diagram)."""
    found: int | None = node.__dict__.get("_hash")
    if found is None:
        found = hash(key)
        object.__setattr__(node, "_hash", found)
    return found


def _state(node: Any) -> dict[str, Any]:
    """What pickling keeps of a record: not its kept hash (string hashes differ between processes)."""
    return {k: v for k, v in node.__dict__.items() if k != "_hash"}


@dataclass(frozen=True)
class Axis:
    """One wire: a named tensor axis with a size and a role (item or feature)."""

    name: str
    size: Size
    role: Role = "feature"
    parts: tuple[Axis, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or (self.name, not self.parts) not in _VALID_NAMES:
            if (
                not isinstance(self.name, str)
                or not self.name
                or not self.name.isprintable()
                or any(c in self.name for c in _FORBIDDEN + ("" if self.parts else " "))
            ):
                raise ParseError(f"{self.name!r} is not a valid axis name")
            if len(_VALID_NAMES) > 50_000:
                _VALID_NAMES.clear()
            _VALID_NAMES.add((self.name, not self.parts))
        if not isinstance(self.size, sympy.Basic):
            object.__setattr__(self, "size", size(self.size))
        value = self.size
        if isinstance(value, sympy.Integer) and 0 < value.p <= limits().axis_size:
            return  # the usual case, a whole number in range: the checks below without sympy's assumptions
        if not value.is_number and plainly_positive(value):
            return  # a symbolic size of positive parts (2*b, b*t, k**-0.5): positive, and no number to bound
        if value.is_positive is False or (value.is_number and value.is_integer is not True):
            raise SizeError(f"axis {self.name} has size {size_text(value)}; a size must be a positive whole number")
        if value.is_number and value > limits().axis_size:
            raise LimitError(f"axis {self.name} has size {size_text(value)}, more than the limit of {limits().axis_size}"
                             " (axis_size in ncd.limits)")

    def __str__(self) -> str:
        text = self.name if not self.parts else "(" + " ".join(str(p) for p in self.parts) + ")"
        if self.role == "item" and not self.parts:
            text = text + OVERLINE if len(text) == 1 else "~" + text
        if not self.parts and not _default_size(self.name, self.size):
            text += ":" + size_text(self.size).replace(" ", "")
        return text

    def __repr__(self) -> str:
        return f"Axis({str(self)!r})"

    def __hash__(self) -> int:
        found: int | None = self.__dict__.get("_hash")  # (kept: read before the key is built)
        return _hash_once(self, (self.name, self.size, self.role, self.parts)) if found is None else found

    def __getstate__(self) -> dict[str, Any]:
        return _state(self)

    @property
    def is_item(self) -> bool:
        return self.role == "item"

    def renamed(self, name: str) -> Axis:
        return replace(self, name=name, parts=())

    def resized(self, new_size: SizeLike) -> Axis:
        return replace(self, size=size(new_size), parts=())

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Axis:
        memo = mapping.memo if isinstance(mapping, Substitution) else None
        if memo is not None and self in memo:
            return memo[self]  # type: ignore[no-any-return]
        new = substitute(self.size, mapping)
        parts = tuple(p.subs(mapping) for p in self.parts)
        result = self if new is self.size and parts == self.parts else replace(self, size=new, parts=parts)
        if memo is not None:
            memo[self] = result
        return result

    def same(self, other: Axis) -> bool:
        """Same name and (provably) equal size; roles are drawing hints and do not count."""
        return self is other or (self.name == other.name and sizes_equal(self.size, other.size))


def _default_size(name: str, value: Size) -> bool:
    if value.is_Number and is_name(name):
        return False  # (a name reads as its symbol, never equal to a number: not parsed)
    try:
        return sizes_equal(size(name), value)
    except Exception:
        return False


@dataclass(frozen=True)
class Segment:
    """One tensor: an ordered tuple of axes, optionally integer- or boolean-valued."""

    axes: tuple[Axis, ...]
    dtype: Dtype = "float"
    range: Size | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float", "index", "bool", "complex"):
            raise ParseError(f"segment dtype must be float, index, bool or complex, not {self.dtype!r}")
        if (self.range is not None) != (self.dtype == "index"):
            raise ParseError(f"a segment has an index range exactly when its dtype is index (dtype {self.dtype!r})")

    def __str__(self) -> str:
        text = " ".join(str(a) for a in self.axes)
        if not self.axes and self.dtype == "float":
            return SCALAR_TEXT
        if self.dtype == "index":
            text += (" " if text else "") + f"[{size_text(self.range)}]"
        elif self.dtype in ("bool", "complex"):
            text += (" " if text else "") + f"[{self.dtype}]"
        return text

    def __repr__(self) -> str:
        return f"Segment({str(self)!r})"

    def __hash__(self) -> int:
        found: int | None = self.__dict__.get("_hash")
        return _hash_once(self, (self.axes, self.dtype, self.range)) if found is None else found

    def __getstate__(self) -> dict[str, Any]:
        return _state(self)

    def __len__(self) -> int:
        return len(self.axes)

    def __iter__(self) -> Iterator[Axis]:
        return iter(self.axes)

    @property
    def repeated(self) -> list[str]:
        """Axis names that occur more than once (only an einsum's diagonal wires may do that)."""
        names = [a.name for a in self.axes]
        return sorted({n for n in names if names.count(n) > 1})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def sizes(self) -> tuple[Size, ...]:
        return tuple(a.size for a in self.axes)

    def index(self, name: str) -> int:
        """Position of the axis called ``name``."""
        hits = [i for i, a in enumerate(self.axes) if a.name == name]
        if len(hits) != 1:
            raise ParseError(
                f"axis {name!r} {'is not in' if not hits else 'occurs more than once in'} segment '{self}'"
            )
        return hits[0]

    def axis(self, name: str) -> Axis:
        return self.axes[self.index(name)]

    def insert(self, position: int, axis: Axis) -> Segment:
        axes = list(self.axes)
        axes.insert(position, axis)
        return Segment(tuple(axes), self.dtype, self.range)  # dataclasses.replace, spelt out (a hot path)

    def with_axes(self, axes: Iterable[Axis]) -> Segment:
        return Segment(tuple(axes), self.dtype, self.range)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Segment:
        return replace(
            self,
            axes=tuple(a.subs(mapping) for a in self.axes),
            range=None if self.range is None else substitute(self.range, mapping),
        )

    def same(self, other: Segment) -> bool:
        if self is other:
            return True
        axes, others = self.axes, other.axes
        if len(axes) != len(others) or self.dtype != other.dtype or (self.range is None) != (other.range is None):
            return False
        for a, b in zip(axes, others):  # Axis.same, spelt out (every junction of a sequence asks this)
            if a is not b and (a.name != b.name or not sizes_equal(a.size, b.size)):
                return False
        return self.range is None or sizes_equal(self.range, other.range)


@dataclass(frozen=True)
class Type:
    """A tuple of segments, drawn stacked and separated by dashed lines."""

    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.segments) > limits().segments:
            raise LimitError(f"a type of {len(self.segments)} tensors is more than the limit of {limits().segments}"
                             " (segments in ncd.limits)")

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.segments)

    def __repr__(self) -> str:
        return f"Type({str(self)!r})"

    def __hash__(self) -> int:
        found: int | None = self.__dict__.get("_hash")
        return _hash_once(self, self.segments) if found is None else found

    def __getstate__(self) -> dict[str, Any]:
        return _state(self)

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __getitem__(self, index: int) -> Segment:
        return self.segments[index]

    def __add__(self, other: Type) -> Type:
        return Type(self.segments + other.segments)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Type:
        if not mapping:
            return self
        memo = mapping.memo if isinstance(mapping, Substitution) else None
        if memo is not None and self in memo:
            return memo[self]  # type: ignore[no-any-return]
        result = Type(tuple(s.subs(mapping) for s in self.segments))
        if memo is not None:
            memo[self] = result
        return result

    def same(self, other: Type) -> bool:
        if self is other:
            return True
        segments, others = self.segments, other.segments
        if len(segments) != len(others):
            return False
        for a, b in zip(segments, others):
            if a is not b and not a.same(b):
                return False
        return True

    @property
    def free_symbols(self) -> set[sympy.Symbol]:
        found: set[sympy.Symbol] = set()
        for seg in self.segments:
            for a in seg.axes:
                if not a.size.is_Integer:  # (a number has none: sympy's property, a call per axis, is not asked)
                    found |= a.size.free_symbols
            if seg.range is not None and not seg.range.is_Integer:
                found |= seg.range.free_symbols
        return found


AxisLike = Union[str, Axis]
TypeLike = Union[str, Type, Segment]

SCALAR = Segment(())
"""The segment of no axes: one scalar."""
SCALAR_TYPE = Type((SCALAR,))
"""The type of one scalar wire."""


def _split_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ParseError(f"unbalanced brackets in {text!r}")
        if ch.isspace() and depth == 0:
            if current:
                tokens.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise ParseError(f"unbalanced brackets in {text!r}")
    if current:
        tokens.append(current)
    return tokens


@functools.lru_cache(maxsize=4096)
def parse_axis(token: str) -> Axis:
    """Read one axis token: ``m``, ``~t``, ``t̄``, ``x/s``, ``m:512``, ``(k h)``.

    >>> parse_axis("m:512").size
    512
    """
    text = token.strip()
    if not text:
        raise ParseError("an axis token is empty")
    if text.startswith("(") and not text.endswith(")"):
        raise ParseError(f"bound axis {token!r} takes its size from its parts; write '(k h)', not '(k h):size'")
    if text.startswith("(") and text.endswith(")"):
        parts = tuple(parse_axis(t) for t in _split_tokens(text[1:-1]))
        if not parts:
            raise ParseError(f"bound axis {token!r} has no parts")
        total = sympy.Integer(1)
        for p in parts:
            total = total * p.size
        return Axis("(" + " ".join(p.name for p in parts) + ")", total, "feature", parts)
    role: Role = "feature"
    if text.startswith("~"):
        role, text = "item", text[1:]
    name, colon, size_part = text.partition(":")
    if colon and not size_part.strip():
        raise ParseError(f"axis token {token!r} has ':' but no size after it")
    if OVERLINE in name or _MACRON in name:
        role, name = "item", name.replace(OVERLINE, "").replace(_MACRON, "")
    if not name:
        raise ParseError(f"axis token {token!r} has no name")
    try:
        value = size(size_part) if size_part else size(name)
    except ParseError as error:
        raise ParseError(f"axis {token!r}: {error}") from None
    return Axis(name, value, role)


def parse_segment(text: str) -> Segment:
    tokens = _split_tokens(text)
    if tokens == [SCALAR_TEXT]:
        return SCALAR
    dtype: Dtype = "float"
    value_range: Size | None = None
    for token in tokens[:-1]:
        if token.startswith("["):
            raise ParseError(f"in segment {text.strip()!r}, the tag {token} must come after every axis")
    if tokens and tokens[-1].startswith("["):
        tag = tokens.pop()[1:-1].strip()
        if tag in ("bool", "complex"):
            dtype = "bool" if tag == "bool" else "complex"
        else:
            dtype, value_range = "index", size(tag)
            if value_range.is_number and not (value_range.is_Integer and value_range > 0):
                raise ParseError(f"in segment {text.strip()!r}, the index range [{tag}] must be a positive whole "
                                 f"number (the count of values an index takes), not {size_text(value_range)}")
    return Segment(tuple(parse_axis(t) for t in tokens), dtype, value_range)


@functools.lru_cache(maxsize=4096)
def _parse_type_text(text: str) -> Type:
    if not text.strip():
        return Type(())
    parts = text.split(",")
    for part in parts:
        if not part.strip():
            raise ParseError(f"type {text.strip()!r} has an empty segment; write {SCALAR_TEXT} for a scalar "
                             f"(e.g. 'b m, {SCALAR_TEXT}')")
    return Type(tuple(parse_segment(part) for part in parts))


def parse_type(text: str, /, **sizes: SizeLike) -> Type:
    """Read a type from its text form; keyword sizes bind symbols (``parse_type("b m", m=512)``).

    >>> str(parse_type("y k h, x k h"))
    'y k h, x k h'

    A type is syntax: a segment may name an axis twice (an einsum's operand ``"b b"`` reads the diagonal). A box whose
    own tensors repeat a name refuses them with an error naming the box and the axis (``ncd.Linear("m m -> k")``:
    ``L: tensor 'm m' names axis m twice``), and so does weaving a box over a wire of a name it already has.

    >>> str(parse_type("b b"))
    'b b'
    """
    if not isinstance(text, str):
        raise ParseError(f"parse_type expects text such as 'b t m, b s m', not {type(text).__name__}")
    result = _parse_type_text(text)
    if sizes:
        result = result.subs({symbol(k): size(v) for k, v in sizes.items()})
    return result


def as_type(value: TypeLike) -> Type:
    if isinstance(value, Type):
        return value
    if isinstance(value, Segment):
        return Type((value,))
    if isinstance(value, str):
        return parse_type(value)
    raise ParseError(f"expected a type or its text form, not {type(value).__name__} {value!r}")


def _reads(token: str) -> bool:
    try:
        parse_axis(token)
    except ParseError:
        return False
    return True


def as_axis(value: AxisLike) -> Axis:
    if isinstance(value, Axis):
        return value
    if isinstance(value, str):
        try:
            return parse_axis(value)
        except ParseError:
            tokens = _split_tokens(value)  # 'a b' where one axis is read was "cannot read size 'a b'"
            if len(tokens) > 1 and all(_reads(t) for t in tokens):
                raise ParseError(f"expected one axis, not the {len(tokens)} axes {value!r}: this argument takes a "
                                 f"single axis (e.g. {tokens[0]!r})") from None
            raise
    raise ParseError(f"expected an axis or its text form, not {type(value).__name__} {value!r}")


def numel(axes: Iterable[Axis]) -> Size:
    """The number of elements of a tensor with these axes: the product of their sizes."""
    result: Size = sympy.Integer(1)
    for a in axes:
        result = result * a.size
    return result
