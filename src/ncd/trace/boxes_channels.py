"""Conversion rules for the boxes with learned parameters per channel: ``group_norm``, ``instance_norm`` (from its
input's statistics, or from running ones: a batch norm) and ``prelu`` (see :mod:`ncd.trace.boxes` for the shared
helpers)."""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.boxes import _live_float, _own, _same_wires
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []


def _weight(value: Any) -> torch.Tensor | None:
    from ncd.trace.idioms import _weight as weight

    return weight(value)


@rule("aten.group_norm")
def group_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.groupnorm import GroupNormOp

    x, groups = node.args[:2]
    extra = list(node.args[2:]) + [None] * 3
    weight, bias, eps = extra[0], extra[1], extra[2] if extra[2] is not None else 1e-5
    w, b = _weight(weight), _weight(bias)
    if (weight is None) != (bias is None) or (weight is not None and (w is None or b is None)):
        raise Decline("group norm with computed or partial parameters")
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    if len(seg.axes) < 2:
        raise Decline("no channel axis")
    try:
        box = Box(GroupNormOp(Segment(seg.axes[1:]), int(groups), float(eps), w is not None))
    except Exception as error:  # noqa: BLE001 - a group norm the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(box, [vid]))
    if w is not None and b is not None:
        conv.emitted.tensors.append([w, b])


@rule("aten.instance_norm")
def instance_norm(conv: Converter, node: Node) -> None:
    """``F.instance_norm`` from its input's statistics (no running statistics read or updated): a group norm with a
    group per channel (channels at dim 1), with its per-channel weight and bias if learned; from running statistics
    (evaluation), the batch norm that reads them."""
    from ncd.prims.groupnorm import GroupNormOp

    names = ("input", "weight", "bias", "running_mean", "running_var", "use_input_stats", "momentum", "eps")
    given = dict(zip(names, node.args)) | {k: v for k, v in node.kwargs.items() if k in names}
    weight, bias = given.get("weight"), given.get("bias")
    w, b = _weight(weight), _weight(bias)
    if (weight is None) != (bias is None) or (weight is not None and (w is None or b is None)):
        raise Decline("instance norm with computed or partial parameters")
    if not given.get("use_input_stats", True):
        _instance_norm_running(conv, node, given, w, b)
        return
    if given.get("running_mean") is not None or given.get("running_var") is not None:
        raise Decline("instance norm updating running statistics")
    vid = _live_float(conv, given["input"])
    seg = conv.segs[vid]
    if len(seg.axes) < 3:
        raise Decline("no batch, channel and position axes")
    try:
        box = Box(GroupNormOp(Segment(seg.axes[1:]), int(seg.axes[1].size), float(given.get("eps", 1e-5)), w is not None))
    except Exception as error:  # noqa: BLE001 - a norm the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(box, [vid]))
    if w is not None and b is not None:
        conv.emitted.tensors.append([w, b])


def _instance_norm_running(conv: Converter, node: Node, given: dict[str, Any], w: Any, b: Any) -> None:
    """``nn.InstanceNorm*d(track_running_stats=True)`` in evaluation reads its running statistics per channel: torch's
    ``batch_norm`` in evaluation with them (what ATen computes), a batch norm box holding the statistics."""
    from ncd.prims.normalization import BatchNormOp

    mean, var = given.get("running_mean"), given.get("running_var")
    if not (isinstance(mean, Node) and isinstance(var, Node) and not mean.live and not var.live):
        raise Decline("running statistics that are not the model's buffers")
    vid = _live_float(conv, given["input"])
    seg = conv.segs[vid]
    if len(seg.axes) < 3 or mean.value.shape != (int(seg.axes[1].size),):
        raise Decline("no batch, channel and position axes")
    momentum = given.get("momentum", 0.1)
    box = Box(BatchNormOp(seg, 1, float(given.get("eps", 1e-5)), float(momentum if momentum is not None else 0.1),
                          w is not None, True))
    _same_wires(conv, node, conv.apply(box, [vid]))
    conv.emitted.tensors.append([mean.value, var.value] + ([w, b] if w is not None else []))


@rule("aten.prelu")
def prelu(conv: Converter, node: Node) -> None:
    """``F.prelu(x, a)`` with learned slopes: one for every entry, or one per channel (dim 1, as torch reads it)."""
    from ncd.prims.prelu import PReLUOp

    x, weight = node.args[:2]
    w = _weight(weight)
    if w is None or w.dim() != 1 or w.dtype != node.value.dtype:
        raise Decline("slopes that are not a learned vector")
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    if w.numel() == 1:
        own = Segment((), seg.dtype, seg.range)
    elif len(seg.axes) >= 2 and int(seg.axes[1].size) == w.numel():
        own = _own(conv, vid, [1])
    else:
        raise Decline("slopes that do not match the channels")
    _same_wires(conv, node, conv.apply(Box(PReLUOp(own)), [vid]))
    conv.emitted.tensors.append([w])
