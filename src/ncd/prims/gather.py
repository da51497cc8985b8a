"""Index computations the importer meets: gather along an axis, argmax, comparisons, casts.

These are the boxes ``ncd.trace`` needs for pooling on a data-dependent position (CLIP's
end-of-text token: ``x[arange(b), (ids == eos).int().argmax(-1)]``).  Each acts on few
axes and is woven over the rest, like an embedding:

* ``Gather("t")`` takes a float segment ``t`` and an index segment ``[t]`` and gives the
  entry at that position: ``"t, [t] -> ()"``.  Woven over ``b`` on both inputs (a
  diagonal) and over ``m`` on the first only, it is ``x[b, i[b], m]``.  With positions
  ``"j [t]"`` it takes several entries (``"t, j [t] -> j"``).
* ``ArgMax("t")`` gives the position of the largest entry: ``"t -> [t]"`` (the first one
  on ties, as torch does); the input may be float, index or bool.
* ``Compare("==", 3, "[v]")`` compares a scalar with a number and gives a bool; ``Cast``
  reads a scalar segment as another dtype (``bool -> [2]``, ``[v] -> ()``).
* ``Arithmetic("//", 2, "[9]", "[5]")`` is a binary operator between a scalar and a Python
  number of any type, on either side (``1 - x``, ``ids * 3 + 1``, ``2 ** x``), with the
  dtype of its result as torch gives it.

They are drawn as labelled boxes (family ``opaque``, the importer's family).

>>> import ncd
>>> from ncd.prims.gather import ArgMax, Cast, Compare, Gather
>>> str((ncd.Identity.of("b t m, b [t]") >> Gather("t")).cod)
'b m'
>>> str((ncd.Identity.of("b t [50]") >> Compare("==", 7, "[50]") >> Cast("bool", "[2]") >> ArgMax("t [2]")).cod)
'b [t]'
>>> Arithmetic("-", 1, reflected=True).text()
'1 − ·'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, TypeLike, as_type, parse_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import size_text, sizes_equal

__all__ = ["GatherOp", "ArgMaxOp", "CompareOp", "CastOp", "ArithmeticOp", "Gather", "ArgMax", "Compare", "Cast",
           "Arithmetic", "RELATIONS", "OPERATORS"]

#: comparison relations and their torch operators
RELATIONS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


@dataclass(frozen=True)
class GatherOp(Primitive):
    """The entry of ``axis`` at the positions of an index segment ``positions`` (range: the axis' size)."""

    axis: Axis
    positions: Segment

    op: ClassVar[str] = "gather"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        rng = self.positions.range
        if self.positions.dtype != "index" or rng is None or not sizes_equal(rng, self.axis.size):
            raise SizeError(f"gather along axis {self.axis.name} of size {size_text(self.axis.size)}: the positions"
                            f" '{self.positions}' must be an index segment with range [{size_text(self.axis.size)}]")
        if self.axis.name in self.positions.names:
            raise ParseError(f"gather along axis {self.axis.name}: the positions '{self.positions}' reuse its name")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((self.axis,)), self.positions)), Type((Segment(self.positions.axes),))

    def label(self) -> str:
        return f"gather {self.axis.name}"


