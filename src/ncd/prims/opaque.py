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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import LoweringError, ParseError, SizeError
from ncd.ir.axes import SCALAR, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, evaluate, size_text, symbolic_lowering
from ncd.prims.kinds import transpose
from ncd.prims.opaque_calls import CASTS as CASTS  # the call as data and as source (ncd.prims.opaque_calls)
from ncd.prims.opaque_calls import (
    DTYPES,
    LAYOUTS,
    MEMORY_FORMATS,
    call_text,
    check_call,
    check_shapes,
    guarded_results,
    resolve_target,
    size_guards,
)
from ncd.prims.opaque_measure import measure_opaque
from ncd.prims.structure import DeleteOp, cot

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["call_text", "OpaqueOp", "ParameterOp", "ConstantOp", "ViewOp", "Opaque", "Parameter", "Constant", "View", "DTYPES",
           "LAYOUTS", "MEMORY_FORMATS", "check_call", "resolve_target", "check_shapes"]

def _shape_text(typ: Type) -> str:
    """The segments' axis names, a run of three or more equal ones written once with its count (a stack of 31 frames:
    ``31× b 1``, so the label stays as wide as a few segments).

    >>> _shape_text(as_type("b 1, b 1, b 1, b 1, t, b t"))
    '4× b 1, t, b t'
    """
    texts = [" ".join(seg.names) or "()" for seg in typ]
    parts: list[str] = []
    k = 0
    while k < len(texts):
        n = 1
        while k + n < len(texts) and texts[k + n] == texts[k]:
            n += 1
        parts.extend([f"{n}× {texts[k]}"] if n >= 3 else texts[k:k + n])
        k += n
    return ", ".join(parts) or "∅"


