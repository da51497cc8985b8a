"""Primitives: the operations inside boxes, each a frozen record with a type rule.

A primitive is declared once, as a dataclass subclass of :class:`Primitive` whose fields
are IR values (axes, segments, types, sizes, numbers, strings, tuples of these).  Its
``signature()`` is its type rule.  Interpreters (lowering, drawing, costs, backward)
keep their own rule tables keyed by the primitive's ``op`` name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import sympy

from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.size import Size, substitute

__all__ = ["Primitive", "PRIMITIVES", "map_values", "map_axes", "map_fields", "Kind"]

Kind = Literal["linear", "multilinear", "nonlinear", "structural"]

PRIMITIVES: dict[str, type[Primitive]] = {}
P = TypeVar("P", bound="Primitive")


@dataclasses.dataclass(frozen=True)
class Primitive:
    """Base of every primitive.  Subclasses set ``op``, ``family``, ``kind`` and ``learned``."""

    op: ClassVar[str] = ""
    family: ClassVar[str] = ""
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = False
    #: Whether the lowered function broadcasts missing leading axes of its inputs (like ``+``).
    broadcasts: ClassVar[bool] = True
    #: Whether the lowering is torch's entrywise broadcasting of its operands (``a + b``, ``torch.where(c, a, b)``), so an
    #: operand without axes stays a 0-dim tensor when the others are woven: torch's type promotion sets 0-dim tensors
    #: apart (a float32 number added to float16 values gives float16), and unsqueezed to ``(1, 1)`` it would not be.
    zero_dim_operands: ClassVar[bool] = False
    #: Which woven layouts the lowering handles in place (``ncd.ir.weaving``); others move woven axes to the front.
    weave_policy: ClassVar[weaving.WeavePolicy] = weaving.never
    #: Whether one tensor may carry two wires of the same name (an einsum's diagonal ``a a -> a``); else refused.
    repeated_axes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("op"):
            if cls.op in PRIMITIVES and PRIMITIVES[cls.op].__qualname__ != cls.__qualname__:
                raise RuntimeError(f"primitive op {cls.op!r} is declared twice")
            PRIMITIVES[cls.op] = cls

    def signature(self) -> tuple[Type, Type]:
        """The type rule: domain and codomain."""
        raise NotImplementedError

    def params(self) -> dict[str, tuple[Size, ...]]:
        """Learned parameter shapes, by name (empty for unlearned primitives)."""
        return {}

    def label(self) -> str:
        """Short text naming the operation, for messages and drawings."""
        return self.op

    def hint(self) -> str:
        """A short identifier for generated code (variable names)."""
        return self.op

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        """This primitive with size symbols substituted."""
        if not mapping:
            return self
        changes = {
            f.name: map_values(getattr(self, f.name), lambda v: _subs_value(v, mapping))
            for f in dataclasses.fields(self)
        }
        return dataclasses.replace(self, **changes)

    def free_symbols(self) -> set[sympy.Symbol]:
        """Every size symbol in this primitive's fields."""
        found: set[sympy.Symbol] = set()
        for name in _field_names(type(self)):
            _add_symbols(getattr(self, name), found)
        return found

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The names of a primitive class's fields, read once per class (``dataclasses.fields`` builds them per call)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _add_symbols(value: Any, found: set[sympy.Symbol]) -> None:
    """The size symbols of a field's value (IR values inside nested tuples, as :func:`map_values` reaches them)."""
    if isinstance(value, tuple):
        for v in value:
            _add_symbols(v, found)
    elif isinstance(value, Type):
        found.update(value.free_symbols)
    elif isinstance(value, Segment):
        found.update(Type((value,)).free_symbols)
    elif isinstance(value, Axis):
        if not value.size.is_Integer:  # (a number has no symbols)
            found.update(value.size.free_symbols)
    elif isinstance(value, sympy.Basic):
        if not value.is_Integer:
            found.update(value.free_symbols)


def _subs_value(value: Any, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Any:
    if isinstance(value, (Axis, Segment, Type)):
        return value.subs(mapping)
    if isinstance(value, sympy.Basic):
        return substitute(value, mapping)
    return value


def map_values(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every leaf IR value inside nested tuples."""
    if isinstance(value, tuple):
        return tuple(map_values(v, fn) for v in value)
    return fn(value)


def map_axes(value: Any, fn: Callable[[Axis], Axis]) -> Any:
    """``value`` with ``fn`` applied to each of its axes when it is an axis, a segment or a type; else ``value``."""
    if isinstance(value, Axis):
        return fn(value)
    if isinstance(value, Segment):
        return value.with_axes(fn(a) for a in value.axes)
    if isinstance(value, Type):
        return Type(tuple(seg.with_axes(fn(a) for a in seg.axes) for seg in value.segments))
    return value


def map_fields(prim: P, fn: Callable[[Any], Any]) -> P:
    """``prim`` with ``fn`` applied to every leaf value of its fields (as :func:`map_values` reaches them); ``prim``
    itself when every field comes back equal.  The resizes of sharding and decoding are built on it."""
    changes = {f.name: map_values(getattr(prim, f.name), fn) for f in dataclasses.fields(prim)}
    if all(changes[k] is getattr(prim, k) or changes[k] == getattr(prim, k) for k in changes):
        return prim
    return dataclasses.replace(prim, **changes)
