"""Conversion rules for pointwise operators that are compositions of others: each drawn as its definition, every
part read by the rule of its own operator (as :mod:`ncd.trace.boxes_losses` draws a loss).

* ``addcmul(x, a, b, value=v)`` is ``x + v·(a ⊙ b)``;
* ``addcdiv(x, a, b, value=v)`` is ``x + (v·a) / b``, ATen's order (``x + v·(a / b)`` where ``v`` is a power of two);
* ``lerp(a, b, w)`` (a number or a tensor ``w``) is ``a + w·(b − a)``;
* ``bilinear(x, y, W, b)`` (``nn.Bilinear``) is ``einsum("...i,oij,...j->...o", x, W, y) + b``;
* ``threshold``, ``hardshrink``, ``softshrink`` and ``nan_to_num`` are fills of ``x`` (``masked_fill``, ``where``) where
  a comparison says, as ATen's kernels choose (exact);
* ``take_along_dim(x, i, d)`` of indices shaped as ``x`` off ``d`` is ``gather(x, d, i)``; ``tensordot`` is its einsum.
* ``isinf(x)`` is ``|x| = ∞``.

Each part is a step made for the occasion whose value is computed from the recorded operands (a constant if none is
live), so the diagram is the definition torch documents, exact by construction up to the rounding of the parts (torch's
fused kernels round once per entry where the parts round per step: ``lerp`` computes ``b − (b − a)(1 − w)`` where
``w ≥ ½``, the same number in exact arithmetic).  Only floating-point operands of the result's dtype are taken.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncd.trace.boxes_losses import _call
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []

aten = torch.ops.aten


def _floats(node: Node, *operands: Any) -> None:
    """Decline unless the result and every tensor operand are floats of one dtype (some operand live)."""
    value = node.value
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise Decline("not a float result")
    tensors = [v for v in operands if isinstance(v, Node)]
    if any(not isinstance(v.value, torch.Tensor) or v.value.dtype != value.dtype for v in tensors):
        raise Decline("operands of another dtype")
    if not any(v.live for v in tensors):
        raise Decline("no live operand")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Decline(f"a factor {value!r} that is not a number")
    return float(value)


def _finish(conv: Converter, node: Node, last: Node, made: list[Node]) -> None:
    if tuple(last.value.shape) != tuple(node.value.shape):
        raise Decline("the parts come out in another shape")
    conv.bind(node, conv.value(last))
    conv.forget(*[m for m in made if m is not last])
    conv.forget(last)


@rule("aten.addcmul", "aten.addcdiv")
def add_product(conv: Converter, node: Node) -> None:
    """``x + v·(a ⊙ b)`` (``addcmul``) or ``x + (v·a) / b`` (``addcdiv``, as ATen computes it): the product or
    quotient, scaled, added."""
    x, a, b = node.args[:3]
    value = _number(node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 1))
    _floats(node, x, a, b)
    divide = "addcdiv" in node.target.name()
    if divide and value != 1 and not (isinstance(value, (int, float)) and math.isfinite(value) and value
                                      and abs(math.frexp(value)[0]) == 0.5):
        # ATen's addcdiv is x + v·a / b, (v·a) / b: v·(a / b) rounds otherwise where v is no power of two
        made = [_call(conv, node, "scaled", aten.mul.Tensor, a, value)]
        made.append(_call(conv, node, "quotient", aten.div.Tensor, made[-1], b))
    else:
        made = [_call(conv, node, "quotient" if divide else "product", aten.div.Tensor if divide else aten.mul.Tensor,
                      a, b)]
        if value != 1:
            made.append(_call(conv, node, "scaled", aten.mul.Tensor, made[-1], value))
    made.append(_call(conv, node, "sum", aten.add.Tensor, x, made[-1]))
    _finish(conv, node, made[-1], made)


@rule("aten.lerp")
def lerp(conv: Converter, node: Node) -> None:
    """``a + w·(b − a)``, ``w`` a number or a tensor."""
    a, b, w = node.args[:3]
    _floats(node, a, b, *([w] if isinstance(w, Node) else []))
    if not isinstance(w, Node):
        w = _number(w)
    made = [_call(conv, node, "difference", aten.sub.Tensor, b, a)]
    made.append(_call(conv, node, "step", aten.mul.Tensor, made[-1], w))
    made.append(_call(conv, node, "sum", aten.add.Tensor, a, made[-1]))
    _finish(conv, node, made[-1], made)


@rule("aten.bilinear")
def bilinear(conv: Converter, node: Node) -> None:
    """``einsum("...i,oij,...j->...o", x, W, y)`` plus the bias ``b`` if given (``nn.Bilinear``)."""
    from ncd.trace.boxes_einsum import emit_einsum
    from ncd.trace.boxes_products import _step

    x, y, weight = node.args[:3]
    bias = node.args[3] if len(node.args) > 3 else node.kwargs.get("bias")
    _floats(node, x, y, weight, *([bias] if isinstance(bias, Node) else []))
    if bias is not None and not isinstance(bias, Node):
        raise Decline("a bias that is not a tensor")
    equation = "...i,oij,...j->...o"
    value = torch.einsum(equation, x.value, weight.value, y.value)
    product = _step(node, "product", aten.einsum.default, (equation, [x, weight, y]), value, True)
    emit_einsum(conv, product, equation, [x, weight, y])
    made = [product]
    if bias is not None:
        made.append(_call(conv, node, "sum", aten.add.Tensor, product, bias))
    _finish(conv, node, made[-1], made)


def _float_input(node: Node) -> Node:
    """The first operand: a live float tensor of the result's dtype and shape (else decline)."""
    x = node.args[0]
    if not isinstance(x, Node) or not x.live or not isinstance(x.value, torch.Tensor) \
            or not isinstance(node.value, torch.Tensor) or not x.value.is_floating_point() \
            or x.value.dtype != node.value.dtype or tuple(x.value.shape) != tuple(node.value.shape):
        raise Decline("not a live float tensor of the result's type")
    return x


