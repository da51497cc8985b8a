"""Linear wiring: learned linear maps **L** / **L₊**, einsum wirings, and the unit (cup).

Einsum specs name axes with spaces between them, like the text form of types:
``"y k h, x k h -> y x h"`` contracts ``k``, keeps ``h`` on a diagonal and takes the
outer product over ``y`` and ``x``.

>>> import ncd
>>> L = ncd.Linear("m -> k h", bias=True, name="Q")
>>> L.text(), str(L.dom), str(L.cod)
('L₊^Q', 'm', 'k h')
>>> e = ncd.Einsum("y k h, x k h -> y x h")
>>> str(e.dom), str(e.cod)
('y k h, x k h', 'y x h')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size, size_text, sizes_equal

__all__ = ["LinearOp", "EinsumOp", "UnitOp", "Linear", "Einsum", "Unit", "split_spec"]


def split_spec(spec: str, what: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count("->") != 1:
        raise ParseError(f"{what} spec {spec!r} must have the form 'inputs -> outputs', e.g. 'm -> k h'")
    left, right = spec.split("->")
    return left.strip(), right.strip()


@dataclass(frozen=True)
class LinearOp(Primitive):
    """A learned linear map from the axes ``dom_axes`` to ``cod_axes`` (with bias: **L₊**)."""

    dom_axes: Segment
    cod_axes: Segment
    bias: bool = False

    op: ClassVar[str] = "linear"
    weave_policy = weaving.always
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes,)), Type((self.cod_axes,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        shapes: dict[str, tuple[Size, ...]] = {"weight": self.cod_axes.sizes + self.dom_axes.sizes}
        if self.bias:
            shapes["bias"] = self.cod_axes.sizes
        return shapes

    def label(self) -> str:
        return "L₊" if self.bias else "L"


@dataclass(frozen=True)
class EinsumOp(Primitive):
    """A multilinear wiring: inputs ``inputs`` (one segment each), output axes ``output``.

    Axes are identified by name: a name shared by inputs and kept in the output is a
    diagonal, shared and dropped is a contraction, present in one input only and kept is
    an outer product, and a reordering is a transpose.
    """

    inputs: Type
    output: Segment

    op: ClassVar[str] = "einsum"
    weave_policy = weaving.always
    repeated_axes: ClassVar[bool] = True
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "multilinear"

    def __post_init__(self) -> None:
        known: dict[str, Axis] = {}
        for seg in self.inputs:
            for a in seg:
                if a.name in known and not sizes_equal(known[a.name].size, a.size):
                    raise SizeError(
                        f"einsum '{self.spec()}': axis {a.name} has size {size_text(known[a.name].size)}"
                        f" in one input and {size_text(a.size)} in another"
                    )
                known.setdefault(a.name, a)
        for a in self.output:
            if a.name not in known:
                raise ParseError(f"einsum '{self.spec()}': output axis {a.name} is in no input")
        if len(set(self.output.names)) != len(self.output.names):
            raise ParseError(f"einsum '{self.spec()}': an output axis occurs twice")

    def signature(self) -> tuple[Type, Type]:
        return self.inputs, Type((self.output,))

    def spec(self) -> str:
        return f"{', '.join(' '.join(s.names) for s in self.inputs)} -> {' '.join(self.output.names)}"

    def label(self) -> str:
        return "einsum"

    @property
    def contracted(self) -> tuple[str, ...]:
        out = set(self.output.names)
        seen: list[str] = []
        for seg in self.inputs:
            for n in seg.names:
                if n not in out and n not in seen:
                    seen.append(n)
        return tuple(seen)


@dataclass(frozen=True)
class UnitOp(Primitive):
    """The cup: creates two equal wires carrying the identity matrix (no inputs)."""

    first: Axis
    second: Axis

    op: ClassVar[str] = "unit"
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if not sizes_equal(self.first.size, self.second.size):
            raise SizeError(
                f"unit: the two wires must have equal sizes, not {self.first.name}={size_text(self.first.size)}"
                f" and {self.second.name}={size_text(self.second.size)}"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type(()), Type((Segment((self.first, self.second)),))

    def label(self) -> str:
        return "∪"


def Linear(spec: str, bias: bool = False, name: str | None = None) -> Box:
    """A learned linear map **L** (``bias=True``: **L₊**), e.g. ``Linear("m -> k h")``.

    It is broadcast over every axis it does not touch when composed after a larger tensor.
    """
    left, right = split_spec(spec, "linear")
    dom, cod = parse_type(left), parse_type(right)
    if len(dom) != 1 or len(cod) != 1:
        raise ParseError(f"linear spec {spec!r} must map one segment to one segment")
    if not dom[0].axes or not cod[0].axes:
        raise ParseError(f"linear spec {spec!r} needs at least one axis on each side")
    return Box.make(LinearOp(dom[0], cod[0], bool(bias)), name)


def Einsum(spec: str, name: str | None = None) -> Box:
    """A multilinear wiring, e.g. ``Einsum("y k h, x k h -> y x h")`` (sizes may be given as ``k:64``)."""
    left, right = split_spec(spec, "einsum")
    inputs = parse_type(left)
    if not inputs.segments:
        raise ParseError(f"einsum spec {spec!r} has no inputs; use ncd.Unit for the cup")
    known = {a.name: a for seg in inputs for a in seg}
    out_names = parse_type(right)
    if len(out_names) > 1:
        raise ParseError(f"einsum spec {spec!r} must have a single output segment")
    output = Segment(tuple(known.get(a.name, a) for a in (out_names[0] if out_names.segments else ())))
    return Box.make(EinsumOp(inputs, output), name)


def Unit(first: str, second: str) -> Box:
    """The cup: ``Unit("a", "b")`` creates wires ``a b`` holding the identity matrix."""
    a, b = parse_type(first)[0].axes, parse_type(second)[0].axes
    if len(a) != 1 or len(b) != 1:
        raise ParseError("unit takes one axis on each side, e.g. Unit('a', 'b:a')")
    return Box.make(UnitOp(a[0], b[0]))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(LinearOp, aten=("aten.linear", "aten.addmm", "aten.mm", "aten.matmul"))
IMPORT.known(EinsumOp, aten=("aten.einsum", "aten.matmul", "aten.bmm", "aten.mm", "aten.mean", "aten.sum",
                             "aten.scaled_dot_product_attention"))
IMPORT.unsupported(UnitOp, "a constant one-hot wiring of the diagram language; traced models have no such call")
