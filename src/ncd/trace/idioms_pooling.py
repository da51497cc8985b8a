"""Conversion rules for pooling and batch normalisation (the statistics over a batch's positions).

``max_pool``/``avg_pool`` are pooling boxes over the last wires (a divisor override scales the mean); ``batch_norm`` in
eval mode with running statistics and affine parameters is a batch-norm box, and in training mode without either on a
batch of one (BiT's weight standardisation) a layer norm, checked on the traced values.
"""

from __future__ import annotations

import math
from typing import Any

import sympy
import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms_layers import _ints
from ncd.trace.idioms_wires import _live, _shape, _weight
from ncd.trace.scale_factors import _scale

__all__ = ["pool", "batch_norm"]


@rule("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d", "aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def pool(conv: Converter, node: Node) -> None:
    from ncd.prims.pooling import AvgPoolOp, MaxPoolOp

    x, kernel = node.args[:2]
    name = node.target.name()
    n = int(name[-2])
    extra = list(node.args[2:]) + [None] * 5
    kernel = _ints(kernel, n, 1)
    stride = _ints(extra[0] or kernel, n, 1)
    padding = _ints(extra[1], n, 0)
    divisor = None
    if "avg" in name:  # (ceil_mode, count_include_pad, divisor_override): a divisor d for every window is
        ceil_mode, divisor = extra[2], extra[4]  # the mean over the window (padding counted) times |window| / d
        unsupported = divisor is not None and (bool(ceil_mode) or isinstance(divisor, bool)
                                               or not isinstance(divisor, int) or divisor < 1)
    else:  # (dilation, ceil_mode)
        ceil_mode, unsupported = extra[3], _ints(extra[2], n, 1) != (1,) * n
    if not _live(x) or unsupported or ceil_mode not in (None, False, True):
        raise Decline("dilation, or a divisor with ceil mode")
    vid = conv.value(x)
    seg = conv.segs[vid]
    axes = Segment(seg.axes[len(seg.axes) - n:])
    out_shape = _shape(node)[-n:]
    positions = conv.namer.segment([a.name for a in axes.axes], out_shape)
    try:
        prim: MaxPoolOp | AvgPoolOp
        if "max" in name:
            prim = MaxPoolOp(axes, positions, kernel, stride, padding, (1,) * n, bool(ceil_mode))
        else:
            prim = AvgPoolOp(axes, positions, kernel, stride, padding, extra[3] is not False or divisor is not None,
                             bool(ceil_mode))
    except Exception as error:  # noqa: BLE001 - any rejection: keep the opaque box
        raise Decline(str(error)) from None
    out = conv.apply(Box(prim), [vid])
    if divisor is not None:
        out = _scale(conv, out, sympy.Rational(math.prod(kernel), divisor))
    conv.bind(node, out)


#: how many channels of a standardisation ``_standardise`` checks on the traced values
_CHECKED_CHANNELS = 4


def _standardise(conv: Converter, node: Node, x: Any, eps: float) -> None:
    """``batch_norm(x, training=True)`` with no running statistics and no affine parameters on a batch of one (BiT's
    weight standardisation, ``batch_norm(w.reshape(1, o, -1), None, None, training=True)``): each channel normalised
    over its entries — a layer norm over every wire after the channel, without weight or bias.  Checked on the traced
    values (the two kernels sum in another order) of the first channels: each channel is normalised on its own, by the
    same kernel as the others (checking all of a model's weights cost BiT's trace as much as its forward)."""
    from ncd.prims.normalization import LayerNormOp

    if not (_live(x) and isinstance(x.value, torch.Tensor) and x.value.is_floating_point() and x.value.dim() >= 3
            and x.value.shape[0] == 1):
        raise Decline("batch statistics over a batch of several")
    value = x.value
    if value.device.type != "meta":
        dims = tuple(int(s) for s in value.shape[2:])
        want = node.value[0] if isinstance(node.value, (tuple, list)) else node.value
        some = slice(0, _CHECKED_CHANNELS)
        # the absolute tolerance shrinks with values below 1 (weights far smaller than sqrt(eps) standardise to
        # values far below 1: a fixed 1e-5 passed anything there)
        scale = min(1.0, float(want[:, some].abs().max())) if want[:, some].numel() else 1.0
        if not torch.allclose(torch.nn.functional.layer_norm(value[:, some], dims, eps=eps), want[:, some],
                              atol=1e-5 * scale, rtol=1e-4):
            raise Decline("the standardisation differs from a layer norm on the traced values")
    vid = conv.value(x)
    seg = conv.segs[vid]
    out = conv.apply(Box(LayerNormOp(Segment(seg.axes[2:]), eps, False, False)), [vid])
    conv.bind(node, out)


@rule("aten.batch_norm")
def batch_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import BatchNormOp

    x, weight, bias, mean, var, training, momentum, eps = (list(node.args) + [None] * 8)[:8]
    if training and weight is None and bias is None and mean is None and var is None:
        _standardise(conv, node, x, float(eps if eps is not None else 1e-5))
        return
    w, b = _weight(weight), _weight(bias)
    affine = weight is not None or bias is not None  # neither: ``BatchNorm*d(affine=False)``
    # (statistics computed from the input, ``F.batch_norm(x, x.mean(...), x.var(...))``, are no running statistics:
    # the box holds the traced values as constants, which a fresh input would not give)
    running_mean, running_var = _weight(mean), _weight(var)
    if not _live(x) or training or (affine and (w is None or b is None)) or running_mean is None or running_var is None:
        raise Decline("training mode or one affine parameter alone or no running statistics (constants)")
    vid = conv.value(x)
    seg = conv.segs[vid]
    if len(seg.axes) < 2:
        raise Decline("no channel axis")
    box = Box(BatchNormOp(seg, 1, float(eps), float(momentum if momentum is not None else 0.1), affine, True))
    conv.bind(node, conv.apply(box, [vid]))
    conv.emitted.tensors.append([running_mean, running_var] + ([w, b] if w is not None and b is not None else []))
