"""Conversion rules for Fourier transforms and complex wires, and arithmetic between a float tensor and an integer
or complex one (hooked beside the core arithmetic rules).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.boxes import _claim, _dims, _own, _same_wires, sympy_int
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, rule
from ncd.trace.naming import PRIME

__all__: list[str] = []


# -- Fourier transforms and complex wires ---------------------------------------------------------
_FOURIER = {"fft": "fft", "ifft": "ifft", "rfft": "rfft", "irfft": "irfft"}


def _fourier_args(node: Node, name: str) -> tuple[Any, Any, Any]:
    """``(sizes, dims, norm)`` of a ``fft_*`` call: one-axis (``n``, ``dim``), 2-d (``s``, ``dim=(-2, -1)``) or n-d."""
    args = list(node.args[1:]) + [None] * 3
    if name.endswith("n") or name.endswith("2"):
        sizes = args[0] if args[0] is not None else node.kwargs.get("s")
        dims = args[1] if args[1] is not None else node.kwargs.get("dim", (-2, -1) if name.endswith("2") else None)
    else:
        n = args[0] if args[0] is not None else node.kwargs.get("n")
        sizes = None if n is None else [n]
        dims = [args[1] if args[1] is not None else node.kwargs.get("dim", -1)]
    norm = args[2] if args[2] is not None else node.kwargs.get("norm")
    return sizes, dims, norm or "backward"


@rule(*(f"aten.fft_{k}{suffix}" for k in _FOURIER for suffix in ("", "2", "n")))
def fourier(conv: Converter, node: Node) -> None:
    """``torch.fft.fft``/``ifft``/``rfft``/``irfft`` (and their ``2``/``n`` forms) as a :class:`FourierOp` box; a call that pads
    or crops the signal (``n``/``s`` other than the input's sizes) stays opaque."""
    from ncd.ir.axes import Axis
    from ncd.prims.fourier import FourierOp

    name = node.target.name().split("::")[1].split(".")[0].removeprefix("fft_")
    transform = _FOURIER[name.rstrip("n2") if name not in _FOURIER else name]
    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or not (
            x.value.is_floating_point() or x.value.is_complex()):
        raise Decline("not a live float or complex tensor")
    if x.value.dtype not in (torch.float32, torch.complex64) or node.value.dtype not in (torch.float32, torch.complex64):
        raise Decline("a transform in another precision")
    vid = conv.value(x)
    seg = conv.segs[vid]
    sizes, dims, norm = _fourier_args(node, name)
    own = list(range(len(seg.axes))) if dims is None else _dims(conv, vid, dims)
    if dims is not None and own != sorted(own):
        raise Decline("axes transformed in another order")
    source = _own(conv, vid, own)
    out_shape = [int(node.value.shape[d]) for d in own]
    if sizes is not None and transform != "irfft" and [int(s) for s in sizes] != [int(a.size) for a in source.axes]:
        raise Decline("a transform that pads or crops the signal")
    if transform in ("fft", "ifft"):
        target = Segment(source.axes, "complex")
    else:
        last = source.axes[-1]
        new = _claim(conv, last.name, out_shape[-1], "item" if last.is_item else "feature")
        while new in seg.names:
            new += PRIME
        target = Segment(source.axes[:-1] + (Axis(new, sympy_int(out_shape[-1]), last.role),),
                         "float" if transform == "irfft" else "complex")
    try:
        box = Box(FourierOp(source, target, transform, norm))  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - a transform the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(box, [vid]))


@rule("aten.real", "aten.imag")
def complex_part(conv: Converter, node: Node) -> None:
    """``x.real`` / ``x.imag`` of a complex tensor."""
    from ncd.prims.fourier import ComplexPartOp

    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dtype == torch.complex64):
        raise Decline("not a live complex tensor")  # (``x.real`` of a real tensor is x itself: an alias)
    part = "real" if "real" in node.target.name() else "imag"
    _same_wires(conv, node, conv.apply(Box(ComplexPartOp(part)), [conv.value(x)]))  # type: ignore[arg-type]


@rule("aten._conj", "aten.conj", "aten.conj_physical")
def conjugate(conv: Converter, node: Node) -> None:
    """``torch.conj(z)`` (a view with the conjugate bit, ``aten._conj``) or ``conj_physical`` of a complex tensor; of a
    real tensor ``conj`` is the tensor itself."""
    from ncd.prims.fourier import ComplexConjugateOp

    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or node.value.dtype != x.value.dtype:
        raise Decline("not a live tensor")
    if not x.value.is_complex():
        if x.value.is_floating_point():
            conv.bind(node, conv.value(x))
            return
        raise Decline("not a float or complex tensor")
    if x.value.dtype != torch.complex64:
        raise Decline("a complex tensor of another precision")
    _same_wires(conv, node, conv.apply(Box(ComplexConjugateOp()), [conv.value(x)]))


