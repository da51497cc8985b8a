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

import keyword
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import LoweringError, NCDError, ParseError, SizeError
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, evaluate, size_text, symbolic_lowering
from ncd.prims.kinds import transpose
from ncd.prims.structure import DeleteOp, cot

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["call_text", "OpaqueOp", "ParameterOp", "ConstantOp", "ViewOp", "Opaque", "Parameter", "Constant", "View", "DTYPES",
           "LAYOUTS", "MEMORY_FORMATS", "check_call", "resolve_target", "check_shapes"]

#: dtype names a traced tensor may carry (``torch.<name>``).
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "complex64")
#: the torch objects an opaque call may name besides dtypes (``torch.<name>``).
LAYOUTS = ("strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn")
MEMORY_FORMATS = ("contiguous_format", "preserve_format", "channels_last", "channels_last_3d")
#: ``<namespace>.<operator>.<overload>``: the only callables an opaque box may name (ATen's, or a custom operator
#: registered with ``torch.library`` in this process — never a Python function).
TARGET = re.compile(r"[a-z_][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
DEVICE = re.compile(r"(cpu|cuda|meta|mps|xpu)(:[0-9]{1,3})?")
WORD = re.compile(r"[A-Za-z0-9_.,> \-]{0,64}")  # strings: ``approximate="tanh"``, einsum equations
#: integer element types a segment of kind ``index`` (lowered as int64) may have had when recorded: an opaque
#: call gets its input ``j`` as ``("$as", (j, dtype))``, cast back, since ATen kernels may require equal dtypes.
CASTS = ("int32", "int16", "int8", "uint8")
TAGS = {"$dtype": DTYPES, "$layout": LAYOUTS, "$memory_format": MEMORY_FORMATS}


def resolve_target(target: str) -> object:
    """The ``torch.ops`` overload an opaque box calls; anything else raises :class:`ParseError`.

    >>> resolve_target("aten.cumsum.default")
    <OpOverload(op='aten.cumsum', overload='default')>
    """
    if not isinstance(target, str) or not TARGET.fullmatch(target):
        raise ParseError(f"opaque box: {target!r} is not the name of an ATen operator (such as 'aten.cumsum.default')")
    import torch

    namespace, packet, overload = target.split(".")
    try:
        found = getattr(getattr(getattr(torch.ops, namespace), packet), overload)
    except (AttributeError, RuntimeError, ModuleNotFoundError):
        found = None
    if not isinstance(found, torch._ops.OpOverload):
        raise ParseError(f"opaque box: {target!r} is not the name of an ATen operator (no such overload in torch.ops)")
    return found


def _check_value(value: Any, n_inputs: int, where: str) -> None:
    """A captured argument: a plain number, bool, None, short word, tuple of them, or a tagged torch object."""
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if value.startswith("$") or not WORD.fullmatch(value):
            raise ParseError(f"{where}: argument {value!r} is not a plain constant")
        return
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and value[0].startswith("$"):
            tag, payload = value
            if tag == "$in":
                if isinstance(payload, bool) or not isinstance(payload, int) or not 0 <= payload < n_inputs:
                    raise ParseError(f"{where}: ('$in', {payload!r}) names no input segment (it has {n_inputs})")
                return
            if tag == "$as":
                if not (isinstance(payload, tuple) and len(payload) == 2 and payload[1] in CASTS
                        and isinstance(payload[0], int) and not isinstance(payload[0], bool)
                        and 0 <= payload[0] < n_inputs):
                    raise ParseError(f"{where}: ('$as', {payload!r}) is not (input segment, integer dtype)")
                return
            if tag in TAGS:
                if payload not in TAGS[tag]:
                    raise ParseError(f"{where}: unknown {tag[1:]} {payload!r}; known: {', '.join(TAGS[tag])}")
                return
            if tag == "$device":
                if not isinstance(payload, str) or not DEVICE.fullmatch(payload):
                    raise ParseError(f"{where}: unknown device {payload!r}")
                return
            if tag == "$complex":
                if not (isinstance(payload, tuple) and len(payload) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in payload)):
                    raise ParseError(f"{where}: ('$complex', {payload!r}) is not (real part, imaginary part)")
                return
            if tag == "$empty":
                if not _empty(payload):
                    raise ParseError(f"{where}: ('$empty', {payload!r}) is not (dtype, shape) of a tensor without entries")
                return
            raise ParseError(f"{where}: unknown argument tag {tag!r}")
        for v in value:
            _check_value(v, n_inputs, where)
        return
    raise ParseError(f"{where}: argument {value!r} of type {type(value).__name__} is not a plain constant")


