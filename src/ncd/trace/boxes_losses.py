"""Conversion rules for losses: each drawn as its definition, every part read by the rule of its own operator.

``mse_loss(a, b)`` is ``mean((a − b)²)`` and ``l1_loss`` ``mean(|a − b|)`` (``reduction="sum"``: the sum; ``"none"``:
neither).  ``cross_entropy(logits, target)`` with class indices is ``−log_softmax(logits)`` gathered at the targets
(``nll_loss`` the same on log-probabilities), its label smoothing ``ε`` the mix ``(1 − ε)·nll + ε·mean_c(−log p)``, and
an ignored class (``ignore_index`` a class the logits have) a mask: the mean is ``Σ loss·mask / Σ mask``, as torch's.
Class weights stay opaque.  Each part is a step made for the occasion whose value is computed from the recorded operands
(as :mod:`ncd.trace.boxes_products` does), so the diagram is exact by construction.
``broadcast_tensors`` of tensors of one shape is each tensor itself.
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.boxes_products import _step
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []

aten = torch.ops.aten
#: ATen's reductions (``torch.nn._reduction``): 0 none, 1 mean, 2 sum
NONE, MEAN, SUM = 0, 1, 2


def _run(conv: Converter, step: Node) -> Node:
    """Convert ``step`` by the rule of its operator (a decline declines the loss: the whole call stays opaque)."""
    from ncd.trace.convert import RULES

    name = step.target.name().split(".")[0].replace("::", ".")
    RULES[name](conv, step)
    if id(step) not in conv.values:
        raise Decline(f"{name} of a loss")
    return step


def _call(conv: Converter, node: Node, suffix: str, target: Any, *args: Any, **kwargs: Any) -> Node:
    """The step ``target(*args)`` of ``node``, its value computed from the recorded operands, converted."""
    values = [a.value if isinstance(a, Node) else a for a in args]
    value = target(*values, **kwargs)
    live = any(isinstance(a, Node) and a.live for a in args)
    return _run(conv, _step(node, suffix, target, tuple(args), value, live, **kwargs))


def _reduce(conv: Converter, node: Node, loss: Node, reduction: Any, mask: Node | None = None) -> None:
    """Bind ``node`` to ``loss`` reduced as ``reduction`` says (over the entries ``mask`` keeps, if given)."""
    if reduction not in (NONE, MEAN, SUM):
        raise Decline(f"reduction {reduction!r}")
    if mask is not None:
        loss = _call(conv, node, "kept", aten.mul.Tensor, loss, mask)
    if reduction != NONE:
        total = _call(conv, node, "total", aten.sum.default, loss)
        if reduction == MEAN and mask is not None:
            count = _call(conv, node, "count", aten.sum.default, _call(conv, node, "flags", aten._to_copy.default, mask,
                                                                          dtype=loss.value.dtype))
            loss = _call(conv, node, "mean", aten.div.Tensor, total, count)
        elif reduction == MEAN:
            loss = _call(conv, node, "mean", aten.mean.default, loss)
        else:
            loss = total
    if tuple(loss.value.shape) != tuple(node.value.shape) or loss.value.dtype != node.value.dtype:
        raise Decline("the loss comes out in another shape or dtype")
    conv.bind(node, conv.values[id(loss)])


def _float_pair(node: Node) -> tuple[Node, Node]:
    a, b = node.args[:2]
    if not all(isinstance(v, Node) and isinstance(v.value, torch.Tensor) and v.value.is_floating_point() for v in (a, b)):
        raise Decline("not two float tensors")
    if tuple(a.value.shape) != tuple(b.value.shape) or a.value.dtype != b.value.dtype or not (a.live or b.live):
        raise Decline("tensors of two shapes or dtypes")
    return a, b


@rule("aten.mse_loss", "aten.l1_loss")
def distance_loss(conv: Converter, node: Node) -> None:
    """``mean((a − b)²)`` / ``mean(|a − b|)`` (or their sum, or neither)."""
    a, b = _float_pair(node)
    reduction = node.args[2] if len(node.args) > 2 else node.kwargs.get("reduction", MEAN)
    difference = _call(conv, node, "difference", aten.sub.Tensor, a, b)
    if "mse" in node.target.name():
        entries = _call(conv, node, "square", aten.pow.Tensor_Scalar, difference, 2)
    else:
        entries = _call(conv, node, "abs", aten.abs.default, difference)
    _reduce(conv, node, entries, reduction)


@rule("aten.cross_entropy_loss", "aten.nll_loss_nd", "aten.nll_loss")
def class_loss(conv: Converter, node: Node) -> None:
    """``cross_entropy(logits, target)`` / ``nll_loss(log_p, target)`` with class indices, no class weights."""
    cross = "cross_entropy" in node.target.name()
    x, target = node.args[:2]
    names = ("weight", "reduction", "ignore_index") + (("label_smoothing",) if cross else ())
    given = dict(zip(names, node.args[2:])) | dict(node.kwargs)
    weight, reduction = given.get("weight"), given.get("reduction", MEAN)
    ignore, smoothing = given.get("ignore_index", -100), given.get("label_smoothing", 0.0)
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()):
        raise Decline("not live float scores")
    if not (isinstance(target, Node) and isinstance(target.value, torch.Tensor) and target.value.dtype == torch.int64):
        raise Decline("targets that are not class indices")
    if weight is not None or not isinstance(ignore, int) or isinstance(smoothing, bool) \
            or not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
        raise Decline("class weights, or options that are not numbers")
    shape = tuple(x.value.shape)
    if len(shape) != 2 or tuple(target.value.shape) != shape[:1]:
        raise Decline("scores that are not (batch, class)")
    classes = shape[1]
    logp = _call(conv, node, "log_p", aten._log_softmax.default, x, 1, False) if cross else x
    if target.live:
        index = _call(conv, node, "index", aten.unsqueeze.default, target, 1)
    else:  # labels the model makes (CLIP's arange): a constant
        index = Node(f"{node.name}_index", "constant", value=target.value.unsqueeze(1), source=target.source)
    picked = _call(conv, node, "picked", aten.gather.default, logp, 1, index)
    nll = _call(conv, node, "nll", aten.neg.default, _call(conv, node, "row", aten.squeeze.dim, picked, 1))
    if smoothing:
        spread = _call(conv, node, "spread", aten.neg.default, _call(conv, node, "mean_c", aten.mean.dim, logp, [1]))
        nll = _call(conv, node, "smoothed", aten.add.Tensor, _call(conv, node, "kept_nll", aten.mul.Tensor, nll,
                                                                   1.0 - float(smoothing)),
                    _call(conv, node, "kept_spread", aten.mul.Tensor, spread, float(smoothing)))
    mask = None
    if 0 <= ignore < classes:  # a class the scores have: its rows count for nothing (an index outside raises in gather)
        mask = _call(conv, node, "mask", aten.ne.Scalar, target, ignore)
    _reduce(conv, node, nll, reduction, mask)


@rule("aten.broadcast_tensors")
def broadcast_tensors(conv: Converter, node: Node) -> None:
    """``broadcast_tensors`` of tensors that all have the broadcast shape: each is itself."""
    tensors = node.args[0]
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, Node) for t in tensors) \
            or any(tuple(t.value.shape) != tuple(out.shape) for t, out in zip(tensors, node.value)):
        raise Decline("a broadcast that changes a shape")
    used = sorted({c.args[1] for c in conv.consumers.get(id(node), []) if "getitem" in str(c.target)})
    for k in used:
        conv._picked[(id(node), k)] = conv.value(tensors[k])
