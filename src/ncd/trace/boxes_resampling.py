"""Conversion rules for resampling: interpolation (``upsample_*``: nearest, linear, bilinear, bicubic, trilinear)
and adaptive average and max pooling at any size (see :mod:`ncd.trace.boxes` for the shared helpers)."""

from __future__ import annotations

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.boxes import _emit_many, _live_float, _renamed, _same_wires, _used, sympy_int
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []


_UPSAMPLE = {"upsample_nearest": "nearest", "_upsample_nearest_exact": "nearest-exact", "upsample_linear": "linear",
             "upsample_bilinear": "bilinear", "upsample_bicubic": "bicubic", "upsample_trilinear": "trilinear"}


@rule(*(f"aten.{k}{n}d" for k in _UPSAMPLE for n in (1, 2, 3)))
def upsample(conv: Converter, node: Node) -> None:
    from ncd.prims.resampling import MODES, InterpolateOp

    name = node.target.name().split("::")[1].split(".")[0]
    n = int(name[-2])
    mode = _UPSAMPLE[name[:-2]]
    if n not in MODES[mode]:
        raise Decline(f"{mode} on {n} axes")
    smooth = mode in ("linear", "bilinear", "bicubic", "trilinear")
    args = list(node.args[1:])
    overload = getattr(node.target, "_overloadname", "default")
    if overload == "vec":  # (input, output_size, [align_corners,] scale_factors)
        corners = bool(args[1]) if smooth else False
        factors = args[2] if smooth else args[1]
    else:  # (input, output_size, [align_corners,] scales_*...)
        corners = bool(args[1]) if smooth else False
        factors = args[2:] if smooth else args[1:]
        factors = None if not factors or all(f is None for f in factors) else factors
    if factors is not None and any(f is None for f in factors):
        raise Decline("some scales given")
    vid = _live_float(conv, node.args[0])
    seg = conv.segs[vid]
    if len(seg.axes) < n + 1:
        raise Decline("no batch or channel axis")
    axes = Segment(seg.axes[len(seg.axes) - n:])
    out_shape = tuple(int(s) for s in node.value.shape[-n:])
    from ncd.ir.axes import Axis

    output = _renamed(conv, seg, Segment(tuple(Axis(a.name, s, a.role) for a, s in zip(axes, out_shape))))
    scales = None if factors is None else tuple(float(f) for f in factors)
    try:
        box = Box(InterpolateOp(axes, output, mode, corners, scales))
    except Exception as error:  # noqa: BLE001 - an interpolation the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(box, [vid]))


def _pooled_sizes(conv: Converter, node: Node, vid: int) -> tuple[Segment, Segment]:
    from ncd.ir.axes import Axis

    size = node.args[1]
    n = len(size) if isinstance(size, (list, tuple)) else 1
    seg = conv.segs[vid]
    if len(seg.axes) < n + 1:
        raise Decline("no batch or channel axis")
    axes = Segment(seg.axes[len(seg.axes) - n:])
    value = node.value[0] if isinstance(node.value, (tuple, list)) else node.value
    out = tuple(int(s) for s in value.shape[-n:])
    return axes, Segment(tuple(Axis(a.name, sympy_int(s), a.role) for a, s in zip(axes, out)))


@rule("aten.adaptive_avg_pool1d", "aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool3d")
def adaptive_avg_pool(conv: Converter, node: Node) -> None:
    from ncd.prims.pooling import AdaptiveAvgPoolOp

    vid = _live_float(conv, node.args[0])
    axes, positions = _pooled_sizes(conv, node, vid)
    _same_wires(conv, node, conv.apply(Box(AdaptiveAvgPoolOp(axes, positions)), [vid]))


@rule("aten.adaptive_max_pool1d", "aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d")
def adaptive_max_pool(conv: Converter, node: Node) -> None:
    from ncd.prims.resampling import AdaptiveMaxPoolOp

    vid = _live_float(conv, node.args[0])
    axes, positions = _pooled_sizes(conv, node, vid)
    if not isinstance(node.value, (tuple, list)):
        raise Decline("one output")
    used = _used(conv, node)
    box = Box(AdaptiveMaxPoolOp(axes, positions, 1 in used))
    vids = _emit_many(conv, node, box, vid)
    for k in used:
        conv._picked[(id(node), k)] = vids[k]
