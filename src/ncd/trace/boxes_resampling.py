"""Conversion rules for resampling: interpolation (``upsample_*``: nearest, linear, bilinear, bicubic, trilinear),
adaptive average and max pooling at any size, an image sampled at a grid's positions (``grid_sample``) and the
distances of two sets of vectors (``cdist``) (see :mod:`ncd.trace.boxes` for the shared helpers)."""

from __future__ import annotations

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.boxes import _emit_many, _live_float, _renamed, _same_wires, _used, sympy_int
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.registry import apart

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


@rule("aten.grid_sampler", "aten.grid_sampler_2d", "aten.grid_sampler_3d")
def grid_sampler(conv: Converter, node: Node) -> None:
    """``F.grid_sample(x, grid, mode, padding_mode, align_corners)``: one ``GridSample`` box reading the image wires of
    ``x`` at the grid's positions, woven over the batch (the grid's first wire read as the image's, which torch pairs
    by position) and over the image's channels."""
    from ncd.prims.sampling import MODES, PADDINGS, GridSampleOp

    x, grid = node.args[0], node.args[1]
    mode, padding, corners = (list(node.args[2:5]) + [None] * 3)[:3]
    vx = conv.value(x) if isinstance(x, Node) else None
    vg = conv.value(grid) if isinstance(grid, Node) else None
    if vx is None or vg is None or not (isinstance(mode, int) and isinstance(padding, int) and isinstance(corners, bool)):
        raise Decline("not a call on two tensors")
    sx, sg = conv.segs[vx], conv.segs[vg]
    n = len(sx.axes) - 2
    if n not in (2, 3) or len(sg.axes) != n + 2 or sx.dtype != "float" or sg.dtype != "float" or not 0 <= mode < 3 \
            or not 0 <= padding < 3:
        raise Decline("not an image and a grid of floats")
    batch, channel = sx.axes[0], sx.axes[1]
    if batch.name == channel.name or batch.name in sx.names[2:] or int(sg.axes[0].size) != int(batch.size):
        raise Decline("the image's batch is not a wire of its own, or not the grid's")
    # the grid's first wire is the image's batch (torch pairs them by position); its other wires, named apart from the
    # batch and the channels, which the box is woven over (sizes that coincide share a name: a volume's 3 channels and
    # its grid's 3 coordinates)
    taken = {*sx.names, *sg.names}
    names = [batch.name]
    for a in sg.names[1:]:
        names.append(apart(a, taken) if a in (batch.name, channel.name) else a)
        taken.add(names[-1])
    if names != list(sg.names):
        vg = conv.view(vg, names, tuple(int(a.size) for a in sg.axes))
        sg = conv.segs[vg]
    try:
        box = Box(GridSampleOp(Segment(sx.axes[2:]), Segment(sg.axes[1:-1]), sg.axes[-1], MODES[mode], PADDINGS[padding],
                               corners))
    except Exception as error:  # noqa: BLE001 - a sampling the box refuses stays opaque
        raise Decline(str(error)) from None
    from ncd.ir.diagram import Weave

    woven = Weave(Weave(box, channel, (0, None), (0,)), batch, (0, 0), (0,))  # torch's (N, C, *positions)
    (vid,) = conv.emit(woven, [vx, vg], list(woven.cod))
    _same_wires(conv, node, vid)


@rule("aten.cdist")
def cdist(conv: Converter, node: Node) -> None:
    """``torch.cdist(x, y, p)`` (torch's default ``compute_mode``): one ``CDist`` box woven over the batch wires, which
    torch pairs by position (``y``'s read under ``x``'s names; its features under ``x``'s, its rows apart from
    ``x``'s: ``cdist(x, x)``)."""
    from ncd.ir.diagram import Weave
    from ncd.prims.distance import CDistOp

    x, y = node.args[0], node.args[1]
    p = node.args[2] if len(node.args) > 2 else node.kwargs.get("p", 2.0)
    mode = node.args[3] if len(node.args) > 3 else node.kwargs.get("compute_mode")
    if not (isinstance(x, Node) and isinstance(y, Node)) or mode is not None or isinstance(p, bool) \
            or not isinstance(p, (int, float)):
        raise Decline("not two tensors under torch's default compute mode")
    vx, vy = conv.value(x), conv.value(y)
    sx, sy = conv.segs[vx], conv.segs[vy]
    rx, ry = len(sx.axes), len(sy.axes)
    if sx.dtype != "float" or sy.dtype != "float" or min(rx, ry) < 2 \
            or [int(a.size) for a in sx.axes[:-2]][max(rx - ry, 0):] != [int(a.size) for a in sy.axes[:-2]][max(ry - rx, 0):] \
            or len(set(sx.names)) != rx or len(set(sy.names)) != ry:
        raise Decline("not two float tensors of one batch (the shorter's the longer's last)")
    # the batch wires torch pairs (right-aligned) under the longer's names; the shorter's rows apart from them
    longer = sx if rx >= ry else sy
    batch = list(longer.names[:-2])
    taken = {*sx.names, *sy.names}
    if rx < ry:  # (its rows and features apart from the batch wires it now reads)
        names = [*batch[ry - rx:], *(apart(n, taken) if n in batch else n for n in sx.names[-2:])]
        taken.update(names)
        if names != list(sx.names):
            vx = conv.view(vx, names, tuple(int(a.size) for a in sx.axes))
            sx = conv.segs[vx]
    row = sy.names[-2] if sy.names[-2] not in sx.names and sy.names[-2] not in batch else apart(sy.names[-2], taken)
    names = [*batch[max(rx - ry, 0):], row, sx.names[-1]]
    if names != list(sy.names):
        vy = conv.view(vy, names, tuple(int(a.size) for a in sy.axes))
        sy = conv.segs[vy]
    try:
        woven: Box | Weave = Box(CDistOp(sx.axes[-2], sy.axes[-2], sx.axes[-1], float(p)))
    except Exception as error:  # noqa: BLE001 - a distance the box refuses stays opaque
        raise Decline(str(error)) from None
    for k in reversed(range(len(batch))):  # a wire the shorter lacks is woven on the longer only
        on_x, on_y = k >= len(batch) - (rx - 2), k >= len(batch) - (ry - 2)
        woven = Weave(woven, longer.axes[k], (0 if on_x else None, 0 if on_y else None), (0,))
    (vid,) = conv.emit(woven, [vx, vy], list(woven.cod))
    _same_wires(conv, node, vid)


