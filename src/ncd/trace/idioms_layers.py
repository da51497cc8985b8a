"""Conversion rules for embeddings, layer and RMS normalisation, and convolutions.

Each reads its parameters off the captured node (a learned table, weight and bias: ``_weight``) and draws one box of the
paper's vocabulary; a convolution's output channels are named like a learned map's output
(:func:`ncd.trace.idioms_linear.linear_out_name`), a convolution by a computed weight is
:func:`ncd.trace.boxes_windows.computed_weight_convolution`.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms_linear import linear_out_name
from ncd.trace.idioms_wires import _live, _shape, _tensor, _weight
from ncd.trace.naming import PRIME

__all__ = ["embedding", "layer_norm", "rms_norm", "convolution"]


@rule("aten.embedding")
def embedding(conv: Converter, node: Node) -> None:
    from ncd.prims.embedding import EmbeddingOp

    weight, ids = node.args[0], node.args[1]
    given = dict(zip(("padding_idx", "scale_grad_by_freq", "sparse"), node.args[2:])) | dict(node.kwargs)
    if given.get("scale_grad_by_freq") or given.get("sparse"):  # gradients the box's would not be: opaque (exact)
        raise Decline("gradients scaled by frequency, or sparse")
    table = _weight(weight)
    if table is None or table.dim() != 2 or not _tensor(ids) or ids.value.is_floating_point():
        raise Decline("not a learned table")  # ids may be constant: a table read at fixed rows (BERT's token types)
    vid = conv.value(ids)
    seg = conv.segs[vid]
    if seg.dtype == "index" and seg.range is not None and not seg.range.free_symbols and int(seg.range) != table.shape[0]:
        from ncd.prims.opaque import ViewOp  # the model takes only positions below the table's rows: read them as rows

        wider = Segment(seg.axes, "index", sympy.Integer(int(table.shape[0])))
        (vid,) = conv.emit(Box(ViewOp(seg, wider)), [vid], [wider])
        seg = wider
    if seg.dtype != "index" or seg.range is None or int(seg.range) != table.shape[0]:
        raise Decline("indices without the vocabulary as range")
    dim = conv.namer.segment([conv.namer.fresh(int(table.shape[1]), _embedding_role(conv, int(table.shape[1])))],
                             (int(table.shape[1]),))
    label = (conv.stack[-1][0].rsplit(".", 1)[-1] or None) if conv.stack else None
    pad = given.get("padding_idx")  # F.embedding passes a row >= 0, or -1 for none: lookups of it give no gradient
    padding = int(pad) if isinstance(pad, int) and not isinstance(pad, bool) and 0 <= pad < table.shape[0] else None
    out = conv.apply(Box(EmbeddingOp(seg.range, dim, padding), label), [vid])
    conv.emitted.tensors.append([table])
    conv.bind(node, out)


def _embedding_role(conv: Converter, width: int) -> str:
    """The role of an embedding's rows: the width ``m``, unless the config gives their size one other role a table
    holds one entry per (T5's relative-position bias: one per head ``h``)."""
    from ncd.trace.convert import PARAMETER_ROLES

    roles = conv.namer.config.get(width, set())
    letters = roles & PARAMETER_ROLES
    return next(iter(letters)) if len(letters) == 1 and "m" not in roles else "m"


@rule("aten.layer_norm")
def layer_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import LayerNormOp

    x, shape = node.args[0], node.args[1]
    extra = list(node.args[2:]) + [None] * 3
    weight, bias, eps = extra[0], extra[1], extra[2] if extra[2] is not None else 1e-5
    w, b = _weight(weight), _weight(bias)
    if _live(x) and (_live(weight) or _live(bias)):
        _computed_scale(conv, node, weight, bias, float(eps), len(shape))
        return
    if not _live(x) or (weight is not None and w is None) or (bias is not None and b is None) or (w is None and b is not None):
        raise Decline("normalisation with computed parameters")
    vid = conv.value(x)
    seg = conv.segs[vid]
    axes = Segment(seg.axes[len(seg.axes) - len(shape):])
    box = Box(LayerNormOp(axes, float(eps), w is not None, b is not None))
    conv.bind(node, conv.apply(box, [vid]))
    tensors = [t for t in (w, b) if t is not None]
    if tensors:
        conv.emitted.tensors.append(tensors)


def _computed_scale(conv: Converter, node: Node, weight: Any, bias: Any, eps: float, n: int) -> None:
    """``layer_norm(x, shape, w, b)`` with a computed weight or bias (VideoPrism's ``weight + 1.0``): what ATen
    computes, ``layer_norm(x, shape) * w + b`` — a weightless ``LN`` box, the product with ``w`` and the sum with ``b``
    (each broadcast over the leading wires).  Declines unless the normalised axes are the last one (the box's) and
    ``w``, ``b`` are float tensors of the normalised shape or absent."""
    from ncd.prims.elementwise import MultiplyOp
    from ncd.prims.normalization import LayerNormOp
    from ncd.prims.structure import AddOp
    from ncd.trace.idioms_arithmetic import cross_back, operand

    x = node.args[0]
    value = x.value
    if n != 1 or not _tensor(x) or not value.is_floating_point() or node.value.dtype != value.dtype:
        raise Decline("normalisation with computed parameters over several axes")
    for p in (weight, bias):
        if p is not None and (not _tensor(p) or tuple(p.value.shape) != tuple(value.shape[-1:])
                              or p.value.dtype != value.dtype):
            raise Decline("normalisation with computed parameters of another shape or dtype")
    vid = conv.value(x)
    seg = conv.segs[vid]
    names = list(seg.names)
    shape = _shape(node)
    out = conv.apply(Box(LayerNormOp(Segment(seg.axes[-1:]), eps, False, False)), [vid])
    for p, prim in ((weight, MultiplyOp(2)), (bias, AddOp(2))):
        if p is not None:
            out = cross_back(conv, conv.apply(Box(prim), [out, operand(conv, p, names, shape)]), names)
    conv.bind(node, out)


@rule("aten.rms_norm")
def rms_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import RMSNormOp

    x, shape = node.args[0], node.args[1]
    extra = list(node.args[2:]) + [None] * 2
    w = _weight(extra[0])
    eps = extra[1]
    dtype = getattr(getattr(x, "value", None), "dtype", None)
    if eps is None and isinstance(dtype, torch.dtype) and dtype.is_floating_point:  # nn.RMSNorm's default: ATen's
        eps = torch.finfo(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype).eps  # (compute type)
    if not _live(x) or (extra[0] is not None and w is None) or eps is None:
        raise Decline("rms norm without explicit eps")
    vid = conv.value(x)
    seg = conv.segs[vid]
    box = Box(RMSNormOp(Segment(seg.axes[len(seg.axes) - len(shape):]), float(eps), w is not None))
    conv.bind(node, conv.apply(box, [vid]))
    if w is not None:
        conv.emitted.tensors.append([w])


@rule("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d", "aten.conv_transpose2d", "aten.conv_transpose3d")
def convolution(conv: Converter, node: Node) -> None:
    from ncd.prims.convolution import ConvOp, ConvTransposeOp

    transposed = "conv_transpose" in str(node.target)
    x, weight = node.args[:2]
    extra = list(node.args[2:]) + [None] * 6
    if not transposed and isinstance(extra[2], str):
        _string_padding(conv, node)
        return
    w, b = _weight(weight), _weight(extra[0])
    if not transposed and _live(x) and _live(weight) and _tensor(weight) and not isinstance(extra[2], str):
        from ncd.trace.boxes_windows import computed_weight_convolution

        n = weight.value.dim() - 2
        stride, padding, dilation = (_ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 1))
        computed_weight_convolution(conv, node, stride, padding, dilation, int(extra[4] or 1))
        return
    if transposed and _live(x) and _live(weight) and _tensor(weight):  # a computed weight (weight norm): a wire
        from ncd.trace.boxes_windows import computed_weight_transposed_convolution

        n = weight.value.dim() - 2
        computed_weight_transposed_convolution(conv, node, _ints(extra[1], n, 1), _ints(extra[2], n, 0),
                                               _ints(extra[3], n, 0), int(extra[4] or 1), _ints(extra[5], n, 1))
        return
    if not _live(x) or w is None or (extra[0] is not None and b is None) or isinstance(extra[2], str):
        raise Decline("convolution with computed weights or string padding")
    n = w.dim() - 2
    if transposed:  # conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation)
        stride, padding, output_padding = _ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 0)
        groups, dilation = int(extra[4] or 1), _ints(extra[5], n, 1)
    else:  # conv(x, w, b, stride, padding, dilation, groups)
        stride, padding, dilation = (_ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 1))
        groups = int(extra[4] or 1)
    vid = conv.value(x)
    seg = conv.segs[vid]
    if len(seg.axes) < n + 1:
        raise Decline("unbatched convolution")
    dom = Segment(seg.axes[len(seg.axes) - n - 1:])
    out_shape = _shape(node)[-n - 1:]
    names = [linear_out_name(conv, dom.axes[0].name, int(dom.axes[0].size), out_shape[0])]
    names += [a.name for a in dom.axes[1:]]  # output positions keep the spatial wires' names
    lead = set(seg.names[: len(seg.axes) - n - 1])
    names = [nm + PRIME if nm in lead else nm for nm in names]
    while names[0] in names[1:] or names[0] in lead:  # output channels as many as a spatial wire's positions: another name
        names[0] += PRIME
    cod = conv.namer.segment(names, out_shape)
    label = (conv.stack[-1][0].rsplit(".", 1)[-1] or None) if conv.stack else None
    try:
        import sympy

        kernel = tuple(int(k) for k in w.shape[2:])
        if transposed:
            box = Box(ConvTransposeOp(dom, cod, kernel, stride, padding, output_padding, dilation, sympy.Integer(groups),
                                      b is not None), label)
        else:
            box = Box(ConvOp(dom, cod, kernel, stride, padding, dilation, sympy.Integer(groups), b is not None), label)
    except Exception as error:  # noqa: BLE001 - any rejection: keep the opaque box
        raise Decline(str(error)) from None
    conv.bind(node, conv.apply(box, [vid]))
    conv.emitted.tensors.append([w] + ([b] if b is not None else []))


