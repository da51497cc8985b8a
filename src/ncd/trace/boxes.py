"""Conversion rules for ATen operators that have a primitive of their own beyond the core idioms.

``roll``, ``pad`` (constant, reflect, replicate), ``cumsum``, ... each become their box (see
the family modules :mod:`ncd.prims.padding`, :mod:`ncd.prims.cumulative`, ...), named on the
wires they act on; the other wires are woven past them.  A call whose arguments the box
cannot express exactly declines (:class:`~ncd.trace.convert.Decline`) and stays opaque.

Registered by :func:`ncd.trace.idioms.load_rules` (one import line).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.naming import PRIME

__all__: list[str] = []


def _live_ranked(conv: Converter, x: Any) -> int:
    """The value id of a live float or integer tensor argument (ranking sorts either)."""
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or x.value.dtype == torch.bool:
        raise Decline("not a live float or integer tensor")
    vid = conv.value(x)
    if conv.segs[vid].dtype not in ("float", "index") or (conv.segs[vid].dtype == "index" and x.value.dtype != torch.long):
        raise Decline("indices of another width")
    return vid


def _live_float(conv: Converter, x: Any) -> int:
    """The value id of a live float tensor argument (else the call stays opaque)."""
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()):
        raise Decline("not a live float tensor")
    return conv.value(x)


def _dims(conv: Converter, vid: int, dims: Any) -> list[int]:
    n = len(conv.segs[vid].axes)
    values = [dims] if isinstance(dims, int) else list(dims)
    if not values or any(not isinstance(d, int) or not -n <= d < n for d in values):
        raise Decline(f"dims {dims!r}")
    out = [d % n for d in values]
    if len(set(out)) != len(out):
        raise Decline("repeated dims")
    return out


def _own(conv: Converter, vid: int, dims: list[int]) -> Segment:
    seg = conv.segs[vid]
    return Segment(tuple(seg.axes[d] for d in dims), seg.dtype, seg.range)


def _same_wires(conv: Converter, node: Node, vid: int) -> None:
    """Bind ``node`` to ``vid`` if it has the node's shape (a box that keeps its wires)."""
    if tuple(int(a.size) for a in conv.segs[vid].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline("shape")
    conv.bind(node, vid)


def _claim(conv: Converter, old: str, size: int, role: str) -> str:
    """A name for an axis of ``size`` derived from ``old`` (``x`` -> ``x2``; a size-1 wire ``1`` -> a fresh name)."""
    base = old.rstrip("0123456789" + PRIME)
    if not base:
        return conv.namer.fresh(size, None, role)
    return conv.namer.claim(base, size, role)


def _renamed(conv: Converter, seg: Segment, changed: Segment) -> Segment:
    """Axes of ``seg`` that changed size (``changed``) under names of their own, derived from the old ones."""
    others = set(seg.names) - set(changed.names)
    names = []
    for a in changed:
        name = _claim(conv, a.name, int(a.size), "item" if a.is_item else "feature")
        while name in others or name in names:
            name += PRIME
        names.append(name)
    return conv.namer.segment(names, tuple(int(a.size) for a in changed))


# -- roll, pad ---------------------------------------------------------------------------------
@rule("aten.roll")
def roll(conv: Converter, node: Node) -> None:
    from ncd.prims.padding import RollOp

    x, shifts = node.args[:2]
    dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims", ())
    vid = _live_float(conv, x)
    if isinstance(dims, int):
        dims = [dims]
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    if not dims or len(shifts) != len(dims) or any(not isinstance(s, int) for s in shifts):
        raise Decline("a roll of the flattened tensor")  # torch.roll without dims
    own = _dims(conv, vid, dims)
    order = sorted(range(len(own)), key=lambda k: own[k])  # the box's axes in the tensor's order
    box = Box(RollOp(_own(conv, vid, [own[k] for k in order]), tuple(int(shifts[k]) for k in order)))
    _same_wires(conv, node, conv.apply(box, [vid]))


@rule("aten.pad", "aten.constant_pad_nd", "aten.reflection_pad1d", "aten.reflection_pad2d", "aten.reflection_pad3d",
      "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d")
def pad(conv: Converter, node: Node) -> None:
    from ncd.prims.padding import PadOp

    name = node.target.name().split("::")[1].split(".")[0]
    x, amounts = node.args[:2]
    extra = list(node.args[2:])
    if name == "pad":
        mode = extra[0] if extra else node.kwargs.get("mode", "constant")
        value = extra[1] if len(extra) > 1 else node.kwargs.get("value", None)
    else:
        mode = "constant" if name == "constant_pad_nd" else "reflect" if "reflection" in name else "replicate"
        value = extra[0] if extra else node.kwargs.get("value", None)
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    amounts = [int(a) for a in amounts]
    n = len(amounts) // 2
    if len(amounts) % 2 or not 0 < n <= len(seg.axes) or mode not in ("constant", "reflect", "replicate"):
        raise Decline(f"padding {amounts} in mode {mode!r}")
    before = tuple(amounts[2 * k] for k in reversed(range(n)))
    after = tuple(amounts[2 * k + 1] for k in reversed(range(n)))
    keep = [k for k in range(n) if before[k] or after[k]]
    if not keep:
        _same_wires(conv, node, vid)
        return
    axes = Segment(seg.axes[len(seg.axes) - n:])
    try:
        prim = PadOp(Segment(tuple(axes.axes[k] for k in keep)), tuple(before[k] for k in keep),
                     tuple(after[k] for k in keep), mode, float(value or 0.0))
        out = _renamed(conv, seg, prim.padded())
        prim = PadOp(prim.axes, prim.before, prim.after, prim.mode, prim.value, out)
    except Exception as error:  # noqa: BLE001 - a pad the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(Box(prim), [vid]))


# -- cumulative sums ---------------------------------------------------------------------------
@rule("aten.cumsum")
def cumsum(conv: Converter, node: Node) -> None:
    from ncd.prims.cumulative import CumSumOp

    x, dim = node.args[:2]
    dtype = node.args[2] if len(node.args) > 2 else node.kwargs.get("dtype")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not live")
    vid = conv.value(x)
    seg = conv.segs[vid]
    floating = x.value.is_floating_point()
    if dtype is not None and dtype != x.value.dtype or floating != node.value.is_floating_point():
        raise Decline("a cumulative sum that changes dtype")
    if not floating and node.value.dtype != torch.long:
        raise Decline("an integer sum of another width")
    (d,) = _dims(conv, vid, dim)
    source = Segment((seg.axes[d],), seg.dtype, seg.range)
    prim = CumSumOp(source)
    if seg.dtype == "float":
        _same_wires(conv, node, conv.apply(Box(prim), [vid]))
        return
    # an integer running sum: its range is the bound of the sum; read the other wires with it too
    target = prim.target()
    whole = Segment(seg.axes, "index", target.range)
    box = Box(prim)
    woven = conv.apply(box, [vid])
    if not conv.segs[woven].same(whole):
        raise Decline("the sum's wires")
    _same_wires(conv, node, woven)


# -- elementwise functions (rows of ncd.prims.elementwise.ROWS) and division ----------------------
#: ATen operator -> (row of ROWS, the default arguments beyond the input it is exact for)
#: (``reciprocal`` is ncd.trace.scalars': ``1 / ·``)
UNARY = {"rsqrt": ("rsqrt", ()), "square": ("square", ()), "softplus": ("softplus", (1, 20)), "mish": ("mish", ()),
         "hardswish": ("hardswish", ()), "hardsigmoid": ("hardsigmoid", ()), "relu6": ("relu6", ()),
         "leaky_relu": ("leaky_relu", (0.01,)), "elu": ("elu", (1, 1, 1)), "erf": ("erf", ()), "sin": ("sin", ()),
         "cos": ("cos", ()), "log1p": ("log1p", ()), "expm1": ("expm1", ()), "acos": ("acos", ()), "hardtanh": ("relu6", (0, 6))}


@rule(*(f"aten.{name}" for name in UNARY))
def unary(conv: Converter, node: Node) -> None:
    from ncd.prims.elementwise import ElementwiseOp

    name = node.target.name().split("::")[1].split(".")[0]
    function, defaults = UNARY[name]
    given = list(node.args[1:])
    if any(a != d for a, d in zip(given, defaults)) or len(given) > len(defaults) or node.kwargs:
        raise Decline(f"{name} with other arguments {given} {node.kwargs}")
    if name == "hardtanh" and len(given) != 2:
        raise Decline("hardtanh other than relu6")
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    _same_wires(conv, node, conv.apply(Box(ElementwiseOp(function)), [vid]))


def _division(conv: Converter, node: Node) -> bool:
    """``a / b`` for two float tensors (broadcast by position, as torch does); False when it is not that."""
    from ncd.prims.division import DivideOp
    from ncd.trace.idioms import operand, out_names

    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or node.kwargs.get("rounding_mode") is not None
            or not node.value.is_floating_point() or any(v.value.dtype != node.value.dtype for v in tensors)):
        return False
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in node.value.shape)
    va, vb = operand(conv, a, names, shape), operand(conv, b, names, shape)
    vid = conv.apply(Box(DivideOp()), [va, vb])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    conv.bind(node, vid)
    return True