@dataclass(frozen=True)
class ArgMaxOp(Primitive):
    """The position of the largest entry of a one-axis segment ``source`` (first on ties)."""

    source: Segment

    op: ClassVar[str] = "argmax"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if len(self.source.axes) != 1:
            raise ParseError(f"argmax takes one axis, not '{self.source}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((Segment((), "index", self.source.axes[0].size),))

    def label(self) -> str:
        return f"argmax {self.source.axes[0].name}"


@dataclass(frozen=True)
class CompareOp(Primitive):
    """``x <relation> value`` for a scalar segment ``source`` (float or index): a bool."""

    relation: str
    value: float
    source: Segment

    op: ClassVar[str] = "compare"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ParseError(f"compare: unknown relation {self.relation!r}; known: {' '.join(RELATIONS)}")
        if self.source.axes or self.source.dtype == "bool":
            raise ParseError(f"compare takes a scalar float or index segment, not '{self.source}'")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ParseError(f"compare: {self.value!r} is not a number")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((Segment((), "bool"),))

    def label(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.relation} {value}"


@dataclass(frozen=True)
class CastOp(Primitive):
    """A scalar read as another dtype: ``bool -> [2]`` (0/1), ``[v] -> ()`` (a float), ``() -> bool``, ..."""

    source: Segment
    target: Segment

    op: ClassVar[str] = "cast"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.source.axes or self.target.axes:
            raise ParseError(f"cast takes scalar segments, not '{self.source}' -> '{self.target}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "cast"


#: binary operators between a scalar and a Python number, and how they are drawn
OPERATORS = {"+": "+", "-": "−", "*": "×", "/": "/", "//": "//", "%": "mod", "**": "^", "min": "min", "max": "max"}


@dataclass(frozen=True)
class ArithmeticOp(Primitive):
    """``x ∘ value`` (or ``value ∘ x`` when ``reflected``) for a scalar segment and a Python number of any type.

    ``target`` is the result's dtype as torch gives it (an integer tensor divided by a number is a float).
    """

    operator: str
    value: float | int | bool
    source: Segment
    target: Segment
    reflected: bool = False

    op: ClassVar[str] = "arithmetic"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ParseError(f"arithmetic: unknown operator {self.operator!r}; known: {' '.join(OPERATORS)}")
        if not isinstance(self.value, (bool, int, float)):
            raise ParseError(f"arithmetic {self.operator}: {self.value!r} is not a Python number")
        if self.source.axes or self.target.axes:
            raise ParseError(f"arithmetic takes scalar segments, not '{self.source}' -> '{self.target}'")
        if self.reflected and self.operator in ("min", "max"):
            raise ParseError(f"arithmetic {self.operator} is symmetric: it is never reflected")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        value = repr(self.value)
        if self.operator in ("min", "max"):
            return f"{self.operator}(·, {value})"
        return f"{value} {OPERATORS[self.operator]} ·" if self.reflected else f"{OPERATORS[self.operator]} {value}"


def _scalar(value: TypeLike, what: str) -> Segment:
    if isinstance(value, str) and value.strip() in ("", "float"):
        return Segment(())
    if isinstance(value, str) and value.strip() == "bool":
        return Segment((), "bool")
    typ = as_type(value)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Gather(axis: str | Axis, positions: TypeLike = "") -> Box:
    """Take entries along ``axis`` at the positions of an index segment (default: one position, ``[axis]``)."""
    ax = parse_axis(axis) if isinstance(axis, str) else axis
    pos = _scalar(positions, "gather") if positions else Segment((), "index", ax.size)
    return Box.make(GatherOp(ax, pos if pos.dtype != "float" else Segment(pos.axes, "index", ax.size)))


def ArgMax(source: TypeLike) -> Box:
    """The position of the largest entry along the one axis of ``source`` (e.g. ``"t"``, ``"t [2]"``, ``"t [bool]"``)."""
    return Box.make(ArgMaxOp(_scalar(source, "argmax")))


def Compare(relation: str, value: float, source: TypeLike = "") -> Box:
    """``x == value`` (or ``!= < <= > >=``) for a scalar segment ``source`` (``""``: a float, ``"[v]"``: an index)."""
    return Box.make(CompareOp(relation, value, _scalar(source, "compare")))


def Cast(source: TypeLike, target: TypeLike) -> Box:
    """A scalar read as another dtype: ``Cast("bool", "[2]")``, ``Cast("[v]", "")``."""
    return Box.make(CastOp(_scalar(source, "cast"), _scalar(target, "cast")))


def Arithmetic(operator: str, value: float | int | bool, source: TypeLike = "", target: TypeLike | None = None,
               reflected: bool = False) -> Box:
    """``x ∘ value`` for a scalar ``source`` (``""``: a float, ``"[v]"``: an index); ``reflected``: ``value ∘ x``.
    ``target`` (default: the source's dtype) is the result's dtype, as torch gives it."""
    src = _scalar(source, "arithmetic")
    return Box.make(ArithmeticOp(operator, value, src, src if target is None else _scalar(target, "arithmetic"), reflected))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(GatherOp, aten=("aten.index",))
IMPORT.known(ArgMaxOp, aten=("aten.argmax",))
IMPORT.known(CompareOp, aten=("aten.eq", "aten.ne", "aten.lt", "aten.le", "aten.gt", "aten.ge"))
IMPORT.known(CastOp, aten=("aten.to", "aten._to_copy"))
IMPORT.known(ArithmeticOp, by="ncd.trace.scalars")
