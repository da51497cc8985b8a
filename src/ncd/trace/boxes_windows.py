"""Conversion rules for windows: a convolution whose weight is computed, ``x.unfold``, ``im2col``/``col2im``
(``F.unfold``/``F.fold``): the convolution tensor ★ and its transpose.
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.boxes import _claim, _dims, _live_float, _same_wires, _unlike, sympy_int
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.naming import PRIME

__all__: list[str] = ["computed_weight_convolution", "computed_weight_transposed_convolution", "weight_wires"]


# -- a convolution whose weight is computed (weight norm, weight standardisation) ---------------------------------------


def computed_weight_convolution(conv: Converter, node: Node, stride: tuple[int, ...], padding: tuple[int, ...],
                                dilation: tuple[int, ...], groups: int) -> None:
    """``conv(x, W, b)`` with a computed weight ``W`` (a value, not a parameter: the weight-normed positional and codec
    convolutions of wav2vec2, HuBERT, WavLM, EnCodec, BiT's weight-standardised layers): one box ``★·W`` taking ``W``
    as a wire, :class:`~ncd.prims.convolution_derivative.ConvWithWeightOp`, lowered to ``F.conv1d``/``conv2d``/``conv3d``
    — the call the model makes, on the same operands (then ``+ b``); with groups, ``W``'s channel wire is the group's
    (:func:`_weight_wire_convolution`).  (The windows ``★`` of ``x`` contracted with ``W``'s wires by an einsum would
    draw the same map with three more boxes per convolution, and sum in another order than torch's kernel, which
    over a deep stack drifts past the round trip's tolerance.)"""
    vx, weight, bias, seg, wshape = _computed_weight_operands(conv, node)
    n = len(wshape) - 2
    if n < 1 or len(seg.axes) < n + 2 or wshape[0] % groups or int(seg.axes[-n - 1].size) != wshape[1] * groups:
        raise Decline("not a batched convolution")
    _weight_wire_convolution(conv, node, vx, weight, bias, stride, padding, dilation, groups)



def computed_weight_transposed_convolution(conv: Converter, node: Node, stride: tuple[int, ...],
                                           padding: tuple[int, ...], output_padding: tuple[int, ...], groups: int,
                                           dilation: tuple[int, ...]) -> None:
    """``conv_transpose(x, W, b)`` with a computed weight ``W`` (a weight-normed transposed convolution: EnCodec's,
    DAC's upsampling): one :class:`ConvWithWeightOp` box taking ``W`` as a wire, lowered to ``F.conv_transpose*d`` —
    the call the model makes, on the same operands (then ``+ b``)."""
    vx, weight, bias, seg, wshape = _computed_weight_operands(conv, node)
    n = len(wshape) - 2
    if n < 1 or len(seg.axes) < n + 2 or int(seg.axes[-n - 1].size) != wshape[0] or wshape[0] % groups:
        raise Decline("not a batched transposed convolution")
    _weight_wire_convolution(conv, node, vx, weight, bias, stride, padding, dilation, groups, output_padding)


def _computed_weight_operands(conv: Converter, node: Node) -> tuple[int, Node, Any, Segment, tuple[int, ...]]:
    """A convolution call's live input, its computed weight (a float tensor, else declined), its bias (or ``None``),
    the input's wires and the weight's shape."""
    x, weight = node.args[:2]
    bias = node.args[2] if len(node.args) > 2 else None
    vx = _live_float(conv, x)
    if not (isinstance(weight, Node) and isinstance(weight.value, torch.Tensor) and weight.value.is_floating_point()):
        raise Decline("weight not a float tensor")
    return vx, weight, bias, conv.segs[vx], tuple(int(s) for s in weight.value.shape)


def weight_wires(conv: Converter, node: Node, weight: Node) -> list[str] | None:
    """The names a convolution ``node`` reading the computed ``weight`` as its weight gives that weight's wires (its
    :class:`ConvWithWeightOp`'s weight segment, :func:`_weight_wire_convolution`), for the computation of the weight
    (weight norm) to name its wires so: no box then renames them before the convolution (only names: the values and
    sizes are the same either way).  ``None`` if ``node`` is no such convolution or its input is not converted yet."""
    from ncd.trace.registry import op_name

    name = op_name(node.target)[0]
    if name not in _CONVOLUTIONS or len(node.args) < 2 or node.args[1] is not weight:
        return None
    x = node.args[0]
    if not (isinstance(x, Node) and x.live and id(x) in conv.values and isinstance(x.value, torch.Tensor)
            and x.value.is_floating_point() and isinstance(weight.value, torch.Tensor)):
        return None
    transposed = "transpose" in name
    groups = node.args[6] if len(node.args) > 6 else None
    if not transposed and len(node.args) > 4 and isinstance(node.args[4], str) or not isinstance(groups, (int, type(None))):
        return None
    groups = int(groups or 1)
    seg = conv.segs[conv.values[id(x)]]
    wshape = tuple(int(s) for s in weight.value.shape)
    n = len(wshape) - 2
    if n < 1 or len(seg.axes) < n + 2 or groups < 1 or wshape[0] % groups or int(seg.axes[-n - 1].size) != (
            wshape[0] if transposed else wshape[1] * groups):
        return None
    names = _wires(conv, node, seg, wshape, groups, transposed)[2]
    symbolic = _symbolic(conv)
    if any(name.rstrip(PRIME) in symbolic for name in names):  # a channel named as the inputs' batch or positions,
        return None  # which the symbolic pass sizes by a symbol (a parameter's wire is not): renamed by a box as before
    return names


def _symbolic(conv: Converter) -> set[str]:
    """The names of the inputs' axes that the symbolic pass sizes by symbols (:func:`ncd.trace._symbolic`)."""
    return {a.name for v in conv.inputs for a in conv.segs[v].axes if a.name in _SYMBOLIC}


#: the names of the inputs' axes the symbolic pass sizes by symbols (:func:`ncd.trace._symbolic`)
_SYMBOLIC = frozenset({"b", "t"})

#: the convolutions whose weight may be computed (:func:`weight_wires`)
_CONVOLUTIONS = frozenset({"aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d", "aten.conv_transpose2d",
                           "aten.conv_transpose3d"})


def _wires(conv: Converter, node: Node, seg: Segment, wshape: tuple[int, ...], groups: int, transposed: bool
           ) -> tuple[str, Segment, list[str]]:
    """The wires of a convolution with a computed weight (``seg`` its input's): its output channels' name, its output
    segment and its weight's names — named once per call (asked first by the weight's own rule, :func:`weight_wires`)."""
    from ncd.trace.idioms import linear_out_name

    planned: dict[int, tuple[Segment, tuple[str, Segment, list[str]]]] = conv.__dict__.setdefault("_conv_wires", {})
    plan = planned.get(id(node))
    if plan is not None and plan[0] == seg:
        return plan[1]
    n = len(wshape) - 2
    dom = Segment(seg.axes[-n - 1:])
    channel = dom.axes[0]
    out_shape = tuple(int(s) for s in node.value.shape)
    taken = set(seg.names)
    outputs = wshape[1] * groups if transposed else wshape[0]
    o = _unlike(conv, linear_out_name(conv, channel.name, int(channel.size), outputs), set(taken))
    positions = [a.name if int(a.size) == size else _unlike(conv, _claim(conv, a.name, size, "item"), taken)
                 for a, size in zip(dom.axes[1:], out_shape[-n:])]
    cod = conv.namer.segment([o, *positions], out_shape[-n - 1:])
    # the weight's wires as conv_weight_segment lays them: (o, c/g, k…), or transposed (c, o/g, k…)
    first, second = (channel.name, o) if transposed else (o, channel.name)
    inner = second if groups == 1 else _unlike(conv, second + PRIME, set(taken) | {o})
    knames = [_unlike(conv, _claim(conv, "k" + a.name.rstrip(PRIME), k, "feature"), taken | {o, inner})
              for a, k in zip(dom.axes[1:], wshape[2:])]
    wires = (o, cod, [first, inner, *knames])
    planned[id(node)] = (seg, wires)
    return wires


def _weight_wire_convolution(conv: Converter, node: Node, vx: int, weight: Node, bias: Any, stride: tuple[int, ...],
                             padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
                             output_padding: tuple[int, ...] | None = None) -> None:
    """``F.conv2d(x, W, b)`` (or 3-d) with ``W`` a wire: one :class:`ConvWithWeightOp` box ``(lead c p…, o c/g k…) ->
    lead o p…``, the leading wires its batch (then ``+ b``).  With ``output_padding``: ``F.conv_transpose*d(x, W, b)``,
    the weight ``(c, o/g, k…)`` in torch's layout of a transposed convolution's."""
    import sympy

    from ncd.prims.convolution_derivative import ConvWithWeightOp
    from ncd.prims.structure import AddOp

    transposed = output_padding is not None
    seg = conv.segs[vx]
    wshape = tuple(int(s) for s in weight.value.shape)
    n = len(wshape) - 2
    lead, dom = Segment(seg.axes[:-n - 1]), Segment(seg.axes[-n - 1:])
    out_shape = tuple(int(s) for s in node.value.shape)
    outputs = wshape[1] * groups if transposed else wshape[0]
    o, cod, names = _wires(conv, node, seg, wshape, groups, transposed)
    vw = conv.view(conv.value(weight), names, wshape)  # (none when the weight's rule named its wires so)
    try:
        box = Box(ConvWithWeightOp(dom, cod, conv.segs[vw], tuple(wshape[2:]), stride, padding, dilation,
                                   output_padding or (), sympy.Integer(groups), transposed, lead))
    except Exception as error:  # noqa: BLE001 - a geometry the box refuses stays opaque
        raise Decline(str(error)) from None
    (vid,) = conv.emit(box, [vx, vw], list(box.cod))
    if bias is not None:
        if not (isinstance(bias, Node) and isinstance(bias.value, torch.Tensor)):
            raise Decline("bias not a tensor")
        vid = conv.apply(Box(AddOp(2)), [vid, conv.view(conv.value(bias), [o], (outputs,))])
    if tuple(int(a.size) for a in conv.segs[vid].axes) != out_shape:
        raise Decline(f"the wires come out as '{conv.segs[vid]}'")
    conv.bind(node, vid)


@rule("aten.unfold")
def sliding_windows(conv: Converter, node: Node) -> None:
    """``x.unfold(dim, size, step)``: the windows ``★`` of one axis (a kernel of ``size``, stride ``step``, no padding):
    the axis becomes the window positions and a new last wire runs along each window."""
    from ncd.prims.convolution import ConvolutionTensorOp
    from ncd.prims.structure import TransposeOp
    from ncd.prims.windows import _windows

    x, dim, size, step = node.args[:4]
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    (d,) = _dims(conv, vid, dim)
    spatial = Segment((seg.axes[d],))
    if _window_means(conv, node, vid, d, int(size), int(step)):
        return
    taken = set(seg.names)
    kernel = _unlike(conv, _claim(conv, "k" + seg.axes[d].name.rstrip(PRIME), int(size), "feature"), taken)
    try:
        star = ConvolutionTensorOp(spatial, _windows(spatial, (int(size),), (int(step),), (0,), (1,), "unfold"), (kernel,),
                                   (int(size),), (int(step),), (0,), (1,))
    except Exception as error:  # noqa: BLE001 - windows the box refuses stay opaque
        raise Decline(str(error)) from None
    out = conv.apply(Box(star), [vid])  # the other wires, then positions, then the window
    oseg = conv.segs[out]
    want = list(seg.names) + [kernel]
    if list(oseg.names) != want:
        order = tuple(list(oseg.names).index(n) for n in want)
        (out,) = conv.emit(Box(TransposeOp(oseg, order)), [out], [oseg.with_axes(oseg.axes[k] for k in order)])
    _same_wires(conv, node, out)



def _window_means(conv: Converter, node: Node, vid: int, d: int, size: int, step: int) -> bool:
    """At ``x.unfold(d, size, step)`` (``node``) read only by ``.mean(-1)`` (the mean of each window: Granite Speech's
    ``unfold(1, 2, 2).mean(-1)`` pooling by 2 in time): one average pooling box ``★→𝔼`` on ``x``'s axis, once equal to
    the recorded mean on the traced values (within rounding: 1e-6 of its largest entry), and True; else nothing is drawn
    and False (the windows, then the mean, as recorded)."""
    from ncd.prims.pooling import AvgPoolOp
    from ncd.prims.structure import TransposeOp
    from ncd.prims.windows import _windows
    from ncd.trace.idioms_norms import _reader

    mean = _reader(conv, node, "aten.mean.dim")
    x = node.args[0]
    if mean is None or mean.kwargs or len(mean.args) not in (2, 3) or mean.args[0] is not node \
            or list(mean.args[1] or ()) not in ([-1], [node.value.dim() - 1]) or (len(mean.args) == 3 and mean.args[2]) \
            or not isinstance(mean.value, torch.Tensor) or mean.value.dtype != x.value.dtype \
            or x.value.device.type == "meta" or not x.value.numel():
        return False
    value = x.value.movedim(d, -1)
    pooled = torch.nn.functional.avg_pool1d(value.reshape(-1, 1, value.shape[-1]), size, step)
    pooled = pooled.reshape(value.shape[:-1] + pooled.shape[-1:]).movedim(-1, d)
    want = mean.value
    if pooled.shape != want.shape or not float((pooled - want).abs().max()) <= 1e-6 * float(want.abs().max()):
        return False
    seg = conv.segs[vid]
    spatial = Segment((seg.axes[d],))
    try:
        pool = AvgPoolOp(spatial, _windows(spatial, (size,), (step,), (0,), (1,), "unfold"), (size,), (step,), (0,))
    except Exception:  # noqa: BLE001 - windows the box refuses: drawn as recorded
        return False
    mark = conv.mark()
    out = conv.apply(Box(pool), [vid])
    oseg = conv.segs[out]
    want_names = list(seg.names)
    if sorted(oseg.names) != sorted(want_names):
        conv.rollback(mark)
        return False
    if list(oseg.names) != want_names:
        order = tuple(list(oseg.names).index(n) for n in want_names)
        (out,) = conv.emit(Box(TransposeOp(oseg, order)), [out], [oseg.with_axes(oseg.axes[k] for k in order)])
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in mean.value.shape):
        conv.rollback(mark)
        return False
    conv.skip.add(id(mean))
    conv.bind(mean, out)
    return True


# -- im2col / col2im (F.unfold, F.fold): the convolution tensor ★ and its transpose, wires regrouped --------
def _pairs(value: Any) -> tuple[int, ...]:
    values = [value] * 2 if isinstance(value, int) else list(value)
    if len(values) != 2 or any(not isinstance(v, int) for v in values):
        raise Decline(f"window arguments {value!r}")
    return tuple(int(v) for v in values)


@rule("aten.im2col")
def im2col(conv: Converter, node: Node) -> None:
    """``F.unfold(x, k, dilation, padding, stride)``: ``n c y x -> n (c ky kx) (y′ x′)`` — the windows ``★`` of the two
    spatial wires, the kernel wires brought next to the channels, then each group read as one wire."""
    from ncd.prims.convolution import ConvolutionTensorOp
    from ncd.prims.structure import TransposeOp
    from ncd.prims.windows import _windows

    x = node.args[0]
    kernel, dilation, padding, stride = (_pairs(a) for a in node.args[1:5])
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    if len(seg.axes) != 4:
        raise Decline("not a batch of images")
    spatial = Segment(seg.axes[2:])
    names = []
    for a in spatial.axes:
        name = _claim(conv, "k" + a.name.rstrip(PRIME), 1, "feature")
        while name in seg.names or name in names:
            name += PRIME
        names.append(name)
    try:
        box = Box(ConvolutionTensorOp(spatial, _windows(spatial, kernel, stride, padding, dilation, "im2col"), tuple(names),
                                      kernel, stride, padding, dilation))
    except Exception as error:  # noqa: BLE001 - windows the box refuses stay opaque
        raise Decline(str(error)) from None
    windows = conv.apply(box, [vid])  # n c y′ x′ ky kx
    wseg = conv.segs[windows]
    (moved,) = conv.emit(Box(TransposeOp(wseg, (0, 1, 4, 5, 2, 3))), [windows],
                         [wseg.with_axes(wseg.axes[k] for k in (0, 1, 4, 5, 2, 3))])
    shape = tuple(int(s) for s in node.value.shape)
    if shape[1:] != (int(seg.axes[1].size) * kernel[0] * kernel[1], int(wseg.axes[2].size) * int(wseg.axes[3].size)):
        raise Decline("the windows come out in another shape")
    rows = conv.namer.fresh(shape[1], "r")
    cols = conv.namer.fresh(shape[2], "l")
    _same_wires(conv, node, conv.view(moved, [wseg.names[0], rows, cols], shape))


@rule("aten.col2im")
def col2im(conv: Converter, node: Node) -> None:
    """``F.fold(x, size, k, dilation, padding, stride)``: ``n (c ky kx) (y′ x′) -> n c y x`` — the wires regrouped into
    channels, kernel and window positions, then ``★ᵀ`` (overlapping windows summed)."""
    from ncd.ir.axes import Axis
    from ncd.prims.convolution import ConvolutionTensorTOp
    from ncd.prims.structure import TransposeOp
    from ncd.prims.windows import _windows, window_size

    x = node.args[0]
    size, kernel, dilation, padding, stride = (_pairs(a) for a in node.args[1:6])
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    shape = tuple(int(s) for s in node.value.shape)
    if len(seg.axes) != 3 or len(shape) != 4 or shape[2:] != size:
        raise Decline("not a batch of columns")
    windows = [int(window_size(sympy_int(n), k, s, p, d)) for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]
    channels = shape[1]
    names = [conv.namer.fresh(channels, "c")]
    for hint, n in (("ky", kernel[0]), ("kx", kernel[1]), ("y", size[0]), ("x", size[1])):
        name = conv.namer.fresh(n, hint)
        while name in names or name in seg.names:
            name += PRIME
        names.append(name)
    c, ky, kx, y, xx = names
    grouped = conv.view(vid, [seg.names[0], c, ky, kx, y, xx],
                        (shape[0], channels, kernel[0], kernel[1], windows[0], windows[1]))
    gseg = conv.segs[grouped]
    (moved,) = conv.emit(Box(TransposeOp(gseg, (0, 1, 4, 5, 2, 3))), [grouped],
                         [gseg.with_axes(gseg.axes[k] for k in (0, 1, 4, 5, 2, 3))])
    spatial = Segment((Axis(y, sympy_int(size[0])), Axis(xx, sympy_int(size[1]))))
    try:
        positions = _windows(spatial, kernel, stride, padding, dilation, "col2im")
        box = Box(ConvolutionTensorTOp(spatial, positions, (ky, kx), kernel, stride, padding, dilation))
    except Exception as error:  # noqa: BLE001 - windows the box refuses stay opaque
        raise Decline(str(error)) from None
    if [int(a.size) for a in positions.axes] != windows:
        raise Decline("the window positions differ")
    _same_wires(conv, node, conv.apply(box, [moved]))


# -- sub-pixel convolution: channels to positions and back ----------------------------------------------------------
@rule("aten.pixel_shuffle", "aten.pixel_unshuffle")
def pixel_shuffle(conv: Converter, node: Node) -> None:
    """``F.pixel_shuffle(x, r)``: ``.. (c r r′) y x -> .. c (y r) (x r′)`` and ``F.pixel_unshuffle`` its inverse, drawn
    as what they are, exact by construction: the channels (or the rows and columns) read as finer wires, those wires
    moved, and read again as the output's."""
    from ncd.prims.structure import TransposeOp

    x, r = node.args[:2]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or isinstance(r, bool) \
            or not isinstance(r, int) or r < 1:
        raise Decline("not a live tensor and a factor")
    vid = conv.value(x)
    seg = conv.segs[vid]
    shape_in, shape_out = tuple(int(a.size) for a in seg.axes), tuple(int(s) for s in node.value.shape)
    if len(shape_in) < 3 or len(shape_out) != len(shape_in):
        raise Decline("fewer than three wires")
    if r == 1:
        _same_wires(conv, node, vid)
        return
    lead, k = list(seg.names[:-3]), len(shape_in) - 3
    taken = set(seg.names)
    shuffle = "unshuffle" not in node.target.name()
    if shuffle:  # .. (c r r′) y x -> .. c r r′ y x -> .. c y r x r′ -> .. c (y r) (x r′)
        c, y, xx = shape_out[-3], shape_in[-2], shape_in[-1]
        channel, rows, cols = seg.names[-3:]
        fine = [_unlike(conv, conv.namer.fresh(c, "c"), taken) if c != shape_in[-3] else channel,
                _unlike(conv, conv.namer.fresh(r), taken), _unlike(conv, conv.namer.fresh(r) + PRIME, taken), rows, cols]
        fine_shape = (c, r, r, y, xx)
        perm = (0, 3, 1, 4, 2)
        out = [fine[0], _unlike(conv, _claim(conv, rows, y * r, "item"), taken - {rows}),
               _unlike(conv, _claim(conv, cols, xx * r, "item"), taken - {cols})]
    else:  # .. c (y r) (x r′) -> .. c y r x r′ -> .. c r r′ y x -> .. (c r r′) y x
        c, y, xx = shape_in[-3], shape_out[-2], shape_out[-1]
        channel, rows, cols = seg.names[-3:]
        fine = [channel, _unlike(conv, _claim(conv, rows, y, "item"), taken - {rows}),
                _unlike(conv, conv.namer.fresh(r), taken),
                _unlike(conv, _claim(conv, cols, xx, "item"), taken - {cols}),
                _unlike(conv, conv.namer.fresh(r) + PRIME, taken)]
        fine_shape = (c, y, r, xx, r)
        perm = (0, 2, 4, 1, 3)
        out = [_unlike(conv, conv.namer.fresh(shape_out[-3], "c"), taken - {channel}), fine[1], fine[3]]
    grouped = conv.view(vid, lead + fine, shape_in[:-3] + fine_shape)
    gseg = conv.segs[grouped]
    order = tuple(range(k)) + tuple(k + p for p in perm)
    (moved,) = conv.emit(Box(TransposeOp(gseg, order)), [grouped], [gseg.with_axes(gseg.axes[i] for i in order)])
    _same_wires(conv, node, conv.view(moved, lead + out, shape_out))