def _hook_division() -> None:
    """Tensor/tensor division beside the core arithmetic rule (which keeps numbers and the other operators)."""
    from ncd.trace.convert import RULES
    from ncd.trace.idioms import arithmetic

    def divide(conv: Converter, node: Node) -> None:
        if node.target.name().split("::")[1].split(".")[0] == "div" and _division(conv, node):
            return
        arithmetic(conv, node)

    for name in ("aten.div",):
        if RULES.get(name) is arithmetic:
            RULES[name] = divide


_hook_division()


# -- group norm, resampling --------------------------------------------------------------------
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


def sympy_int(value: int) -> Any:
    import sympy

    return sympy.Integer(value)


@rule("aten.adaptive_avg_pool1d", "aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool3d")
def adaptive_avg_pool(conv: Converter, node: Node) -> None:
    from ncd.prims.pooling import AdaptiveAvgPoolOp

    vid = _live_float(conv, node.args[0])
    axes, positions = _pooled_sizes(conv, node, vid)
    _same_wires(conv, node, conv.apply(Box(AdaptiveAvgPoolOp(axes, positions)), [vid]))


def _emit_many(conv: Converter, node: Node, box: Box, vid: int) -> list[int]:
    """Emit a box with several outputs, woven over the wires of its input it does not use."""
    from ncd.ir.compose import fit

    woven, mapping = fit(box, Type((conv.segs[vid],)))
    if mapping:
        raise Decline(f"sizes would need unifying: {mapping}")
    vids = conv.emit(woven, [vid], list(woven.cod))
    for k, (out, value) in enumerate(zip(vids, node.value)):
        if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in value.shape):
            raise Decline(f"output {k} has the wrong shape")
    return vids


