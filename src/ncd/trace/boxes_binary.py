"""Conversion rule for the named functions of two tensors (:mod:`ncd.prims.binary_functions`): ``atan2``, ``hypot``,
``logaddexp``, ``logaddexp2``, ``fmod``, ``copysign``, ``fmax``, ``fmin``, ``xlogy`` of float operands of the result's
dtype (one of them may be a Python number: ``torch.fmod(x, 0.5)``), broadcast by position as torch does.

The box lowers to the very call recorded; the rule checks on the recorded values that the call on the operands as the
lowered module holds them (a number as a 0-dim tensor) gives the recorded result, bit for bit, else declines (the
operator stays an opaque box).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []

#: ATen operator -> the row of ``ncd.prims.binary_functions.BINARY``
FUNCTIONS = {"atan2": "atan2", "arctan2": "atan2", "hypot": "hypot", "logaddexp": "logaddexp",
             "logaddexp2": "logaddexp2", "fmod": "fmod", "copysign": "copysign", "fmax": "fmax", "fmin": "fmin",
             "xlogy": "xlogy"}


def _held(value: Any, dtype: torch.dtype) -> torch.Tensor:
    """An operand as the lowered module holds it: a recorded tensor, or a number as its 0-dim tensor."""
    from ncd.trace.idioms_arithmetic import number_tensor

    if isinstance(value, Node):
        tensor: torch.Tensor = value.value
        return tensor
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Decline(f"an operand {value!r} that is neither a tensor nor a finite number")
    return number_tensor(value, dtype)


@rule(*(f"aten.{name}" for name in FUNCTIONS))
def binary_function(conv: Converter, node: Node) -> None:
    """``f(a, b)`` entry by entry: one :class:`~ncd.prims.binary_functions.BinaryFunctionOp` box."""
    from ncd.prims.binary_functions import BinaryFunctionOp
    from ncd.trace.idioms_arithmetic import bind_product, operand, out_names

    name = node.target.name().split("::")[1].split(".")[0]
    if len(node.args) != 2 or node.kwargs:
        raise Decline("not a call on two operands")
    a, b = node.args
    result = node.value
    if not isinstance(result, torch.Tensor) or not result.is_floating_point():
        raise Decline("not a float result")
    tensors = [v for v in (a, b) if isinstance(v, Node)]
    if not any(v.live for v in tensors):
        raise Decline("no live operand")
    if any(not isinstance(v.value, torch.Tensor) or v.value.dtype != result.dtype for v in tensors):
        raise Decline("operands of another dtype")
    held = [_held(v, result.dtype) for v in (a, b)]
    again = getattr(torch, FUNCTIONS[name])(*held)
    if again.dtype != result.dtype or again.shape != result.shape \
            or not torch.equal(torch.where(again.isnan(), 0, again), torch.where(result.isnan(), 0, result)) \
            or not torch.equal(again.isnan(), result.isnan()):
        raise Decline("the call on the operands as held does not give the recorded result")
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in result.shape)
    va, vb = operand(conv, a, names, shape, result.dtype), operand(conv, b, names, shape, result.dtype)
    bind_product(conv, node, BinaryFunctionOp(function=FUNCTIONS[name]), va, vb, names, commutes=False)