@rule("aten.threshold")
def threshold(conv: Converter, node: Node) -> None:
    """``threshold(x, t, v)`` (``nn.Threshold``): ``x`` with the entries ``≤ t`` filled with ``v`` (ATen's
    ``x <= t ? v : x``, so a NaN stays)."""
    x = _float_input(node)
    bound, value = _number(node.args[1]), _number(node.args[2])
    below = _call(conv, node, "below", aten.le.Scalar, x, bound)
    _finish(conv, node, _call(conv, node, "filled", aten.masked_fill.Scalar, x, below, value), [below])


@rule("aten.hardshrink", "aten.softshrink")
def shrink(conv: Converter, node: Node) -> None:
    """``hardshrink(x, λ)``: ``x`` with the entries ``|x| ≤ λ`` zeroed; ``softshrink(x, λ)``: ``x − λ`` above ``λ``,
    ``x + λ`` elsewhere, then those entries zeroed (ATen's ``-λ ≤ x ≤ λ ? 0 : …``, so a NaN stays)."""
    x = _float_input(node)
    size = _number(node.args[1] if len(node.args) > 1 else node.kwargs.get("lambd", 0.5))
    if not size >= 0:
        raise Decline("a negative λ")
    made = [_call(conv, node, "size", aten.abs.default, x)]
    made.append(_call(conv, node, "inside", aten.le.Scalar, made[-1], size))
    kept = x
    if "softshrink" in node.target.name():
        if x.value.dtype not in (torch.float32, torch.float64):  # (x ∓ λ of a narrower float is lowered in float32)
            raise Decline("a shift of a float16 or bfloat16 tensor")
        made.append(_call(conv, node, "above", aten.gt.Scalar, x, size))
        made.append(_call(conv, node, "lowered", aten.sub.Tensor, x, size))
        made.append(_call(conv, node, "raised", aten.add.Tensor, x, size))
        made.append(_call(conv, node, "shifted", aten.where.self, made[2], made[3], made[4]))
        kept = made[-1]
    made.append(_call(conv, node, "shrunk", aten.masked_fill.Scalar, kept, made[1], 0.0))
    _finish(conv, node, made[-1], made)