def _used(conv: Converter, node: Node) -> set[int]:
    return {c.args[1] for c in conv.consumers.get(id(node), []) if "getitem" in str(c.target)}


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


# -- ranking -------------------------------------------------------------------------------------
def _positions_axis(conv: Converter, seg: Segment, d: int, size: int) -> Any:
    """A new axis for the ranked positions, named after the ranked axis and unlike every wire of ``seg``."""
    from ncd.ir.axes import Axis

    axis = seg.axes[d]
    name = _claim(conv, axis.name, size, "item" if axis.is_item else "feature")
    while name in seg.names:
        name += PRIME
    return Axis(name, sympy_int(size), axis.role)


@rule("aten.topk")
def topk(conv: Converter, node: Node) -> None:
    from ncd.prims.ranking import TopKOp

    x, k = node.args[:2]
    rest = list(node.args[2:])
    dim = rest[0] if rest else node.kwargs.get("dim", -1)
    largest = rest[1] if len(rest) > 1 else node.kwargs.get("largest", True)
    ordered = rest[2] if len(rest) > 2 else node.kwargs.get("sorted", True)
    vid = _live_ranked(conv, x)
    seg = conv.segs[vid]
    (d,) = _dims(conv, vid, dim)
    box = Box(TopKOp(seg.axes[d], _positions_axis(conv, seg, d, int(k)), bool(largest), seg.dtype, seg.range,
                     bool(ordered)))
    vids = _emit_many(conv, node, box, vid)
    for j in _used(conv, node):
        conv._picked[(id(node), j)] = vids[j]


def _sort_options(node: Node) -> tuple[int, bool, bool]:
    """``(dim, descending, stable)`` of ``sort``/``argsort`` (default and ``stable`` overloads)."""
    overload = getattr(node.target, "_overloadname", "default")
    kwargs = dict(node.kwargs)
    rest = list(node.args[1:])
    if overload == "stable":
        return kwargs.get("dim", -1), bool(kwargs.get("descending", False)), bool(kwargs.get("stable", False))
    dim = rest[0] if rest else kwargs.get("dim", -1)
    descending = rest[1] if len(rest) > 1 else kwargs.get("descending", False)
    return dim, bool(descending), False


@rule("aten.sort", "aten.argsort")
def sort(conv: Converter, node: Node) -> None:
    from ncd.ir.axes import Type
    from ncd.ir.diagram import Identity, Par
    from ncd.prims.ranking import SortOp
    from ncd.prims.structure import DeleteOp

    dim, descending, stable = _sort_options(node)
    vid = _live_ranked(conv, node.args[0])
    seg = conv.segs[vid]
    (d,) = _dims(conv, vid, dim)
    box = Box(SortOp(seg.axes[d], _positions_axis(conv, seg, d, int(seg.axes[d].size)), descending, stable, seg.dtype,
                     seg.range))
    if "argsort" in node.target.name():
        from ncd.ir.compose import fit

        woven, mapping = fit(box, Type((seg,)))
        if mapping:
            raise Decline(f"sizes would need unifying: {mapping}")
        values, positions = woven.cod
        (out,) = conv.emit(woven >> Par.of(Box(DeleteOp(Type((values,)))), Identity(Type((positions,)))), [vid], [positions])
        _same_wires(conv, node, out)
        return
    vids = _emit_many(conv, node, box, vid)
    for j in _used(conv, node):
        conv._picked[(id(node), j)] = vids[j]


# -- reductions to a number per position: vector norm, log-sum-exp -------------------------------
def _reduce(conv: Converter, node: Node, vid: int, dims: Any, keep: Any, box_for: Any) -> None:
    """The box ``box_for(reduced axes)`` woven over the other wires; ``keepdim`` reads the result with unit wires."""
    seg = conv.segs[vid]
    own = list(range(len(seg.axes))) if dims is None or (isinstance(dims, (list, tuple)) and not dims) else \
        sorted(_dims(conv, vid, dims))
    if not own:
        raise Decline("a reduction of a number")
    try:
        box = Box(box_for(_own(conv, vid, own)))
    except Exception as error:  # noqa: BLE001 - a reduction the box refuses stays opaque
        raise Decline(str(error)) from None
    out = conv.apply(box, [vid])
    if keep:
        names = ["1" if k in own else a.name for k, a in enumerate(seg.axes)]
        out = conv.view(out, names, tuple(int(s) for s in node.value.shape))
    _same_wires(conv, node, out)


@rule("aten.linalg_vector_norm")
def vector_norm(conv: Converter, node: Node) -> None:
    """``torch.linalg.vector_norm`` / ``x.norm(p, dim)`` for a finite order ``p >= 1`` (``F.normalize``'s norm)."""
    from ncd.prims.reduction import VectorNormOp

    args = list(node.args[1:]) + [None] * 3
    p = args[0] if args[0] is not None else node.kwargs.get("ord", 2)
    dims = args[1] if args[1] is not None else node.kwargs.get("dim")
    keep = args[2] if args[2] is not None else node.kwargs.get("keepdim", False)
    if node.kwargs.get("dtype") is not None or isinstance(p, bool) or not isinstance(p, (int, float)):
        raise Decline("a norm with a dtype or an order that is not a number")
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    _reduce(conv, node, vid, dims, keep, lambda axes: VectorNormOp(axes, float(p)))