@rule("aten.view_as_complex", "aten.view_as_real")
def complex_view(conv: Converter, node: Node) -> None:
    """``torch.view_as_complex(x)`` (its last wire, of size 2, the real and imaginary parts) and ``torch.view_as_real``
    (that wire made, named apart from the others), in single precision."""
    from ncd.ir.axes import Axis
    from ncd.prims.fourier import ComplexViewOp

    x = node.args[0]
    to_complex = "view_as_complex" in node.target.name()
    want = torch.float32 if to_complex else torch.complex64
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dtype == want):
        raise Decline("not a live tensor of single precision")
    vid = conv.value(x)
    seg = conv.segs[vid]
    if to_complex:
        if not seg.axes or int(seg.axes[-1].size) != 2:
            raise Decline("no pair wire")
        box = Box(ComplexViewOp(Segment((seg.axes[-1],)), "complex"))
    else:
        name = conv.namer.fresh(2)
        while name in seg.names:
            name += PRIME
        box = Box(ComplexViewOp(Segment((Axis(name, sympy_int(2)),)), "real"))
    _same_wires(conv, node, conv.apply(box, [vid]))


def _complex_product(conv: Converter, node: Node) -> bool:
    """``a * b`` for two complex tensors (broadcast by position); False when it is not that."""
    from ncd.prims.fourier import ComplexMultiplyOp
    from ncd.trace.idioms import operand, out_names

    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or node.value.dtype != torch.complex64
            or any(v.value.dtype != torch.complex64 for v in tensors)):
        return False
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in node.value.shape)
    va, vb = operand(conv, a, names, shape), operand(conv, b, names, shape)
    if len(conv.segs[vb].axes) > len(conv.segs[va].axes):
        va, vb = vb, va  # the operand with every wire first, so the result keeps its order
    vid = conv.apply(Box(ComplexMultiplyOp()), [va, vb])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    conv.bind(node, vid)
    return True


def _mixed_arithmetic(conv: Converter, node: Node) -> bool:
    """``a ∘ b`` (``+ − × ÷``) for a float tensor and an integer or boolean tensor (a 0/1 mask, counts): the other
    operand read as floats (a cast box), then the float operation; False when it is not that."""
    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or not node.value.is_floating_point()
            or node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("rounding_mode") is not None):
        return False
    floats = [v.value.dtype == node.value.dtype for v in tensors]
    others = [v.value.is_floating_point() or v.value.is_complex() for v in tensors]
    if floats.count(True) != 1 or sum(others) != 1:
        return False
    from ncd.ir.axes import Segment as Seg  # imported here, past the checks most arithmetic fails (every add asks)
    from ncd.prims.division import DivideOp
    from ncd.prims.elementwise import MultiplyOp
    from ncd.prims.gather import CastOp
    from ncd.prims.structure import AddOp
    from ncd.trace.idioms import _scale, bind_product, operand, out_names

    name = node.target.name().split("::")[1].split(".")[0]
    names = out_names(conv, node, [a, b])
    shape = tuple(int(x) for x in node.value.shape)
    vids = [operand(conv, v, names, shape) for v in (a, b)]
    k = floats.index(False)
    seg = conv.segs[vids[k]]
    from ncd.trace.indexing import _width

    # (in the result's type, as torch promotes: a float16/bfloat16/float64 model's ``h + ids`` is computed in that type)
    vids[k] = conv.apply(Box(CastOp(Seg((), seg.dtype, seg.range), Seg(()), _width(node.value))), [vids[k]])
    va, vb = vids
    if name == "div":
        bind_product(conv, node, DivideOp(), va, vb, names, commutes=False)
        return True
    if name == "sub":
        vb = _scale(conv, vb, -1.0)
    bind_product(conv, node, AddOp(2) if name in ("add", "sub") else MultiplyOp(2), va, vb, names)
    return True


def _hook_tensor_arithmetic() -> None:
    """Complex products and float-with-integer arithmetic beside whichever rules ``aten.mul``/``add``/``sub``/``div``
    have (the core arithmetic keeps operands of one dtype); ``aten.multiply`` is ``aten.mul``."""
    from ncd.trace.convert import RULES

    def complex_or_mixed(conv: Converter, node: Node) -> bool:
        if isinstance(node.value, torch.Tensor) and node.value.is_complex():
            if "mul" not in node.target.name() or not _complex_product(conv, node):
                raise Decline("complex arithmetic other than a product of complex tensors")
            return True
        return isinstance(node.value, torch.Tensor) and _mixed_arithmetic(conv, node)

    hook(("aten.mul", "aten.add", "aten.sub", "aten.div"), complex_or_mixed)

    def multiply(conv: Converter, node: Node) -> None:
        overload = getattr(node.target, "_overloadname", "Tensor")
        node.target = getattr(torch.ops.aten.mul, overload)  # the same operator under its other name
        RULES["aten.mul"](conv, node)

    RULES["aten.multiply"] = multiply


_hook_tensor_arithmetic()
