"""Gemma's zero-centred RMS norm, ``x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps) * (c + w)``, read off a norm
module's recorded operations (:meth:`~ncd.trace.module_idioms.ModuleIdioms.module_idiom` draws the module as one
``RMS·(1+w)`` box, :class:`~ncd.prims.normalization.RMSNormOp` with ``offset=c``).

:func:`offset_read` says which form to check the module against (the number its recording adds to its weight).
:func:`recorded_exactly` proves the box without running the module: when the module's recorded operations are exactly
those seven in float32 — the square (``pow(x, 2)`` or ``x.square()``), the mean over the last axis kept, ``+ eps``, the
reciprocal root, the product with ``x``, ``c + w`` and the product of the two — each read only by the next, with casts
to their own dtype between (``x.float()``, ``self.weight.float()``, ``type_as(x)`` of a float32 ``x``: the same
tensor), the box computes the same numbers in the same order (its lowering is a weightless ``nn.RMSNorm`` times
``(c + weight)``, and ``nn.RMSNorm`` is that root and product).  Anything else is checked on values as before.
"""

from __future__ import annotations

import math

import torch

from ncd.trace.capture import Node
from ncd.trace.registry import op_name

__all__ = ["offset_read", "recorded_exactly"]

#: operators that give their first argument back in its own dtype (checked on the values: the same dtype and shape)
_SAME = ("aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.alias.default", "aten.type_as.default")


def _through(node: object, run: set[int]) -> object:
    """``node`` followed back through casts to its own dtype recorded in the module (``run``: their ids)."""
    while isinstance(node, Node) and id(node) in run and op_name(node.target)[1] in _SAME and node.args \
            and isinstance(node.args[0], Node) and _same(node, node.args[0]):
        node = node.args[0]
    return node


def _same(node: Node, source: Node) -> bool:
    a, b = node.value, source.value
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape \
        and a.device == b.device


def _number(value: object) -> float | None:
    """A finite number argument (a Python number, or one lifted to a 0-d constant tensor by the recording)."""
    if isinstance(value, Node) and value.kind == "constant" and isinstance(value.value, torch.Tensor) \
            and value.value.dim() == 0 and value.value.is_floating_point():
        value = value.value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def offset_read(run: list[Node], weight: str, within: list[Node] | None = None) -> float | None:
    """The number ``c`` when a norm module's recorded calls ``run`` add it to its float32 weight ``weight`` (by name:
    ``1.0 + self.weight.float()``, Gemma's zero-centred scale, the casts among the calls ``within``, ``run`` if not
    given); else None.  Only which form to check."""
    ids = {id(n) for n in (run if within is None else within)}
    for n in run:
        if op_name(n.target)[1] != "aten.add.Tensor" or n.kwargs or len(n.args) != 2:
            continue
        w, c = n.args if isinstance(n.args[0], Node) and n.args[0].kind != "constant" else n.args[::-1]
        c = _number(c)
        w = _through(w, ids)
        if c and isinstance(w, Node) and w.kind == "parameter" and w.source == weight \
                and isinstance(w.value, torch.Tensor) and w.value.dtype == torch.float32:
            return c
    return None


def recorded_exactly(run: list[Node], source: Node, result: Node, weight: str, offset: float) -> float | None:
    """The ``eps`` of ``x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps) * (offset + w)`` when ``run`` (a norm module's
    recorded calls, on ``source``, giving ``result``) is exactly that in float32, ``w`` the parameter ``weight``, every
    step's arguments the steps before it; else None (the module is then checked on values)."""
    ids = {id(n) for n in run}
    steps = [n for n in run if _through(n, ids) is n]  # (the casts to their own dtype left out)
    if len(steps) != 7 or any(not isinstance(n.value, torch.Tensor) or n.value.dtype != torch.float32 for n in steps):
        return None
    x = source
    if not isinstance(x.value, torch.Tensor) or x.value.dtype != torch.float32 or x.value.dim() < 1:
        return None
    square, mean, add, root, normed, shifted, product = steps
    full = [op_name(n.target)[1] for n in steps]
    if full[0] == "aten.pow.Tensor_Scalar":
        if len(square.args) != 2 or type(square.args[1]) not in (int, float) or square.args[1] != 2:
            return None
    elif full[0] != "aten.square.default" or len(square.args) != 1:
        return None
    if full[1:] != ["aten.mean.dim", "aten.add.Tensor", "aten.rsqrt.default", "aten.mul.Tensor", "aten.add.Tensor",
                    "aten.mul.Tensor"] or any(n.kwargs for n in steps):
        return None
    if _through(square.args[0], ids) is not x:
        return None
    if len(mean.args) != 3 or mean.args[0] is not square or list(mean.args[1] or ()) not in ([-1], [x.value.dim() - 1]) \
            or mean.args[2] is not True:
        return None
    eps = _number(add.args[1]) if len(add.args) == 2 and add.args[0] is mean else None
    if eps is None or eps < 0 or len(root.args) != 1 or root.args[0] is not add:
        return None
    if len(normed.args) != 2 or {id(_through(a, ids)) for a in normed.args} != {id(x), id(root)} \
            or sum(a is root for a in normed.args) != 1:
        return None
    if len(shifted.args) != 2 or offset_read([shifted], weight, run) != offset:
        return None
    if len(product.args) != 2 or {id(_through(a, ids)) for a in product.args} != {id(normed), id(shifted)} \
            or _through(result, ids) is not product:
        return None
    return eps  # (every step's arguments are the steps before it: no other step reads a partial value; outside the
    # module, only its result is read — ModuleIdioms.module_idiom's own condition)