@rule("aten._weight_norm")
def weight_norm(conv: Converter, node: Node) -> None:
    """``torch._weight_norm(v, g, dim)`` (``nn.utils.weight_norm``): ``v · g / ‖v‖``, the 2-norm over every axis of ``v``
    but ``dim`` — a norm box woven over that axis, a division and a product."""
    from ncd.prims.division import DivideOp
    from ncd.prims.elementwise import MultiplyOp
    from ncd.prims.reduction import VectorNormOp

    v, g = node.args[:2]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if not all(isinstance(a, Node) and isinstance(a.value, torch.Tensor) and a.value.is_floating_point() for a in (v, g)):
        raise Decline("not float tensors")
    vv = conv.value(v)
    seg = conv.segs[vv]
    if not isinstance(dim, int) or dim == -1 or not -len(seg.axes) <= dim < len(seg.axes):
        raise Decline("the norm of the whole tensor")
    d = dim % len(seg.axes)
    size = int(seg.axes[d].size)
    if tuple(int(s) for s in g.value.shape) not in ((size,), tuple(size if k == d else 1 for k in range(len(seg.axes)))):
        raise Decline("a gain of another shape")
    own = [k for k in range(len(seg.axes)) if k != d]
    norm = conv.apply(Box(VectorNormOp(_own(conv, vv, own), 2.0)), [vv])
    gain = conv.view(conv.value(g), [seg.names[d]], (size,))
    ratio = conv.apply(Box(DivideOp()), [gain, norm])
    _same_wires(conv, node, conv.apply(Box(MultiplyOp(2)), [vv, ratio]))


@rule("aten.logsumexp")
def logsumexp(conv: Converter, node: Node) -> None:
    """``torch.logsumexp(x, dims, keepdim)`` on a float tensor."""
    from ncd.prims.reduction import LogSumExpOp

    args = list(node.args[1:]) + [None] * 2
    dims = args[0] if args[0] is not None else node.kwargs.get("dim")
    keep = args[1] if args[1] is not None else node.kwargs.get("keepdim", False)
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    _reduce(conv, node, vid, dims, keep, lambda axes: LogSumExpOp(axes))


# -- Fourier transforms and complex wires ---------------------------------------------------------
_FOURIER = {"fft": "fft", "ifft": "ifft", "rfft": "rfft", "irfft": "irfft"}


def _fourier_args(node: Node, name: str) -> tuple[Any, Any, Any]:
    """``(sizes, dims, norm)`` of a ``fft_*`` call: one-axis (``n``, ``dim``), 2-d (``s``, ``dim=(-2, -1)``) or n-d."""
    args = list(node.args[1:]) + [None] * 3
    if name.endswith("n") or name.endswith("2"):
        sizes = args[0] if args[0] is not None else node.kwargs.get("s")
        dims = args[1] if args[1] is not None else node.kwargs.get("dim", (-2, -1) if name.endswith("2") else None)
    else:
        n = args[0] if args[0] is not None else node.kwargs.get("n")
        sizes = None if n is None else [n]
        dims = [args[1] if args[1] is not None else node.kwargs.get("dim", -1)]
    norm = args[2] if args[2] is not None else node.kwargs.get("norm")
    return sizes, dims, norm or "backward"


@rule(*(f"aten.fft_{k}{suffix}" for k in _FOURIER for suffix in ("", "2", "n")))
def fourier(conv: Converter, node: Node) -> None:
    """``torch.fft.fft``/``ifft``/``rfft``/``irfft`` (and their ``2``/``n`` forms) as a :class:`FourierOp` box; a call that pads
    or crops the signal (``n``/``s`` other than the input's sizes) stays opaque."""
    from ncd.ir.axes import Axis
    from ncd.prims.fourier import FourierOp

    name = node.target.name().split("::")[1].split(".")[0].removeprefix("fft_")
    transform = _FOURIER[name.rstrip("n2") if name not in _FOURIER else name]
    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or not (
            x.value.is_floating_point() or x.value.is_complex()):
        raise Decline("not a live float or complex tensor")
    if x.value.dtype not in (torch.float32, torch.complex64) or node.value.dtype not in (torch.float32, torch.complex64):
        raise Decline("a transform in another precision")
    vid = conv.value(x)
    seg = conv.segs[vid]
    sizes, dims, norm = _fourier_args(node, name)
    own = list(range(len(seg.axes))) if dims is None else _dims(conv, vid, dims)
    if dims is not None and own != sorted(own):
        raise Decline("axes transformed in another order")
    source = _own(conv, vid, own)
    out_shape = [int(node.value.shape[d]) for d in own]
    if sizes is not None and transform != "irfft" and [int(s) for s in sizes] != [int(a.size) for a in source.axes]:
        raise Decline("a transform that pads or crops the signal")
    if transform in ("fft", "ifft"):
        target = Segment(source.axes, "complex")
    else:
        last = source.axes[-1]
        new = _claim(conv, last.name, out_shape[-1], "item" if last.is_item else "feature")
        while new in seg.names:
            new += PRIME
        target = Segment(source.axes[:-1] + (Axis(new, sympy_int(out_shape[-1]), last.role),),
                         "float" if transform == "irfft" else "complex")
    try:
        box = Box(FourierOp(source, target, transform, norm))  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - a transform the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(box, [vid]))