def _empty(payload: Any) -> bool:
    """``("float32", (2, 0))``: the dtype and shape of a tensor without entries (an argument that holds no data)."""
    return (isinstance(payload, tuple) and len(payload) == 2 and payload[0] in DTYPES and isinstance(payload[1], tuple)
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 31 for n in payload[1])
            and 0 in payload[1])


def check_call(target: str, n_inputs: int, args: Any, kwargs: Any) -> None:
    """Reject anything but a resolvable ATen overload with plain constant arguments and identifier keywords."""
    resolve_target(target)
    where = f"opaque box {target}"
    if not isinstance(args, tuple) or not isinstance(kwargs, tuple):
        raise ParseError(f"{where}: arguments must be tuples")
    for a in args:
        _check_value(a, n_inputs, where)
    for pair in kwargs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ParseError(f"{where}: keyword arguments are (name, value) pairs, not {pair!r}")
        name, value = pair
        if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            raise ParseError(f"{where}: keyword {name!r} is not a Python identifier")
        _check_value(value, n_inputs, where)


def _shape_text(typ: Type) -> str:
    return ", ".join(" ".join(seg.names) or "()" for seg in typ) or "∅"


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
        return Segment(())  # a scalar
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


# -- the call as source (written by lowering, run by the cost measurement) ---------------------------
def literal(value: Any, inputs: list[str]) -> str:
    """Python source for one captured argument (``("$in", j)`` is input ``j``)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0].startswith("$"):
        tag, payload = value
        if tag == "$in" and isinstance(payload, int) and not isinstance(payload, bool) and 0 <= payload < len(inputs):
            return inputs[payload]
        if (tag == "$as" and isinstance(payload, tuple) and len(payload) == 2 and payload[1] in CASTS
                and isinstance(payload[0], int) and not isinstance(payload[0], bool) and 0 <= payload[0] < len(inputs)):
            return f"{inputs[payload[0]]}.to(torch.{payload[1]})"
        if tag in TAGS and payload in TAGS[tag]:
            return f"torch.{payload}"
        if tag == "$device" and isinstance(payload, str) and DEVICE.fullmatch(payload):
            return f"torch.device({payload!r})"
        if (tag == "$complex" and isinstance(payload, tuple) and len(payload) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in payload)):
            return f"complex({literal(float(payload[0]), inputs)}, {literal(float(payload[1]), inputs)})"
        if tag == "$empty" and _empty(payload):
            return f"torch.empty({tuple(payload[1])!r}, dtype=torch.{payload[0]})"
        raise LoweringError(f"opaque box: argument {value!r} cannot be written as source")
    if isinstance(value, tuple):
        inner = ", ".join(literal(v, inputs) for v in value)
        return f"[{inner}]"
    if isinstance(value, float):
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        if math.isnan(value):
            return "float('nan')"
        return repr(float(value))
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)  # str: checked against a short word pattern by ``check_call``; repr quotes it
    raise LoweringError(f"opaque box: argument {value!r} of type {type(value).__name__} cannot be written as source")


def checked(prim: OpaqueOp) -> None:
    """Re-check the call before writing it as source (the primitive may have been built around its checks)."""
    try:
        check_call(prim.target, len(prim.inputs), prim.args, prim.kwargs)
    except NCDError as e:
        raise LoweringError(f"cannot lower {e}") from None


def call_text(prim: OpaqueOp, inputs: list[str]) -> str:
    checked(prim)
    args = [literal(a, inputs) for a in prim.args]
    args += [f"{k}={literal(v, inputs)}" for k, v in prim.kwargs]
    fn = "torch.ops." + prim.target  # checked: an operator registered in torch.ops (ATen's or a custom one)
    return f"{fn}({', '.join(args)})"


def on_meta(prim: OpaqueOp) -> OpaqueOp:
    """The call made on the ``meta`` device: an operator that makes a tensor (``ones``, ``eye``, ``full``: its schema
    has a keyword ``device``) is told so, as meta inputs tell every other one, so checking its shape allocates nothing
    (a file's ``ones([60000, 60000])`` would otherwise take 14 GB to be refused)."""
    schema = getattr(resolve_target(prim.target), "_schema", None)
    if schema is None or not any(a.name == "device" and a.kwarg_only for a in schema.arguments):
        return prim
    kwargs = tuple(pair for pair in prim.kwargs if pair[0] != "device") + (("device", ("$device", "meta")),)
    return replace(prim, kwargs=kwargs)


def check_shapes(prim: OpaqueOp) -> None:
    """Run the call on ``meta`` tensors (nothing allocated) and refuse it unless its results have the declared
    shapes: the memory budget is checked on the declared types, so a call must not make larger tensors.
    On symbolic sizes (:func:`ncd.ir.size.symbolic_sizes`) the check waits for the numbers."""
    import torch

    if symbolic_lowering():
        return

    def shape(seg: Any) -> list[int]:
        return [evaluate(a.size, what=f"axis {a.name}") for a in seg.axes]

    dtypes = {"float": torch.float32, "index": torch.int64, "bool": torch.bool, "complex": torch.complex64}
    inputs = [torch.empty(shape(seg), dtype=dtypes[seg.dtype], device="meta") for seg in prim.inputs]
    try:
        out = eval(call_text(on_meta(prim), [f"x{j}" for j in range(len(inputs))]), {"torch": torch},  # noqa: S307
                   {f"x{j}": x for j, x in enumerate(inputs)})
    except Exception:  # noqa: BLE001 - no meta kernel or a data-dependent shape: the real call decides
        return
    results = out if isinstance(out, (tuple, list)) else (out,)
    picked = [results[k] for k in prim.picks] if prim.picks and max(prim.picks) < len(results) else list(results)
    for j, (seg, result) in enumerate(zip(prim.outputs, picked)):
        if isinstance(result, torch.Tensor) and list(result.shape) != shape(seg):
            raise LoweringError(f"opaque box {prim.target}: result {j} has shape {tuple(result.shape)}, but the diagram"
                                f" declares '{seg}' ({', '.join(str(s) for s in shape(seg))})")


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(OpaqueOp, by="ncd.trace.convert")
IMPORT.known(ParameterOp, ConstantOp, by="ncd.trace.learned")
IMPORT.known(ViewOp, aten=("aten.view", "aten.reshape", "aten.unsqueeze", "aten.squeeze", "aten.flatten"))


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(OpaqueOp)
def lower_opaque(prim: OpaqueOp, ctx: RuleContext) -> list[str]:
    check_shapes(prim)
    call = call_text(prim, [v.var for v in ctx.args])
    if not prim.picks:
        return [call]
    result = ctx.em.fresh(prim.hint() + "_out")
    ctx.em.line(f"{result} = {call}")
    return [f"{result}[{k}]" for k in prim.picks]


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
    if any(getattr(s, "free_symbols", None) for shape in shapes for s in shape):
        return outs
    from ncd.limits import check_count
    from ncd.prims.opaque import check_shapes

    # the call runs on real tensors: they must fit the memory budget, and its results have the declared shapes
    check_count(f"cost of {ctx.box.text()}: the bytes of its inputs", sum(8 * math.prod(int(s) for s in shape)
                                                                        for shape in shapes), "memory")
    check_shapes(ctx.box.prim)  # type: ignore[arg-type]
    forward, backward, own, saved = _measure_opaque(ctx.box, [tuple(int(s) for s in shape) for shape in shapes],
                                                    [t.dtype for t in ctx.inputs])
    ctx.matmul(sympy.Integer(forward), sympy.Integer(backward))
    ctx.save(*(ctx.inputs[j] for j in own))
    for nbytes in saved:  # tensors the call made and autograd keeps: only their size is known
        t = ctx.new((), grad=False)
        ctx.walker.bytes[t.storage] = sympy.Integer(nbytes)
        ctx.save(t)
    return outs


def _measure_opaque(box: Box, shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple[int, int, list[int], list[int]]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ncd.prims.opaque import call_text

    xs = []
    for shape, dtype in zip(shapes, dtypes):
        if dtype == "float":
            xs.append(torch.randn(shape, requires_grad=True))
        elif dtype == "bool":
            xs.append(torch.ones(shape, dtype=torch.bool))
        elif dtype == "complex":
            xs.append(torch.randn(shape, dtype=torch.complex64, requires_grad=True))
        else:
            xs.append(torch.zeros(shape, dtype=torch.long))
    inputs = {f"x{j}": x for j, x in enumerate(xs)}
    ptrs: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptrs.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    code = call_text(box.prim, list(inputs))  # type: ignore[arg-type]
    with FlopCounterMode(display=False) as forward, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = eval(code, {"torch": torch}, inputs)  # noqa: S307 - an ATen call of the diagram, with its own arguments
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor) and o.requires_grad]
    with FlopCounterMode(display=False) as backward:
        if outs:
            torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    own = {x.untyped_storage().data_ptr(): j for j, x in enumerate(xs)}
    kept = [own[p] for p in ptrs if p in own]
    saved = [n for p, n in ptrs.items() if p not in own and n]
    return int(forward.get_total_flops()), int(backward.get_total_flops()), kept, saved


BACKWARD.unsupported(OpaqueOp, "an opaque ATen call has no known derivative rule")
