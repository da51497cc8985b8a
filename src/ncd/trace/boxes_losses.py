"""Conversion rules for losses: each drawn as its definition, every part read by the rule of its own operator.

``mse_loss(a, b)`` is ``mean((a − b)²)`` and ``l1_loss`` ``mean(|a − b|)`` (``reduction="sum"``: the sum; ``"none"``:
neither).  ``cross_entropy(logits, target)`` with class indices is ``−log_softmax(logits)`` gathered at the targets
(``nll_loss`` the same on log-probabilities), its label smoothing ``ε`` the mix ``(1 − ε)·nll + ε·mean_c(−log p)``, and
an ignored class a mask: the mean is ``Σ loss·mask / Σ mask``, as torch's (an ``ignore_index`` no class has, -100 or a
QA head's sequence length, is read at a class clamped into range where the labels hold it, whatever the traced
labels were);
class weights ``w`` multiply each row's loss by ``w[target]`` and the mean is ``Σ loss·w·mask / Σ w·mask`` (with label
smoothing they stay opaque).  ``huber_loss`` is ``½d²`` where ``|d| < δ`` else ``δ(|d| − ½δ)``, ``smooth_l1_loss``
``½d²/β`` where ``|d| < β`` else ``|d| − ½β`` (``β = 0``: ``|d|``), ``kl_div(x, t)`` torch's ``xlogy(t, t) − t·x``
(``t·log t`` but ``0`` where ``t = 0``; with ``log_target``: ``eᵗ(t − x)``) and ``binary_cross_entropy_with_logits(x, y)``
``(1 − y)x + w·softplus(−x)`` (``w = 1 + (p − 1)y`` with a ``pos_weight`` ``p``; a ``weight`` multiplies the entries).
``binary_cross_entropy`` on probabilities stays opaque: torch clamps its logarithms at −100 and its gradient's
denominator at 1e-12, which a composition differentiates otherwise where a sigmoid saturates.  Each part is a step made
for the occasion whose value is computed from the recorded operands (a constant if none is live; as
:mod:`ncd.trace.boxes_products` does), so the diagram is exact by construction.
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
    """The step ``target(*args)`` of ``node``, its value computed from the recorded operands, converted (a constant
    if no operand is live)."""
    values = [[v.value if isinstance(v, Node) else v for v in a] if isinstance(a, list)
              else a.value if isinstance(a, Node) else a for a in args]
    if any(isinstance(v, torch.Tensor) and v.device.type == "meta" for v in values):  # scores recorded without values
        values = [v.to("meta") if isinstance(v, torch.Tensor) else v for v in values]  # (wav2vec2): labels with them
    value = target(*values, **kwargs)
    live = any(isinstance(v, Node) and (v.live or v.kind == "parameter") for a in args for v in (a if isinstance(a, list) else [a]))
    if not live:  # a step of constants (class weights at the model's own labels) is a constant
        return Node(f"{node.name}_{suffix}", "constant", value=value, source=node.source)
    return _run(conv, _step(node, suffix, target, tuple(args), value, live, **kwargs))


def _reduce(conv: Converter, node: Node, loss: Node, reduction: Any, mask: Node | None = None,
            weights: Node | None = None) -> None:
    """Bind ``node`` to ``loss`` reduced as ``reduction`` says (over the entries ``mask`` keeps, if given; a mean
    divides by the sum of ``weights``, if given, over those entries)."""
    if reduction not in (NONE, MEAN, SUM):
        raise Decline(f"reduction {reduction!r}")
    if mask is not None:
        loss = _call(conv, node, "kept", aten.mul.Tensor, loss, mask)
    if reduction != NONE:
        total = _call(conv, node, "total", aten.sum.default, loss)
        if reduction == MEAN and (mask is not None or weights is not None):
            if mask is None:
                count = weights
            else:
                count = _call(conv, node, "flags", aten._to_copy.default, mask, dtype=loss.value.dtype)
                if weights is not None:
                    count = _call(conv, node, "kept_weights", aten.mul.Tensor, weights, count)
            assert count is not None
            loss = _call(conv, node, "mean", aten.div.Tensor, total, _call(conv, node, "count", aten.sum.default, count))
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
    """``cross_entropy(logits, target)`` / ``nll_loss(log_p, target)`` with class indices (class weights: each row's
    loss times its class's weight, the mean over their sum; not with label smoothing)."""
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
    if weight is not None and (smoothing or not (isinstance(weight, Node) and isinstance(weight.value, torch.Tensor)
                                                 and weight.value.dtype == x.value.dtype)):
        raise Decline("class weights with label smoothing, or not a float tensor")
    if not isinstance(ignore, int) or isinstance(smoothing, bool) \
            or not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
        raise Decline("options that are not numbers")
    shape = tuple(x.value.shape)
    if len(shape) != 2 or tuple(target.value.shape) != shape[:1]:
        raise Decline("scores that are not (batch, class)")
    classes = shape[1]
    if weight is not None and tuple(weight.value.shape) != (classes,):
        raise Decline("not one weight per class")
    logp = _call(conv, node, "log_p", aten._log_softmax.default, x, 1, False) if cross else x
    mask, picks = None, target
    if not 0 <= ignore < classes and (target.live or bool((target.value == ignore).any())):
        # an index no class has (-100; a QA head's ``ignore_index=t`` on positions clamped to t): torch skips those
        # rows, whatever the traced labels held; they are read at a class in range and count for nothing.  Below 0
        # they are read at 0 and any other negative label where it is, so the gather raises as torch does (clamped, -1
        # was read at 0: a loss where torch raises); past the classes (a QA head's positions clamped to t) the labels
        # are clamped, so the positions keep the axis' range
        mask = _call(conv, node, "mask", aten.ne.Scalar, target, ignore)
        picks = (_call(conv, node, "safe", aten.mul.Tensor, target, mask) if ignore < 0
                 else _call(conv, node, "safe", aten.clamp_max.default, target, classes - 1))
    if picks.live:
        index = _call(conv, node, "index", aten.unsqueeze.default, picks, 1)
    else:  # labels the model makes (CLIP's arange): a constant
        index = Node(f"{node.name}_index", "constant", value=picks.value.unsqueeze(1), source=picks.source)
    picked = _call(conv, node, "picked", aten.gather.default, logp, 1, index)
    nll = _call(conv, node, "nll", aten.neg.default, _call(conv, node, "row", aten.squeeze.dim, picked, 1))
    if smoothing:
        spread = _call(conv, node, "spread", aten.neg.default, _call(conv, node, "mean_c", aten.mean.dim, logp, [1]))
        nll = _call(conv, node, "smoothed", aten.add.Tensor, _call(conv, node, "kept_nll", aten.mul.Tensor, nll,
                                                                   1.0 - float(smoothing)),
                    _call(conv, node, "kept_spread", aten.mul.Tensor, spread, float(smoothing)))
    weights = None
    if weight is not None:  # each row's loss times its class's weight; the mean divides by their sum
        weights = _call(conv, node, "weights", aten.index.Tensor, weight, [picks])
        nll = _call(conv, node, "weighted", aten.mul.Tensor, nll, weights)
    if 0 <= ignore < classes:  # a class the scores have: its rows count for nothing
        mask = _call(conv, node, "mask", aten.ne.Scalar, target, ignore)
    _reduce(conv, node, nll, reduction, mask, weights)


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


def _options(node: Node, names: tuple[str, ...], defaults: tuple[Any, ...]) -> list[Any]:
    given = dict(zip(names, node.args[2:])) | dict(node.kwargs)
    return [given.get(n, d) for n, d in zip(names, defaults)]


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise Decline("a threshold that is not a number >= 0")
    return float(value)


@rule("aten.huber_loss", "aten.smooth_l1_loss")
def huber_loss(conv: Converter, node: Node) -> None:
    """``½d²`` inside ``|d| < δ`` and linear outside (Huber ``δ(|d| − ½δ)``, smooth L1 ``(½d²)/β`` and ``|d| − ½β``)."""
    a, b = _float_pair(node)
    huber = "huber" in node.target.name()
    reduction, threshold = _options(node, ("reduction", "delta" if huber else "beta"), (MEAN, 1.0))
    threshold = _positive(threshold)
    difference = _call(conv, node, "difference", aten.sub.Tensor, a, b)
    size = _call(conv, node, "abs", aten.abs.default, difference)
    if threshold == 0:  # smooth L1: the absolute value (torch refuses a Huber delta of 0)
        if huber:
            raise Decline("a Huber delta of 0")
        _reduce(conv, node, size, reduction)
        return
    square = _call(conv, node, "half_square", aten.mul.Tensor, _call(conv, node, "square", aten.pow.Tensor_Scalar,
                                                                     size, 2), 0.5)
    linear = _call(conv, node, "shifted", aten.sub.Tensor, size, 0.5 * threshold)
    if huber:
        linear = _call(conv, node, "linear", aten.mul.Tensor, linear, threshold)
    else:
        square = _call(conv, node, "scaled", aten.div.Tensor, square, threshold)
    inside = _call(conv, node, "inside", aten.lt.Scalar, size, threshold)
    _reduce(conv, node, _call(conv, node, "entries", aten.where.self, inside, square, linear), reduction)


@rule("aten.kl_div")
def kl_div(conv: Converter, node: Node) -> None:
    """torch's ``xlogy(t, t) − t·x`` (``xlogy`` the ``where`` of ``t = 0``: 0, and ``t·log t``), or ``eᵗ·(t − x)`` with
    ``log_target``."""
    x, t = _float_pair(node)
    reduction, log_target = _options(node, ("reduction", "log_target"), (MEAN, False))
    if not isinstance(log_target, bool):
        raise Decline("log_target not a bool")
    if log_target:
        gap = _call(conv, node, "gap", aten.sub.Tensor, t, x)
        _reduce(conv, node, _call(conv, node, "entries", aten.mul.Tensor,
                                  _call(conv, node, "target", aten.exp.default, t), gap), reduction)
        return
    zero = _call(conv, node, "zero", aten.eq.Scalar, t, 0)
    entropy = _call(conv, node, "t_log_t", aten.mul.Tensor, t, _call(conv, node, "log", aten.log.default, t))
    xlogy = _call(conv, node, "xlogy", aten.where.ScalarSelf, zero, 0.0, entropy)  # torch's xlogy(t, t), its gradient too
    cross = _call(conv, node, "cross", aten.mul.Tensor, t, x)
    _reduce(conv, node, _call(conv, node, "entries", aten.sub.Tensor, xlogy, cross), reduction)


@rule("aten.binary_cross_entropy_with_logits")
def bce_with_logits(conv: Converter, node: Node) -> None:
    """``(1 − y)·x + (1 + (p − 1)·y)·softplus(−x)``, times ``weight`` if given."""
    x, y = _float_pair(node)
    weight, pos_weight, reduction = _options(node, ("weight", "pos_weight", "reduction"), (None, None, MEAN))
    for w in (weight, pos_weight):
        if w is not None and not (isinstance(w, Node) and isinstance(w.value, torch.Tensor)
                                  and w.value.dtype == x.value.dtype):
            raise Decline("a weight that is not a float tensor")
    linear = _call(conv, node, "linear", aten.mul.Tensor, _call(conv, node, "complement", aten.rsub.Scalar, y, 1), x)
    soft = _call(conv, node, "softplus", aten.softplus.default,
                 _call(conv, node, "negated", aten.neg.default, x), 1, 20)
    if pos_weight is not None:
        less = _call(conv, node, "pos_less", aten.sub.Tensor, pos_weight, 1)
        scale = _call(conv, node, "pos_scale", aten.add.Tensor, _call(conv, node, "pos_extra", aten.mul.Tensor, less, y), 1)
        soft = _call(conv, node, "weighted_softplus", aten.mul.Tensor, scale, soft)
    entries = _call(conv, node, "entries", aten.add.Tensor, linear, soft)
    if weight is not None:
        entries = _call(conv, node, "weighted", aten.mul.Tensor, entries, weight)
    _reduce(conv, node, entries, reduction)