@rule("aten.real", "aten.imag")
def complex_part(conv: Converter, node: Node) -> None:
    """``x.real`` / ``x.imag`` of a complex tensor."""
    from ncd.prims.fourier import ComplexPartOp

    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dtype == torch.complex64):
        raise Decline("not a live complex tensor")  # (``x.real`` of a real tensor is x itself: an alias)
    part = "real" if "real" in node.target.name() else "imag"
    _same_wires(conv, node, conv.apply(Box(ComplexPartOp(part)), [conv.value(x)]))  # type: ignore[arg-type]


def _complex_product(conv: Converter, node: Node) -> bool:
    """``a * b`` for two complex tensors (broadcast by position); False when it is not that."""
    from ncd.prims.fourier import ComplexMultiplyOp
    from ncd.trace.idioms import operand, out_names

    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or node.value.dtype != torch.complex64
            or any(v.value.dtype != torch.complex64 for v in tensors)):
        return False
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in node.value.shape)
    va, vb = operand(conv, a, names, shape), operand(conv, b, names, shape)
    if len(conv.segs[vb].axes) > len(conv.segs[va].axes):
        va, vb = vb, va  # the operand with every wire first, so the result keeps its order
    vid = conv.apply(Box(ComplexMultiplyOp()), [va, vb])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    conv.bind(node, vid)
    return True


def _mixed_arithmetic(conv: Converter, node: Node) -> bool:
    """``a ∘ b`` (``+ − × ÷``) for a float tensor and an integer or boolean tensor (a 0/1 mask, counts): the other
    operand read as floats (a cast box), then the float operation; False when it is not that."""
    from ncd.ir.axes import Segment as Seg
    from ncd.prims.division import DivideOp
    from ncd.prims.elementwise import MultiplyOp
    from ncd.prims.gather import CastOp
    from ncd.prims.structure import AddOp
    from ncd.trace.idioms import _scale, bind_product, operand, out_names

    name = node.target.name().split("::")[1].split(".")[0]
    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or not node.value.is_floating_point()
            or node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("rounding_mode") is not None):
        return False
    floats = [v.value.dtype == node.value.dtype for v in tensors]
    others = [v.value.is_floating_point() or v.value.is_complex() for v in tensors]
    if floats.count(True) != 1 or sum(others) != 1:
        return False
    names = out_names(conv, node, [a, b])
    shape = tuple(int(x) for x in node.value.shape)
    vids = [operand(conv, v, names, shape) for v in (a, b)]
    k = floats.index(False)
    seg = conv.segs[vids[k]]
    vids[k] = conv.apply(Box(CastOp(Seg((), seg.dtype, seg.range), Seg(()))), [vids[k]])
    va, vb = vids
    if name == "div":
        bind_product(conv, node, DivideOp(), va, vb, names, commutes=False)
        return True
    if name == "sub":
        vb = _scale(conv, vb, -1.0)
    bind_product(conv, node, AddOp(2) if name in ("add", "sub") else MultiplyOp(2), va, vb, names)
    return True


def _hook_tensor_arithmetic() -> None:
    """Complex products and float-with-integer arithmetic beside whichever rules ``aten.mul``/``add``/``sub``/``div``
    have (the core arithmetic keeps operands of one dtype); ``aten.multiply`` is ``aten.mul``."""
    from ncd.trace.convert import RULES

    def hooked(previous: Any) -> Any:
        def convert(conv: Converter, node: Node) -> None:
            if isinstance(node.value, torch.Tensor) and node.value.is_complex():
                if "mul" not in node.target.name() or not _complex_product(conv, node):
                    raise Decline("complex arithmetic other than a product of complex tensors")
                return
            if isinstance(node.value, torch.Tensor) and _mixed_arithmetic(conv, node):
                return
            if previous is None:
                raise Decline("no rule")
            previous(conv, node)

        return convert

    for name in ("aten.mul", "aten.add", "aten.sub", "aten.div"):
        RULES[name] = hooked(RULES.get(name))

    def multiply(conv: Converter, node: Node) -> None:
        overload = getattr(node.target, "_overloadname", "Tensor")
        node.target = getattr(torch.ops.aten.mul, overload)  # the same operator under its other name
        RULES["aten.mul"](conv, node)

    RULES["aten.multiply"] = multiply


_hook_tensor_arithmetic()


# -- repeat along size-1 wires: a broadcast copy -----------------------------------------------------
@rule("aten.repeat")
def repeat(conv: Converter, node: Node) -> None:
    """``x.repeat(...)`` that only repeats size-1 (or new leading) wires is ``x.expand(...)`` copied: the same entries."""
    from ncd.trace.attention import expand

    x, counts = node.args[:2]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not a live tensor")
    counts = [int(c) for c in counts]
    shape = [1] * (len(counts) - x.value.dim()) + [int(s) for s in x.value.shape]
    if len(shape) != len(counts) or any(c != 1 and s != 1 for c, s in zip(counts, shape)):
        raise Decline("a repeat that tiles a wire of several entries")
    expand(conv, node)