@dataclass(frozen=True)
class OpaqueOp(Primitive):
    """An ATen operator ``target`` applied to the input segments, with captured constant arguments.

    ``args`` and ``kwargs`` (a tuple of ``(name, value)`` pairs) are the call's arguments,
    where ``("$in", j)`` stands for input segment ``j`` (``("$as", (j, "int32"))``: cast to the integer type it
    was recorded with), and ``("$dtype", "float32")``,
    ``("$device", "cpu")``, ``("$layout", ...)``, ``("$memory_format", ...)`` for torch
    objects, ``("$empty", ("float32", (2, 0)))`` for a tensor without entries.
    ``picks`` selects outputs when the operator returns a tuple (empty: one tensor).
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
        check_call(self.target, len(self.inputs) if isinstance(self.inputs, Type) else 0, self.args, self.kwargs)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in self.picks):
            raise ParseError(f"opaque box {self.target}: picks {self.picks!r} are not result positions")
        if self.picks and len(self.picks) != len(self.outputs):
            raise ParseError(f"opaque box {self.target}: {len(self.picks)} picked results for"
                             f" {len(self.outputs)} output segments '{self.outputs}'")

    def signature(self) -> tuple[Type, Type]:
        return self.inputs, self.outputs

    def label(self) -> str:
        name = self.target.split(".")[1] if self.target.startswith(("aten.", "ncd_function.")) else self.target
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


#: the largest finite number of each float type by its name (``torch.finfo(torch.float32).min``, a masked fill's value,
#: is ``min(float32)``, not a 39-digit integer); float16's, 65504, reads as itself
EXTREMES = {3.3895313892515355e38: "bfloat16", 3.4028234663852886e38: "float32", 1.7976931348623157e308: "float64"}


def _number(value: float) -> str:
    """A number box's label: an integer as its digits, the extremes of a float type by name, others to 4 digits.

    >>> _number(-3.4028234663852886e38), _number(1e30), _number(-1e9), _number(0.125), _number(float("-inf"))
    ('min(float32)', '1e+30', '-1000000000', '0.125', '-∞')
    """
    if math.isinf(value):
        return "-∞" if value < 0 else "∞"
    if abs(value) in EXTREMES:
        return f"{'min' if value < 0 else 'max'}({EXTREMES[abs(value)]})"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:.4g}"


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
    """The number of entries, or None when a size is not a number (a symbol: the ``b``, ``t`` of a traced diagram)."""
    sizes = seg.sizes
    if all(s.is_Integer for s in sizes):  # the usual case, whole numbers: what evaluate gives each
        return math.prod(int(s) for s in sizes)
    if not symbolic_lowering() and any(s.free_symbols for s in seg.sizes):
        return None  # what evaluate would raise, without printing the message no one reads
    try:
        total = 1
        for s in seg.sizes:
            total *= evaluate(s)
        return total
    except Exception:
        return None


def _segment(value: TypeLike, what: str) -> Segment:
    if isinstance(value, str) and not value.strip():
        return SCALAR  # a scalar
    typ = as_type(value)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Opaque(target: str, inputs: TypeLike, outputs: TypeLike, args: tuple[Any, ...] = (), kwargs: tuple[Any, ...] = (),
           picks: tuple[int, ...] = ()) -> Box:
    """An opaque box calling ATen operator ``target`` (see :class:`OpaqueOp` for ``args``)."""
    return Box.make(OpaqueOp(target, as_type(inputs), as_type(outputs), tuple(args), tuple(kwargs), tuple(picks)))


def _one_segment(type_: TypeLike, what: str) -> Segment:
    t = as_type(type_)
    if len(t) != 1 or not t[0].axes:
        raise ParseError(f"{what} takes one segment with at least one axis, e.g. '~t m', not '{t}'")
    return t[0]


def Parameter(type_: TypeLike, name: str | None = None) -> Box:
    """A learned tensor with no input (bold): learned positions, a class token, a bias to add.

    ``name`` (e.g. ``"ln.weight"``) labels the box and names the tensor when lowered.
    """
    seg = _one_segment(type_, "Parameter")
    return Box.make(ParameterOp(seg, name or ""), name)


def Constant(segment: TypeLike, dtype: str = "float32", value: float | None = None, name: str = "") -> Box:
    """A constant tensor (a buffer, loaded with the parameters) or, with ``value``, a number."""
    return Box.make(ConstantOp(_segment(segment, "a constant"), dtype, None if value is None else float(value), name))


def View(source: TypeLike, target: TypeLike) -> Box:
    """Read one segment with other wires of the same total size, e.g. ``View("m:6", "k:2 h:3")``."""
    return Box.make(ViewOp(_segment(source, "a view"), _segment(target, "a view")))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(OpaqueOp, by="ncd.trace.convert")
IMPORT.known(ParameterOp, ConstantOp, by="ncd.trace.learned")
IMPORT.known(ViewOp, aten=("aten.view", "aten.reshape", "aten.unsqueeze", "aten.squeeze", "aten.flatten"))


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(OpaqueOp)
def lower_opaque(prim: OpaqueOp, ctx: RuleContext) -> list[str]:
    check_shapes(prim)
    call = call_text(prim, [v.var for v in ctx.args])
    dims = [ctx.own_dims("cod", j) for j in range(len(prim.outputs))]
    guarded = bool(guarded_results(prim, dims))  # (its result's shape depends on values)
    if not prim.picks and not guarded:
        return [call]
    if prim.picks:
        result = ctx.em.fresh(prim.hint() + "_out")
        ctx.em.line(f"{result} = {call}")
        outs = [f"{result}[{k}]" for k in prim.picks]
    else:  # (bound as a value: the function may return it)
        seg = prim.outputs[0]
        outs = [ctx.em.assign(prim.hint() + "_out", call, tuple(seg.axes), seg.dtype)]
    for line in size_guards(prim, outs, dims):
        ctx.em.line(line)
    return outs


def _shape(ctx: RuleContext, seg: Any) -> str:
    sizes = [str(evaluate(a.size, what=f"axis {a.name}")) for a in seg.axes]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"


def _attr_hint(hint: str) -> str:
    import torch.nn

    return hint + "_" if hasattr(torch.nn.Module, hint) else hint


@LOWERING.rule(ParameterOp)
def lower_parameter(prim: ParameterOp, ctx: RuleContext) -> list[str]:
    dtype = ", dtype=torch.complex64" if prim.segment.dtype == "complex" else ""
    return [ctx.em.attr(_attr_hint(prim.hint()), f"nn.Parameter(torch.zeros({_shape(ctx, prim.segment)}{dtype}))")]


@LOWERING.rule(ConstantOp)
def lower_constant(prim: ConstantOp, ctx: RuleContext) -> list[str]:
    shape = _shape(ctx, prim.segment)
    if prim.dtype not in DTYPES:
        raise LoweringError(f"constant {prim.name}: unknown dtype {prim.dtype!r}; known: {', '.join(DTYPES)}")
    if prim.value is not None:
        if isinstance(prim.value, bool) or not isinstance(prim.value, (int, float)):
            raise LoweringError(f"constant {prim.name}: value {prim.value!r} is not a number")
        value = float(prim.value)
        text = ("float('-inf')" if value < 0 else "float('inf')") if math.isinf(value) else \
            "float('nan')" if math.isnan(value) else repr(value)
        if prim.dtype == "bool":
            text = repr(bool(value))
        elif prim.dtype.startswith(("int", "uint")):
            text = repr(int(value))
        return [f"torch.full({shape}, {text}, dtype=torch.{prim.dtype})"]
    return [ctx.em.attr(_attr_hint(prim.hint()), f"nn.Buffer(torch.zeros({shape}, dtype=torch.{prim.dtype}))")]


@LOWERING.rule(ViewOp)
def lower_view(prim: ViewOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    n = len(prim.source)
    sizes = [str(evaluate(a.size, what=f"axis {a.name}")) for a in prim.target.axes]
    if [a.size for a in prim.source.axes] == [a.size for a in prim.target.axes]:
        return [x]  # same sizes: only the names change
    lead = f"*{x}.shape[:{x}.dim() - {n}]" if n else f"*{x}.shape"
    if not sizes:  # to no wires (a 0-d value): the shape as a tuple, which may be empty
        return [f"{x}.reshape(({lead},))"]
    return [f"{x}.reshape({', '.join([lead] + sizes)})"]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(ParameterOp)
def cost_parameter(prim: ParameterOp, ctx: CostContext) -> list[Tensor]:
    return [ctx.parameter(ctx.out_axes[0])]


@BACKWARD.rule(ParameterOp)
def backward_parameter(prim: ParameterOp, box: Box, builder: Builder) -> BoxBackward:
    """A learned tensor's cotangent is its gradient."""
    return BoxBackward((), Identity(cot(box.cod)), ("weight",))


