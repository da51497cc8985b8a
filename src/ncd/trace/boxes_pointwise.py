"""Conversion rules for pointwise operators that are compositions of others: each drawn as its definition, every
part read by the rule of its own operator (as :mod:`ncd.trace.boxes_losses` draws a loss).

* ``addcmul(x, a, b, value=v)`` is ``x + v·(a ⊙ b)``;
* ``addcdiv(x, a, b, value=v)`` is ``x + v·(a / b)``;
* ``lerp(a, b, w)`` (a number or a tensor ``w``) is ``a + w·(b − a)``;
* ``bilinear(x, y, W, b)`` (``nn.Bilinear``) is ``einsum("...i,oij,...j->...o", x, W, y) + b``.

Each part is a step made for the occasion whose value is computed from the recorded operands (a constant if none is
live), so the diagram is the definition torch documents, exact by construction up to the rounding of the parts (torch's
fused kernels round once per entry where the parts round per step: ``lerp`` computes ``b − (b − a)(1 − w)`` where
``w ≥ ½``, the same number in exact arithmetic).  Only floating-point operands of the result's dtype are taken.
"""

from __future__ import annotations

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
    """``x + v·(a ⊙ b)`` (``addcmul``) or ``x + v·(a / b)`` (``addcdiv``): the product or quotient, scaled, added."""
    x, a, b = node.args[:3]
    value = _number(node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 1))
    _floats(node, x, a, b)
    divide = "addcdiv" in node.target.name()
    made = [_call(conv, node, "quotient" if divide else "product", aten.div.Tensor if divide else aten.mul.Tensor, a, b)]
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