@rule("aten.repeat_interleave")
def repeat_interleave(conv: Converter, node: Node) -> None:
    """``x.repeat_interleave(r, dim)`` with a whole number ``r``: each entry copied ``r`` times in place — a broadcast copy
    onto a new wire ``r`` right after ``dim``, then the two wires merged (``i·r + k``), as ``unsqueeze``/``expand``/
    ``flatten`` compute it."""
    from ncd.prims.derivative import ExpandOp
    from ncd.trace.idioms import regroup

    x, repeats = node.args[:2]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not a live tensor")
    if isinstance(repeats, Node) or isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise Decline("repeats given per entry")
    if dim is None and x.value.dim() != 1:
        raise Decline("a repeat of every entry, flattened")
    vid = conv.value(x)
    seg = conv.segs[vid]
    names = list(conv.names(vid))
    d = 0 if dim is None else int(dim) % len(names)
    if repeats == 1:
        conv.bind(node, vid)
        return
    copy = conv.namer.fresh(repeats)
    while copy in names:
        copy += PRIME
    shape = [int(a.size) for a in seg.axes]
    wires, sizes = names[:d + 1] + [copy] + names[d + 1:], shape[:d + 1] + [repeats] + shape[d + 1:]
    target = conv.namer.segment(wires, tuple(sizes), seg.dtype, None if seg.range is None else int(seg.range))
    (copied,) = conv.emit(Box(ExpandOp(seg, target)), [vid], [target])
    shape_out = tuple(int(s) for s in node.value.shape)
    conv.bind(node, conv.view(copied, regroup(conv, wires, tuple(sizes), shape_out), shape_out))


# -- a convolution whose weight is computed (weight norm, weight standardisation) ---------------------------------------
def _unlike(conv: Converter, name: str, taken: set[str]) -> str:
    while name in taken:
        name += PRIME
    taken.add(name)
    return name


