"""Opaque calls as data: which ATen overloads and constant arguments an opaque box may hold, and the call as source.

An :class:`~ncd.prims.opaque.OpaqueOp` names its operator (``aten.cumsum.default``) and its captured arguments as
plain data: numbers, short words, tuples, and tagged torch objects (``("$in", j)`` for input ``j``,
``("$dtype", "float32")``, ...).  :func:`check_call` admits only that; :func:`call_text` writes the call as Python
source for lowering and for the cost measurement; :func:`check_shapes` runs it on ``meta`` tensors against the
declared output types.

>>> check_call("aten.cumsum.default", 1, (("$in", 0), -1), ())
>>> literal((("$in", 0), ("$dtype", "float32")), ["x"])
'[x, torch.float32]'
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ncd.errors import LoweringError, NCDError, ParseError
from ncd.ir.size import evaluate, symbolic_lowering

if TYPE_CHECKING:
    from ncd.prims.opaque import OpaqueOp

__all__ = ["DTYPES", "LAYOUTS", "MEMORY_FORMATS", "TARGET", "DEVICE", "WORD", "CASTS", "TAGS", "resolve_target", "size_guards",
           "guarded_results", "check_call", "literal", "checked", "call_text", "on_meta", "check_shapes"]

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
    if not isinstance(found, torch._ops.OpOverload) and namespace == "ncd_function":
        raise ParseError(f"opaque box: {target!r} calls a custom autograd.Function that ncd.trace defined in another"
                         " process; lower the TracedDiagram it came from (a pickled one defines it again) or trace the"
                         " model again here")
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
    """The call as source; ``aten.copy`` (no derivative in autograd) as the same values by calls that have one."""
    checked(prim)
    if prim.target == "aten.copy.default" and len(prim.args) >= 2 and not prim.kwargs \
            and all(isinstance(a, tuple) and len(a) == 2 and a[0] == "$in" for a in prim.args[:2]):
        dst, src = (literal(a, inputs) for a in prim.args[:2])
        return f"{src}.to({dst}.dtype).expand_as({dst}).clone(memory_format=torch.contiguous_format)"
    args = [literal(a, inputs) for a in prim.args]
    args += [f"{k}={literal(v, inputs)}" for k, v in prim.kwargs]
    fn = ops_path(prim.target)  # checked: an operator registered in torch.ops (ATen's or a custom one)
    return f"{fn}({', '.join(args)})"


def ops_path(target: str) -> str:
    """The source naming ``torch.ops``' overload ``target`` (``"aten.cumsum.default"``): by attribute, or by
    ``getattr`` where a part is a Python keyword (``x.random_(0, 5)``'s ``aten.random.from``:
    ``torch.ops.aten.random.from(...)`` was a SyntaxError when the module was lowered).

    >>> ops_path("aten.cumsum.default"), ops_path("aten.random.from")
    ('torch.ops.aten.cumsum.default', "getattr(torch.ops.aten.random, 'from')")
    """
    parts = target.split(".")
    if not any(keyword.iskeyword(part) for part in parts):
        return "torch.ops." + target
    path = "torch.ops"
    for part in parts:
        path = f"getattr({path}, {part!r})" if keyword.iskeyword(part) else f"{path}.{part}"
    return path


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

    if symbolic_lowering() or prim.target == "aten.view.dtype":  # x.view(torch.int16): sizes follow the element
        return  # size of x, which a float wire does not carry (float16 or float32); the real call decides

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


#: operators whose result's shape depends on their operands' values that torch does not tag ``dynamic_output_shape``
_VALUE_SHAPED = frozenset({"aten.repeat_interleave.self_Tensor"})


def guarded_results(prim: OpaqueOp, dims: list[list[int]]) -> list[int]:
    """The results :func:`size_guards` checks (``dims``: each result's own axes as negative dims): every result with
    axes, all of them its own, of a call whose result's shape depends on its operands' values; none on symbolic
    sizes."""
    import torch

    if symbolic_lowering():
        return []
    tags = getattr(resolve_target(prim.target), "tags", ())
    if torch.Tag.dynamic_output_shape not in tags and prim.target not in _VALUE_SHAPED:
        return []
    return [j for j, (seg, own) in enumerate(zip(prim.outputs, dims)) if len(seg) and len(own) == len(seg)]


def size_guards(prim: OpaqueOp, results: list[str], dims: list[list[int]]) -> list[str]:
    """Lines checking, when the lowered module runs, that the results of a call whose shapes depend on its operands'
    values (``x[mask]``: as many entries as the mask holds True; ``bincount``, ``one_hot`` without a class count,
    ``repeat_interleave`` by a tensor) have the sizes the diagram declares (``dims``: each result's own axes as
    negative dims): the boxes after it are drawn and lowered at the traced sizes (``x[mask].mean()`` divides by the
    traced count), so another count raises instead of computing something else.  None on symbolic sizes, for a call
    of a fixed shape, or for results without axes.

    >>> from ncd.prims.opaque import Opaque
    >>> size_guards(Opaque("aten.index.Tensor", "m:6, m:6 [bool]", "n:2", args=(("$in", 0), (("$in", 1),))).prim,
    ...             ["r"], [[-1]])
    ["if (r.shape[-1],) != (2,): raise RuntimeError('aten.index.Tensor: result of shape ' + str(tuple(r.shape)) + ', \
where the diagram declares n:2 (2,): its size depends on the values of the inputs (as many entries as a mask holds True, \
the largest index), which the diagram fixes as traced')"]
    """
    lines = []
    for j in guarded_results(prim, dims[:len(results)]):  # (a result named for each of the first ones)
        result, seg, own = results[j], prim.outputs[j], dims[j]
        sizes = [evaluate(a.size, what=f"axis {a.name}") for a in seg.axes]
        got = "(" + ", ".join(f"{result}.shape[{d}]" for d in own) + ("," if len(own) == 1 else "") + ")"
        want = "(" + ", ".join(str(n) for n in sizes) + ("," if len(sizes) == 1 else "") + ")"
        said = f"{prim.target}: result of shape ' + str(tuple({result}.shape)) + ', where the diagram declares" \
               f" {str(seg).replace(chr(39), '')} {want}: its size depends on the values of the inputs (as many entries" \
               " as a mask holds True, the largest index), which the diagram fixes as traced"
        lines.append(f"if {got} != {want}: raise RuntimeError('{said}')")
    return lines