@rule("aten.nan_to_num")
def nan_to_num(conv: Converter, node: Node) -> None:
    """``nan_to_num(x, nan, posinf, neginf)``: ``x`` with NaN, ``+∞`` and ``−∞`` filled (the infinities by the
    dtype's largest and smallest finite number unless given)."""
    x = _float_input(node)
    info = torch.finfo(x.value.dtype)
    given = list(node.args[1:4]) + [None] * (4 - len(node.args))
    fills = [node.kwargs.get(key, given[k]) for k, key in enumerate(("nan", "posinf", "neginf"))]
    fills = [_number(v) if v is not None else default for v, default in zip(fills, (0.0, info.max, info.min))]
    if not all(math.isfinite(v) for v in fills[1:]):  # (an infinity filled with ∓∞ or NaN would be filled again below)
        raise Decline("an infinity replaced by an infinity or NaN")
    made: list[Node] = []
    out = x
    for suffix, infinity, fill in (("posinf", float("inf"), fills[1]), ("neginf", float("-inf"), fills[2])):
        made.append(_call(conv, node, f"is_{suffix}", aten.eq.Scalar, out, infinity))
        made.append(_call(conv, node, f"no_{suffix}", aten.masked_fill.Scalar, out, made[-1], fill))
        out = made[-1]
    # what is left not finite is NaN: |y| ≤ ∞ is false there alone
    made.append(_call(conv, node, "size", aten.abs.default, out))
    made.append(_call(conv, node, "a_number", aten.le.Scalar, made[-1], float("inf")))
    made.append(_call(conv, node, "no_nan", aten.where.ScalarOther, made[-1], out, fills[0]))
    out = made[-1]
    _finish(conv, node, out, made)


@rule("aten.take_along_dim")
def take_along_dim(conv: Converter, node: Node) -> None:
    """``take_along_dim(x, i, d)`` of indices shaped as ``x`` but along ``d``: ``gather(x, d, i)``."""
    x, index = node.args[:2]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if not isinstance(x, Node) or not isinstance(index, Node) or not isinstance(dim, int) \
            or not isinstance(x.value, torch.Tensor) or not isinstance(index.value, torch.Tensor):
        raise Decline("not a tensor read along one axis")
    shape, wanted = tuple(x.value.shape), tuple(index.value.shape)
    d = dim % max(len(shape), 1)
    if len(shape) != len(wanted) or any(a != b for k, (a, b) in enumerate(zip(shape, wanted)) if k != d):
        raise Decline("indices broadcast against the tensor")
    _finish(conv, node, _call(conv, node, "gathered", aten.gather.default, x, d, index), [])


@rule("aten.tensordot")
def tensordot(conv: Converter, node: Node) -> None:
    """``tensordot(a, b, dims_a, dims_b)``: the einsum contracting those axes (the others in order, ``a``'s first)."""
    a, b = node.args[:2]
    dims = list(node.args[2:4]) + [node.kwargs.get(k) for k in ("dims_self", "dims_other")][len(node.args) - 2:]
    if not isinstance(a, Node) or not isinstance(b, Node) or len(dims) != 2 \
            or not all(isinstance(v.value, torch.Tensor) for v in (a, b)):
        raise Decline("not two tensors and two lists of axes")
    ra, rb = a.value.dim(), b.value.dim()
    left, right = ([int(k) % max(r, 1) for k in ds] for ds, r in zip(dims, (ra, rb)))
    if len(left) != len(right) or len(set(left)) != len(left) or len(set(right)) != len(right) or ra + rb > 26:
        raise Decline("axes repeated")
    letters = "abcdefghijklmnopqrstuvwxyz"
    first = letters[:ra]
    second = [letters[ra + k] for k in range(rb)]
    for i, j in zip(left, right):
        second[j] = first[i]
    out = [c for k, c in enumerate(first) if k not in left] + [c for k, c in enumerate(second) if k not in right]
    equation = f"{first},{''.join(second)}->{''.join(out)}"
    _finish(conv, node, _call(conv, node, "contracted", aten.einsum.default, equation, [a, b]), [])


@rule("aten.isinf")
def isinf(conv: Converter, node: Node) -> None:
    """``isinf(x)`` of floats: ``|x| = ∞`` (T5's float16 clamp reads it)."""
    x = node.args[0]
    if not isinstance(x, Node) or not x.live or not isinstance(x.value, torch.Tensor) or not x.value.is_floating_point():
        raise Decline("not a live float tensor")
    made = [_call(conv, node, "size", aten.abs.default, x)]
    made.append(_call(conv, node, "infinite", aten.eq.Scalar, made[-1], float("inf")))
    _finish(conv, node, made[-1], made)