def computed_weight_convolution(conv: Converter, node: Node, stride: tuple[int, ...], padding: tuple[int, ...],
                                dilation: tuple[int, ...], groups: int) -> None:
    """``conv(x, W, b)`` with a computed weight ``W`` (a value, not a parameter), drawn as the paper draws a convolution:
    the windows ``★`` of ``x`` contracted with ``W``'s wires — ``y[.., o, p] = Σ_{c,k} W[o, c, k] · ★(x)[.., c, p, k]``
    (+ ``b[o]``); with groups, channels and outputs are read as (group, member) wires and the group is a diagonal.

    One spatial axis only (the weight-normed positional convolutions of wav2vec2, HuBERT, WavLM, ...): the lowered
    windows and einsum sum in another order than torch's convolution kernel, and over a deep stack of 2-d
    convolutions (BiT's 50 weight-standardised layers) that drifts past the round trip's tolerance (1.2e-4); those
    stay opaque until a convolution box takes its weight as a wire and lowers to ``F.conv2d``."""
    from ncd.prims.convolution import ConvolutionTensorOp
    from ncd.prims.linear import EinsumOp
    from ncd.prims.structure import AddOp
    from ncd.prims.windows import _windows
    from ncd.trace.idioms import linear_out_name

    x, weight = node.args[:2]
    bias = node.args[2] if len(node.args) > 2 else None
    vx = _live_float(conv, x)
    if not (isinstance(weight, Node) and isinstance(weight.value, torch.Tensor) and weight.value.is_floating_point()):
        raise Decline("weight not a float tensor")
    seg = conv.segs[vx]
    wshape = tuple(int(s) for s in weight.value.shape)
    n = len(wshape) - 2
    if n != 1 or len(seg.axes) < n + 2 or wshape[0] % groups or int(seg.axes[-n - 1].size) != wshape[1] * groups:
        raise Decline("not a batched 1-d convolution")
    spatial, channel = Segment(seg.axes[-n:]), seg.axes[-n - 1]
    kernel = wshape[2:]
    taken = set(seg.names)
    knames = tuple(_unlike(conv, _claim(conv, "k" + a.name.rstrip(PRIME), k, "feature"), taken)
                   for a, k in zip(spatial.axes, kernel))
    try:
        star = ConvolutionTensorOp(spatial, _windows(spatial, kernel, stride, padding, dilation, "convolution"), knames,
                                   kernel, stride, padding, dilation)
    except Exception as error:  # noqa: BLE001 - windows the box refuses stay opaque
        raise Decline(str(error)) from None
    windows = conv.apply(Box(star), [vx])  # lead c p k
    lead = list(seg.names[:-n - 1])
    positions = list(conv.segs[windows].names[len(lead) + 1:len(lead) + 1 + n])
    o = _unlike(conv, linear_out_name(conv, channel.name, int(channel.size), wshape[0]), taken)
    vw = conv.value(weight)
    if groups == 1:
        vw = conv.view(vw, [o, channel.name, *knames], wshape)
        wire_names = [o]
    else:  # c = (g, c/g) and o = (g, o/g): the group wire is shared by x's windows and W
        g, cg, og = (_unlike(conv, conv.namer.fresh(size), taken) for size in (groups, wshape[1], wshape[0] // groups))
        wsizes = (groups, wshape[0] // groups, wshape[1], *kernel)
        vw = conv.view(vw, [g, og, cg, *knames], wsizes)
        wseg = conv.segs[windows]
        windows = conv.view(windows, lead + [g, cg] + positions + list(knames),
                            tuple(int(a.size) for a in wseg.axes[:len(lead)]) + (groups, wshape[1])
                            + tuple(int(a.size) for a in wseg.axes[len(lead) + 1:]))
        wire_names = [g, og]
    by_name = {a.name: a for sg in (conv.segs[windows], conv.segs[vw]) for a in sg.axes}
    out = Segment(tuple(by_name[nm] for nm in lead + wire_names + positions))
    (vid,) = conv.emit(Box(EinsumOp(Type((conv.segs[windows], conv.segs[vw])), out)), [windows, vw], [out])
    shape = tuple(int(s) for s in node.value.shape)
    if groups != 1:
        vid = conv.view(vid, lead + [o] + positions, shape)
    if bias is not None:
        if not (isinstance(bias, Node) and isinstance(bias.value, torch.Tensor)):
            raise Decline("bias not a tensor")
        vb = conv.view(conv.value(bias), [o], (wshape[0],))
        vid = conv.apply(Box(AddOp(2)), [vid, vb])
    if list(conv.names(vid)) != lead + [o] + positions or tuple(int(a.size) for a in conv.segs[vid].axes) != shape:
        raise Decline(f"the wires come out as '{conv.segs[vid]}'")
    conv.bind(node, vid)


# -- the larger or smaller of two tensors ------------------------------------------------------------------------------
@rule("aten.maximum", "aten.minimum")
def extremum(conv: Converter, node: Node) -> None:
    """``torch.maximum(a, b)`` / ``torch.minimum(a, b)`` of two float tensors (broadcast by position, as torch does)."""
    from ncd.prims.extremum import ExtremumOp
    from ncd.trace.idioms import bind_product, operand, out_names

    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or not node.value.is_floating_point()
            or any(v.value.dtype != node.value.dtype for v in tensors)):
        raise Decline("not two float tensors of one dtype")
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in node.value.shape)
    va, vb = operand(conv, a, names, shape), operand(conv, b, names, shape)
    smaller = node.target.name().split("::")[1].split(".")[0] in ("minimum", "min")  # torch.min(a, b): min.other
    bind_product(conv, node, ExtremumOp(smaller), va, vb, names)


@rule("aten.unbind")
def unbind(conv: Converter, node: Node) -> None:
    """``x.unbind(dim)``: the pieces read (``q, k, v = qkv.unbind(0)``), each the entry at its index along ``dim``."""
    import sympy

    from ncd.prims.movement import IndexOp

    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or not isinstance(dim, int):
        raise Decline("not a live tensor")
    vid = conv.value(x)
    seg = conv.segs[vid]
    d = dim % len(seg.axes)
    for k in sorted({c.args[1] for c in conv.consumers.get(id(node), []) if "getitem" in str(c.target)}):
        conv._picked[(id(node), k)] = conv.apply(Box(IndexOp(seg.axes[d], sympy.Integer(int(k)))), [vid])


@rule("aten.max", "aten.min")
def extreme_along(conv: Converter, node: Node) -> None:
    """``x.max(dim, keepdim)`` (``min``): the largest (smallest) entry along ``dim`` — a top-1 with its unit wire
    dropped — and, when read, its position (an argmax of ``x`` or ``−x``: the first on ties, as torch gives it)."""
    import sympy

    from ncd.ir.compose import fit
    from ncd.ir.diagram import Identity, Par
    from ncd.prims.elementwise import ScaleOp
    from ncd.prims.gather import ArgMaxOp
    from ncd.prims.ranking import TopKOp
    from ncd.prims.structure import DeleteOp

    if getattr(node.target, "_overloadname", "") == "other":  # torch.max(a, b): the larger of two tensors
        extremum(conv, node)
        return
    if getattr(node.target, "_overloadname", "") != "dim" or not isinstance(node.value, (tuple, list)):
        raise Decline("the extreme of every entry, or of two tensors")
    largest = "max" in node.target.name().split("::")[1]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    vid = _live_ranked(conv, node.args[0])
    seg = conv.segs[vid]
    (d,) = _dims(conv, vid, dim)
    names = [("1" if k == d else a.name) for k, a in enumerate(seg.axes)] if keep else \
        [a.name for k, a in enumerate(seg.axes) if k != d]
    used = _used(conv, node)
    if 0 in used:
        box = Box(TopKOp(seg.axes[d], _positions_axis(conv, seg, d, 1), largest, seg.dtype, seg.range))
        woven, mapping = fit(box, Type((seg,)))
        if mapping:
            raise Decline(f"sizes would need unifying: {mapping}")
        values, positions = woven.cod
        (top,) = conv.emit(woven >> Par.of(Identity(Type((values,))), Box(DeleteOp(Type((positions,))))), [vid], [values])
        conv._picked[(id(node), 0)] = conv.view(top, names, tuple(int(s) for s in node.value[0].shape))
    if 1 in used:
        source = vid
        if not largest:
            if seg.dtype != "float":
                raise Decline("the position of the smallest index")
            source = conv.apply(Box(ScaleOp(sympy.Integer(-1))), [vid])
        at = conv.apply(Box(ArgMaxOp(Segment((seg.axes[d],), seg.dtype, seg.range))), [source])
        conv._picked[(id(node), 1)] = conv.view(at, names, tuple(int(s) for s in node.value[1].shape))


def _hook_clamp() -> None:
    """``torch.clamp(x, min, max)`` with tensor bounds (``clamp.Tensor``) beside the rule for numbers: the larger of
    ``x`` and ``min``, then the smaller of that and ``max``."""
    import ncd.trace.scalars  # noqa: F401  (the rule for numbers registers first; this one wraps it)
    from ncd.trace.convert import RULES

    def clamp_by_tensors(conv: Converter, node: Node) -> None:
        from ncd.prims.extremum import ExtremumOp
        from ncd.trace.idioms import operand, out_names

        args = list(node.args) + [None, None]
        x = args[0]
        lo, hi = node.kwargs.get("min", args[1]), node.kwargs.get("max", args[2])
        bounds = [(smaller, v) for smaller, v in ((False, lo), (True, hi)) if v is not None]
        if not all(isinstance(v, Node) and isinstance(v.value, torch.Tensor) for _, v in bounds) or not bounds:
            raise Decline("clamp by a number and a tensor")
        tensors = [x] + [v for _, v in bounds]
        if not (isinstance(x, Node) and x.live and node.value.is_floating_point()) or any(
                v.value.dtype != node.value.dtype for v in tensors):
            raise Decline("not float tensors of one dtype")
        names = out_names(conv, node, tensors)
        shape = tuple(int(s) for s in node.value.shape)
        vid = operand(conv, x, names, shape)
        for smaller, bound in bounds:
            vb = operand(conv, bound, names, shape)
            first, second = (vid, vb) if len(conv.segs[vid].axes) >= len(conv.segs[vb].axes) else (vb, vid)
            vid = conv.apply(Box(ExtremumOp(smaller)), [first, second])
        if list(conv.segs[vid].names) != names:
            raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
        conv.bind(node, vid)

    def hooked(previous: Any) -> Any:
        def convert(conv: Converter, node: Node) -> None:
            bounds = list(node.args[1:3]) + [node.kwargs.get("min"), node.kwargs.get("max")]
            if any(isinstance(v, Node) for v in bounds):
                clamp_by_tensors(conv, node)
                return
            if previous is None:
                raise Decline("no rule")
            previous(conv, node)

        return convert

    for name in ("aten.clamp", "aten.clip"):
        RULES[name] = hooked(RULES.get(name))


_hook_clamp()


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


# -- where / masked_fill: selection entry by entry -----------------------------------------------------
def _select(conv: Converter, node: Node, cond: Any, a: Any, b: Any) -> None:
    """``where(cond, a, b)`` as a :class:`WhereOp` box: a boolean tensor and two float operands (tensors of the output's
    dtype or numbers), broadcast by position as torch does."""
    from ncd.prims.selection import WhereOp

    out = node.value
    if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
        raise Decline("not a float selection")
    if not (isinstance(cond, Node) and isinstance(cond.value, torch.Tensor) and cond.value.dtype == torch.bool):
        raise Decline("the condition is not a boolean tensor")
    operands: list[Any] = [cond]
    for v in (a, b):
        if isinstance(v, Node) and isinstance(v.value, torch.Tensor):
            if v.value.dtype != out.dtype:
                raise Decline("a branch of another dtype")
            operands.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            operands.append(torch.tensor(float(v), dtype=out.dtype))
        elif isinstance(v, torch.Tensor) and v.dim() == 0:
            operands.append(v.to(out.dtype))
        else:
            raise Decline(f"a branch {type(v).__name__}")
    _broadcast(conv, node, Box(WhereOp()), operands)


def _broadcast(conv: Converter, node: Node, box: Box, operands: list[Any]) -> None:
    """``box`` (scalar domains) on ``operands`` broadcast by position as torch does, its wires in the output's order."""
    from ncd.trace.idioms import operand, out_names

    if not any(isinstance(v, Node) and v.live for v in operands):
        raise Decline("nothing live")
    names = out_names(conv, node, operands)
    shape = tuple(int(s) for s in node.value.shape)
    vids = [operand(conv, v, names, shape) for v in operands]
    vid = conv.apply(box, vids)
    got = list(conv.segs[vid].names)
    if got != names and sorted(got) == sorted(names):  # woven in the condition's order: cross the wires back
        from ncd.prims.structure import TransposeOp

        seg = conv.segs[vid]
        perm = tuple(got.index(n) for n in names)
        (vid,) = conv.emit(Box(TransposeOp(seg, perm)), [vid], [seg.with_axes(seg.axes[k] for k in perm)])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    conv.bind(node, vid)


@rule("aten.where")
def where(conv: Converter, node: Node) -> None:
    """``torch.where(c, a, b)`` with a tensor or a number on either branch (``where(c)`` alone stays opaque)."""
    if len(node.args) != 3:
        raise Decline("where(c): the positions")
    _select(conv, node, *node.args)


@rule("aten.masked_fill")
def masked_fill(conv: Converter, node: Node) -> None:
    """``x.masked_fill(mask, v)`` is ``where(mask, v, x)``."""
    x, mask, value = node.args[:3]
    _select(conv, node, mask, value, x)


_LOGIC = {"bitwise_not": "not", "logical_not": "not", "__and__": "and", "bitwise_and": "and", "logical_and": "and",
          "__or__": "or", "bitwise_or": "or", "logical_or": "or", "__xor__": "xor", "bitwise_xor": "xor", "logical_xor": "xor"}


@rule(*(f"aten.{name}" for name in _LOGIC))
def logic(conv: Converter, node: Node) -> None:
    """``~m``, ``m & n``, ``m | n``, ``m ^ n`` (and the ``logical_*`` forms) on boolean tensors."""
    from ncd.prims.selection import LOGIC, LogicOp

    operator = _LOGIC[node.target.name().split("::")[1].split(".")[0]]
    operands = list(node.args[:LOGIC[operator][0]])
    if (not isinstance(node.value, torch.Tensor) or node.value.dtype != torch.bool or node.kwargs
            or any(not (isinstance(v, Node) and isinstance(v.value, torch.Tensor) and v.value.dtype == torch.bool)
                   for v in operands)):
        raise Decline("not boolean tensors")
    _broadcast(conv, node, Box(LogicOp(operator)), operands)  # type: ignore[arg-type]