@COST.rule(ConstantOp)
def cost_constant(prim: ConstantOp, ctx: CostContext) -> list[Tensor]:
    if prim.value is None:  # a buffer
        t = ctx.parameter(ctx.out_axes[0])
        return [replace(t, grad=False, dtype=_dtype(prim.dtype), dense=True)]
    return [ctx.new(ctx.out_axes[0], grad=False, dtype=_dtype(prim.dtype))]


def _dtype(name: str) -> str:
    return "bool" if name == "bool" else "index" if name.startswith(("int", "uint")) else "complex" if name == "complex64" \
        else "float"


@BACKWARD.rule(ConstantOp)
def backward_constant(prim: ConstantOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Box(DeleteOp(cot(box.cod))) if len(cot(box.cod)) else Identity(cot(box.cod)))


@COST.rule(ViewOp)
def cost_view(prim: ViewOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if [a.size for a in prim.source] == [a.size for a in prim.target]:
        names = dict(zip(prim.source.names, prim.target.names))
        return [replace(x, axes=ctx.out_axes[0], order=tuple(names.get(n, n) for n in x.order))]
    kept, made = [a for a in prim.source if a.size != 1], [a for a in prim.target if a.size != 1]
    if [a.size for a in kept] == [a.size for a in made]:  # size-1 wires added or dropped: a view, whatever the strides
        names, ones = {a.name: b.name for a, b in zip(kept, made)}, {a.name for a in prim.source if a.size == 1}
        return [replace(x, axes=ctx.out_axes[0], order=tuple(names.get(n, n) for n in x.order if n in names or n not in ones))]
    if x.contiguous:
        return [replace(x, axes=ctx.out_axes[0], order=tuple(a.name for a in ctx.out_axes[0]), dense=True)]
    return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype=x.dtype)]


@transpose(ViewOp)
def transpose_view(prim: ViewOp, box: Box) -> Diagram:
    return Box(ViewOp(prim.target, prim.source))


@COST.rule(OpaqueOp)
def cost_opaque(prim: OpaqueOp, ctx: CostContext) -> list[Tensor]:
    outs = [ctx.new(axes, grad=ctx.grad and seg.dtype == "float", dtype=seg.dtype)
            for axes, seg in zip(ctx.out_axes, ctx.box.cod)]
    shapes = [[a.size for a in t.axes] for t in ctx.inputs]
    results = [[a.size for a in t.axes] for t in outs]
    if any(getattr(s, "free_symbols", None) for shape in (*shapes, *results) for s in shape):
        return outs
    from ncd.limits import check_count

    # the call runs on real tensors, forward and backward: its inputs and its results (the shapes declared, which
    # check_shapes holds it to) must fit the memory budget before it runs (a file's repeat of one entry by
    # (2**16, 2**16) made 16 GiB here, where to_torch refuses it)
    check_count(f"cost of {ctx.box.text()}: the bytes of its inputs and results (8 an entry)",
                sum(8 * math.prod(int(s) for s in shape) for shape in (*shapes, *results)), "memory")
    check_shapes(ctx.box.prim)  # type: ignore[arg-type]
    forward, backward, own, saved = measure_opaque(ctx.box, [tuple(int(s) for s in shape) for shape in shapes],
                                                    [t.dtype for t in ctx.inputs])
    ctx.matmul(sympy.Integer(forward), sympy.Integer(backward))
    ctx.save(*(ctx.inputs[j] for j in own))
    for nbytes in saved:  # tensors the call made and autograd keeps: only their size is known
        t = ctx.new((), grad=False)
        ctx.walker.bytes[t.storage] = sympy.Integer(nbytes)
        ctx.save(t)
    return outs


BACKWARD.unsupported(OpaqueOp, "an opaque ATen call has no known derivative rule")
