"""Importer primitives: opaque ATen operators, tensors held by a model, and regrouped wires.

``ncd.trace`` is total: an ATen operator it cannot draw in the paper's vocabulary becomes an
:class:`OpaqueOp` box labelled with the operator's name and its input and output shapes.
Its lowering calls the same ATen overload with the captured constant arguments, so a traced
diagram still computes exactly what the model computed.  Tensors that the model holds and
that no recognised primitive absorbed become :class:`ParameterOp` (learned, drawn bold) or
:class:`ConstantOp` boxes with no inputs, and :class:`ViewOp` regroups the wires of one
segment without moving data (``m -> k h``, ``k h -> m``, renaming a wire, adding or removing
a size-1 wire).

>>> import ncd
>>> from ncd.prims.opaque import Opaque, View
>>> box = Opaque("aten.cumsum.default", "b t", "b t", (("$in", 0), -1))
>>> box.text()
'cumsum (b t → b t)'
>>> str(View("b t m:6", "b t k:2 h:3").cod)
'b t k:2 h:3'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.size import Size, evaluate, size_text

__all__ = ["OpaqueOp", "ParameterOp", "ConstantOp", "ViewOp", "Opaque", "Parameter", "Constant", "View", "DTYPES"]

#: dtype names a traced tensor may carry (``torch.<name>``).
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _shape_text(typ: Type) -> str:
    return ", ".join(" ".join(seg.names) or "()" for seg in typ) or "∅"


@dataclass(frozen=True)
class OpaqueOp(Primitive):
    """An ATen operator ``target`` applied to the input segments, with captured constant arguments.

    ``args`` and ``kwargs`` (a tuple of ``(name, value)`` pairs) are the call's arguments,
    where ``("$in", j)`` stands for input segment ``j`` and ``("$dtype", "float32")``,
    ``("$device", "cpu")``, ``("$layout", ...)``, ``("$memory_format", ...)`` for torch
    objects.  ``picks`` selects outputs when the operator returns a tuple (empty: one tensor).
    """

    target: str
    inputs: Type
    outputs: Type
    args: tuple[Any, ...] = ()
    kwargs: tuple[Any, ...] = ()
    picks: tuple[int, ...] = ()

    op: ClassVar[str] = "opaque"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"
    broadcasts: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.target.startswith(("aten.", "prims.", "operator.", "torch.")) or any(c in self.target for c in "()[]{} ;"):
            raise ParseError(f"opaque box: {self.target!r} is not the name of an ATen operator (such as 'aten.cumsum.default')")
        if self.picks and len(self.picks) != len(self.outputs):
            raise ParseError(f"opaque box {self.target}: {len(self.picks)} picked results for"
                             f" {len(self.outputs)} output segments '{self.outputs}'")

    def signature(self) -> tuple[Type, Type]:
        return self.inputs, self.outputs

    def label(self) -> str:
        name = self.target.split(".")[1] if self.target.startswith("aten.") else self.target
        return f"{name} ({_shape_text(self.inputs)} → {_shape_text(self.outputs)})"

    def hint(self) -> str:
        parts = self.target.split(".")
        return parts[1] if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class ParameterOp(Primitive):
    """A learned tensor of the model, used directly by the operations after it (drawn bold)."""

    segment: Segment
    name: str = ""

    op: ClassVar[str] = "parameter"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "structural"
    learned: ClassVar[bool] = True

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((self.segment,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": self.segment.sizes}

    def label(self) -> str:
        return "θ" + (f" {self.name}" if self.name else "")

    def hint(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.name else "weight"


@dataclass(frozen=True)
class ConstantOp(Primitive):
    """A tensor that does not depend on the inputs: a buffer of the model, or a number (``value``)."""

    segment: Segment
    dtype: str = "float32"
    value: float | None = None
    name: str = ""

    op: ClassVar[str] = "constant"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "structural"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ParseError(f"constant {self.name or ''}: unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((self.segment,))

    def label(self) -> str:
        if self.value is not None:
            return _number(self.value)
        return "const" + (f" {self.name}" if self.name else "")

    def hint(self) -> str:
        return (self.name.rsplit(".", 1)[-1] if self.name else "const") or "const"


def _number(value: float) -> str:
    if math.isinf(value):
        return "-∞" if value < 0 else "∞"
    return repr(int(value)) if float(value).is_integer() else f"{value:.4g}"


@dataclass(frozen=True)
class ViewOp(Primitive):
    """The same entries read with other wires: split ``m -> k h``, merge, rename, add or drop size-1 wires."""

    source: Segment
    target: Segment

    op: ClassVar[str] = "view"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        a, b = _numel(self.source), _numel(self.target)
        if a is not None and b is not None and a != b:
            raise SizeError(
                f"view '{self.source}' -> '{self.target}': {' * '.join(size_text(s) for s in self.source.sizes) or '1'} = {a}"
                f" entries cannot be read as {' * '.join(size_text(s) for s in self.target.sizes) or '1'} = {b}"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "▮"


def _numel(seg: Segment) -> int | None:
    try:
        total = 1
        for s in seg.sizes:
            total *= evaluate(s)
        return total
    except Exception:
        return None


def _segment(value: TypeLike, what: str) -> Segment:
    if isinstance(value, str) and not value.strip():
        return Segment(())  # a scalar
    typ = as_type(value)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Opaque(target: str, inputs: TypeLike, outputs: TypeLike, args: tuple[Any, ...] = (), kwargs: tuple[Any, ...] = (),
           picks: tuple[int, ...] = ()) -> Box:
    """An opaque box calling ATen operator ``target`` (see :class:`OpaqueOp` for ``args``)."""
    return Box.make(OpaqueOp(target, as_type(inputs), as_type(outputs), tuple(args), tuple(kwargs), tuple(picks)))


def Parameter(segment: TypeLike, name: str = "") -> Box:
    """A learned tensor with the given axes, e.g. ``Parameter("m", "ln.weight")``."""
    return Box.make(ParameterOp(_segment(segment, "a parameter"), name))


def Constant(segment: TypeLike, dtype: str = "float32", value: float | None = None, name: str = "") -> Box:
    """A constant tensor (a buffer, loaded with the parameters) or, with ``value``, a number."""
    return Box.make(ConstantOp(_segment(segment, "a constant"), dtype, None if value is None else float(value), name))


def View(source: TypeLike, target: TypeLike) -> Box:
    """Read one segment with other wires of the same total size, e.g. ``View("m:6", "k:2 h:3")``."""
    return Box.make(ViewOp(_segment(source, "a view"), _segment(target, "a view")))