def _string_padding(conv: Converter, node: Node) -> None:
    """``conv(x, w, b, stride, "same" | "valid", dilation, groups)``: ``"valid"`` is no padding; ``"same"`` (stride 1)
    pads each spatial wire by ``dilation·(k - 1)`` zeros, half before (rounded down) and the rest after, as torch
    does — the convolution with that padding when both halves are equal, else the zero padding (a pad box) and the
    convolution without (LASR's depthwise ``Conv1d(kernel 32, padding="same")``): exact, the same zeros summed."""
    x, weight = node.args[:2]
    extra = list(node.args[2:]) + [None] * 4
    given = dict(zip(("bias", "stride", "padding", "dilation", "groups"), extra)) | dict(node.kwargs)
    if not _tensor(x) or not _tensor(weight) or given["padding"] not in ("same", "valid"):
        raise Decline("convolution with an unknown padding")
    n = weight.value.dim() - 2
    stride, dilation = _ints(given["stride"], n, 1), _ints(given["dilation"], n, 1)
    before, after = (0,) * n, (0,) * n
    if given["padding"] == "same":
        if any(s != 1 for s in stride):
            raise Decline("'same' padding with a stride")
        total = [d * (int(k) - 1) for d, k in zip(dilation, weight.value.shape[2:])]
        before, after = tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    target = {1: torch.ops.aten.conv1d.default, 2: torch.ops.aten.conv2d.default, 3: torch.ops.aten.conv3d.default}.get(n)
    if target is None:
        raise Decline("a convolution of another rank")
    source = x
    made: list[Node] = []
    if before != after:
        from ncd.trace.boxes import pad

        amounts = [a for k in reversed(range(n)) for a in (before[k], after[k])]
        source = Node(f"{node.name}_padded", "call", torch.ops.aten.constant_pad_nd.default, (x, amounts, 0.0), {},
                      value=torch.nn.functional.pad(x.value, amounts), stack=node.stack, live=True, line=node.line)
        pad(conv, source)
        made.append(source)
        before = (0,) * n
    plain = Node(f"{node.name}_padded_conv", "call", target,
                 (source, weight, given["bias"], list(stride), list(before), list(dilation), int(given["groups"] or 1)),
                 {}, value=node.value, stack=node.stack, live=True, line=node.line)
    convolution(conv, plain)
    made.append(plain)
    conv.bind(node, conv.values[id(plain)])
    conv.forget(*made)


def _ints(value: Any, n: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(v) for v in value)
    return values * n if len(values) == 1 else values
