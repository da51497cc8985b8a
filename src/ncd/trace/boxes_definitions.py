"""Conversion rules for operators drawn as their definitions, each part read by the rule of its own operator (as
:mod:`ncd.trace.boxes_pointwise` draws ``addcmul``):

* ``addr(M, u, v)`` (``beta = alpha = 1``) is ``M + u ⊗ v``, the outer product an einsum with nothing summed: each
  entry one product and one sum, as ATen's kernel rounds them;
* ``count_nonzero(x, dims)`` is ``x ≠ 0`` summed over those wires, one at a time: integers, exact in any order;
* ``nansum(x, dims)`` is ``where(isnan(x), 0, x)`` summed; ``isnan(x)`` is ``¬(|x| ≤ ∞)``;
* ``~t`` of integers is ``−t − 1`` (two's complement, wrapping alike at the ends).

Each part is a step whose value is computed from the recorded operands; the rule checks the last one against the
recorded result (bit for bit) and declines otherwise, so the operator stays an opaque box.
"""

from __future__ import annotations

from typing import Any

import torch

import ncd.trace.boxes_selection  # noqa: F401  (its logic rule of ~mask first: the integer one goes in front)
from ncd.trace.boxes_losses import _call
from ncd.trace.boxes_pointwise import _finish
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, rule

__all__: list[str] = []

aten = torch.ops.aten


def _same(got: Node, node: Node) -> None:
    want = node.value
    if not (isinstance(got.value, torch.Tensor) and isinstance(want, torch.Tensor) and got.value.dtype == want.dtype
            and got.value.shape == want.shape and torch.equal(got.value, want)):
        raise Decline("the parts do not give the recorded result")


@rule("aten.addr")
def addr(conv: Converter, node: Node) -> None:
    """``addr(M, u, v)``: ``M + einsum("i,j->ij", u, v)`` (``beta`` and ``alpha`` other than 1 stay opaque: ATen rounds
    ``beta·M + (alpha·u)·v`` in one expression)."""
    m, u, v = node.args[:3]
    scales = dict(zip(("beta", "alpha"), node.args[3:])) | dict(node.kwargs)
    if any(scales.get(k, 1) != 1 for k in ("beta", "alpha")) or set(scales) - {"beta", "alpha"}:
        raise Decline("scaled terms (beta, alpha)")
    operands = [m, u, v]
    if not all(isinstance(o, Node) and isinstance(o.value, torch.Tensor) and o.value.is_floating_point() for o in operands) \
            or not isinstance(node.value, torch.Tensor) or any(o.value.dtype != node.value.dtype for o in operands) \
            or u.value.dim() != 1 or v.value.dim() != 1 or not any(o.live for o in operands):
        raise Decline("not a float matrix and two vectors of its dtype")
    made = [_call(conv, node, "outer", aten.einsum.default, "i,j->ij", [u, v])]
    made.append(_call(conv, node, "sum", aten.add.Tensor, m, made[-1]))
    _same(made[-1], node)
    _finish(conv, node, made[-1], made)


@rule("aten.count_nonzero")
def count_nonzero(conv: Converter, node: Node) -> None:
    """``count_nonzero(x, dims)``: the flags ``x ≠ 0`` summed over ``dims`` (every wire if none), the later wires first."""
    x = node.args[0]
    given: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dim() > 0
            and not x.value.is_complex()):
        raise Decline("not a live tensor with wires")
    rank = x.value.dim()
    dims = list(range(rank)) if given is None else [given] if isinstance(given, int) else list(given)
    if not dims or not all(isinstance(d, int) for d in dims):
        raise Decline("no wire to count over")
    made = [_call(conv, node, "nonzero", aten.ne.Scalar, x, 0)]
    for d in sorted({d % rank for d in dims}, reverse=True):
        made.append(_call(conv, node, f"count_{d}", aten.sum.dim_IntList, made[-1], [d]))
    _same(made[-1], node)
    _finish(conv, node, made[-1], made)


@rule("aten.nansum")
def nansum(conv: Converter, node: Node) -> None:
    """``nansum(x, dims, keepdim)`` of floats: ``where(isnan(x), 0, x)`` summed (ATen's own sum of the same numbers)."""
    x = node.args[0]
    given = dict(zip(("dim", "keepdim", "dtype"), node.args[1:])) | dict(node.kwargs)
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()) \
            or given.get("dtype") not in (None, x.value.dtype) or set(given) - {"dim", "keepdim", "dtype"}:
        raise Decline("not a live float tensor summed in its own dtype")
    made = [_call(conv, node, "missing", aten.isnan.default, x)]
    made.append(_call(conv, node, "numbers", aten.where.ScalarSelf, made[-1], 0.0, x))
    dims = given.get("dim")
    if dims is None or dims == [] or dims == ():
        if given.get("keepdim"):
            raise Decline("every wire kept")
        made.append(_call(conv, node, "sum", aten.sum.default, made[-1]))
    else:
        made.append(_call(conv, node, "sum", aten.sum.dim_IntList, made[-1], [dims] if isinstance(dims, int) else list(dims),
                          bool(given.get("keepdim", False))))
    _same(made[-1], node)
    _finish(conv, node, made[-1], made)


@rule("aten.isnan")
def isnan(conv: Converter, node: Node) -> None:
    """``isnan(x)`` of floats: ``¬(|x| ≤ ∞)`` (false of every number and infinity, true of NaN alone)."""
    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()):
        raise Decline("not a live float tensor")
    made = [_call(conv, node, "size", aten.abs.default, x)]
    made.append(_call(conv, node, "a_number", aten.le.Scalar, made[-1], float("inf")))
    made.append(_call(conv, node, "missing", aten.logical_not.default, made[-1]))
    _same(made[-1], node)
    _finish(conv, node, made[-1], made)


def _inverted(conv: Converter, node: Node) -> bool:
    """``~t`` (``bitwise_not``) of a live integer tensor: ``−t − 1``; masks go on to the logic rule (``¬``)."""
    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and isinstance(node.value, torch.Tensor)
            and node.value.dtype == x.value.dtype and node.value.dtype not in (torch.bool, torch.uint8)
            and not x.value.is_floating_point() and not x.value.is_complex()):
        return False
    made = [_call(conv, node, "negated", aten.neg.default, x)]
    made.append(_call(conv, node, "inverted", aten.sub.Tensor, made[-1], 1))
    _same(made[-1], node)
    _finish(conv, node, made[-1], made)
    return True


hook(("aten.bitwise_not",), _inverted)
