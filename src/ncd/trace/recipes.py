"""Recorded operations compared as a recipe: the same operations, in the same order, on equal arguments.

Two values made by equal recipes from the same inputs are equal (torch's operations on the CPU give the same values
for the same arguments), so what was proven of one by re-running its operations holds of the other without re-running
them: each layer of ``nn.TransformerEncoder`` makes its own float mask from the same padding input
(:func:`ncd.trace.live_masks._read_mask`).

>>> import torch
>>> from ncd.trace.capture import Node
>>> x = Node("x", "input", value=torch.zeros(2))
>>> a = Node("a", "call", torch.ops.aten.add.Tensor, (x, 1.0), live=True)
>>> b = Node("b", "call", torch.ops.aten.add.Tensor, (x, 1.0), live=True)
>>> same_recipe(recipe([a], [x]), recipe([b], [x])), same_recipe(recipe([a], [x]), recipe([b], []))
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ncd.trace.capture import Node

__all__ = ["recipe", "same_recipe"]


@dataclass(frozen=True)
class _Made:
    """The value of the recipe's operation at ``position``."""

    position: int


@dataclass(frozen=True)
class _Input:
    """The recipe's input at ``position``."""

    position: int


def recipe(nodes: list[Node], inputs: list[Node]) -> list[Any]:
    """The operations ``nodes`` (in recorded order) with their arguments: each of ``nodes`` read as its position, each
    of ``inputs`` as its own; other nodes (constants, parameters) stay, compared by their values."""
    made: dict[int, Any] = {id(n): _Made(k) for k, n in enumerate(nodes)}
    made.update({id(n): _Input(k) for k, n in enumerate(inputs)})

    def arg(value: Any) -> Any:
        if isinstance(value, Node):
            return made.get(id(value), value)
        if isinstance(value, (list, tuple)):
            return type(value)(arg(v) for v in value)
        if isinstance(value, dict):
            return {k: arg(v) for k, v in value.items()}
        return value

    return [(n.target, arg(n.args), arg(n.kwargs)) for n in nodes]


def same_recipe(a: list[Any], b: list[Any]) -> bool:
    """Equal recipes (:func:`recipe`); parts that cannot be compared (meta tensors) make them unequal."""
    try:
        return _same(a, b)
    except Exception:  # noqa: BLE001 - not known to be the same
        return False


def _same(a: Any, b: Any) -> bool:
    """The same type, and equal: tensors and the values of constant nodes of the same type, shape and entries (NaN
    equal to NaN); operations and other arguments by ``==``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, Node):  # a constant or parameter (the recipe's own operations and inputs are positions)
        return a is b or not a.live and not b.live and _same(a.value, b.value)
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            return False
        if a.is_floating_point() or a.is_complex():
            return bool(((a == b) | (a.isnan() & b.isnan())).all())
        return bool(torch.equal(a, b))
    if isinstance(a, float) and a != a:
        return bool(b != b)
    return bool(a == b)