@rule("aten.affine_grid_generator")
def affine_grid(conv: Converter, node: Node) -> None:
    """``F.affine_grid(θ, size, align_corners)``: one ``AffineGrid`` box woven over ``θ``'s batch, the grid's spatial
    wires new (named by their sizes, apart from the batch and ``θ``'s), its coordinates ``θ``'s rows."""
    from ncd.ir.axes import Axis
    from ncd.ir.diagram import Weave
    from ncd.prims.affine import AffineGridOp

    theta, shape, corners = (list(node.args) + [None] * 3)[:3]
    if not isinstance(theta, Node) or not isinstance(corners, bool) or not isinstance(shape, (list, tuple)) \
            or not all(isinstance(s, int) for s in shape):
        raise Decline("not a call on a tensor with a size")
    vt = conv.value(theta)
    st = conv.segs[vt]
    n = len(shape) - 2
    if n not in (2, 3) or st.dtype != "float" or len(st.axes) != 3 or [int(a.size) for a in st.axes] != [shape[0], n, n + 1] \
            or len(set(st.names)) != 3:
        raise Decline("not a batch of affine maps of a 2-d or 3-d grid")
    batch, rows, columns = st.axes
    taken = set(st.names)
    spatial = []
    for s in shape[2:]:
        name = apart(conv.namer.fresh(int(s), None), taken)
        taken.add(name)
        spatial.append(Axis(name, sympy_int(s)))
    try:
        box = Box(AffineGridOp(Segment(tuple(spatial)), rows, columns, corners))
    except Exception as error:  # noqa: BLE001 - a grid the box refuses stays opaque
        raise Decline(str(error)) from None
    woven = Weave(box, batch, (0,), (0,))
    (vid,) = conv.emit(woven, [vt], list(woven.cod))
    _same_wires(conv, node, vid)


@rule("aten.cosine_similarity")
def cosine_similarity(conv: Converter, node: Node) -> None:
    """``F.cosine_similarity(x, y, dim, eps)`` of two float tensors of one shape: one ``CosineSimilarity`` box on the
    wire ``dim``, woven over the others on both inputs (``y`` read under ``x``'s names: torch pairs them by
    position)."""
    from ncd.ir.diagram import Weave
    from ncd.prims.distance import CosineSimilarityOp

    x, y = node.args[0], node.args[1]
    given = dict(zip(("dim", "eps"), node.args[2:])) | dict(node.kwargs)
    dim, eps = given.get("dim", 1), given.get("eps", 1e-8)
    if not (isinstance(x, Node) and isinstance(y, Node)) or not isinstance(dim, int) or set(given) - {"dim", "eps"} \
            or isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise Decline("not two tensors along a dim")
    vx, vy = conv.value(x), conv.value(y)
    sx, sy = conv.segs[vx], conv.segs[vy]
    shape = [int(a.size) for a in sx.axes]
    if sx.dtype != "float" or sy.dtype != "float" or not shape or shape != [int(a.size) for a in sy.axes] \
            or len(set(sx.names)) != len(sx.names) or x.value.dtype != y.value.dtype:
        raise Decline("not two float tensors of one shape")
    if list(sy.names) != list(sx.names):
        vy = conv.view(vy, list(sx.names), tuple(shape))
    d = dim % len(shape)
    try:
        woven: Box | Weave = Box(CosineSimilarityOp(sx.axes[d], float(eps)))
    except Exception as error:  # noqa: BLE001 - a similarity the box refuses stays opaque
        raise Decline(str(error)) from None
    for k in reversed(range(len(shape))):  # (the wires after ``dim`` behind it on the inputs)
        if k != d:
            at = 0 if k < d else 1
            woven = Weave(woven, sx.axes[k], (at, at), (0,))
    (vid,) = conv.emit(woven, [vx, vy], list(woven.cod))
    _same_wires(conv, node, vid)
