"""Conversion rules for ATen operators that have a primitive of their own beyond the core idioms.

``roll``, ``flip``, ``pad`` (constant, reflect, replicate), ``cumsum``, ... each become their box (see
the family modules :mod:`ncd.prims.padding`, :mod:`ncd.prims.cumulative`, ...), named on the
wires they act on; the other wires are woven past them.  A call whose arguments the box
cannot express exactly declines (:class:`~ncd.trace.convert.Decline`) and stays opaque.

This module holds the helpers the recognisers share and the rules for roll, pad, cumulative sums,
elementwise functions and division; the other families are its siblings, registered by
:func:`ncd.trace.idioms.load_rules`:

- :mod:`ncd.trace.boxes_channels`: group norm, instance norm, PReLU (learned per channel);
- :mod:`ncd.trace.boxes_resampling`: interpolation (``upsample_*``), adaptive average and max pooling;

- :mod:`ncd.trace.boxes_ranking`: top-k, sort, vector norms, weight norm, log-sum-exp;
- :mod:`ncd.trace.boxes_complex`: Fourier transforms, complex wires, float-with-integer arithmetic;
- :mod:`ncd.trace.boxes_indexing`: repeat, extrema, unbind, max/min along an axis, clamp by tensors;
- :mod:`ncd.trace.boxes_windows`: convolutions with a computed weight, ``unfold``, ``im2col``/``col2im``;
- :mod:`ncd.trace.boxes_selection`: ``where``, ``masked_fill``, logic.
"""

from __future__ import annotations

import math
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


def _live_padded(conv: Converter, x: Any) -> int:
    """The value id of a live float tensor, or of an integer tensor drawn as indices (token ids padded to a window)."""
    if isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and not x.value.is_floating_point() \
            and x.value.dtype != torch.bool and not x.value.is_complex():
        vid = conv.value(x)
        if conv.segs[vid].dtype != "index":
            raise Decline("not indices")
        return vid
    return _live_float(conv, x)


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


def _unlike(conv: Converter, name: str, taken: set[str]) -> str:
    while name in taken:
        name += PRIME
    taken.add(name)
    return name


def _positions_axis(conv: Converter, seg: Segment, d: int, size: int) -> Any:
    """A new axis for the ranked positions, named after the ranked axis and unlike every wire of ``seg``."""
    from ncd.ir.axes import Axis

    axis = seg.axes[d]
    roles = conv.namer.config
    if size < int(axis.size) and "s" in roles.get(size, set()) and "e" in roles.get(int(axis.size), set()):
        name = conv.namer.fresh(size, "s")  # the top-k slots of a router over experts: the config's role
    else:
        name = _claim(conv, axis.name, size, "item" if axis.is_item else "feature")
    while name in seg.names:
        name += PRIME
    return Axis(name, sympy_int(size), axis.role)



# -- triangles, roll, pad ----------------------------------------------------------------------
@rule("aten.tril", "aten.triu")
def band(conv: Converter, node: Node) -> None:
    """``torch.tril(x, k)`` / ``torch.triu(x, k)`` of a float tensor: the triangle of its last two wires."""
    from ncd.prims.band import BandOp

    x = node.args[0]
    diagonal = node.args[1] if len(node.args) > 1 else node.kwargs.get("diagonal", 0)
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    if len(seg.axes) < 2 or isinstance(diagonal, bool) or not isinstance(diagonal, int):
        raise Decline("not a matrix, or a diagonal that is not a number")
    rows, cols = seg.axes[-2:]
    _same_wires(conv, node, conv.apply(Box(BandOp(rows, cols, diagonal, "triu" in node.target.name())), [vid]))


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


@rule("aten.flip")
def flip(conv: Converter, node: Node) -> None:
    from ncd.prims.padding import FlipOp

    x = node.args[0]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dims", ())
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or x.value.dtype == torch.bool:
        raise Decline("not a live float or integer tensor")
    vid = conv.value(x)
    own = sorted(_dims(conv, vid, dims))
    if not own:
        raise Decline("no axis reversed")
    _same_wires(conv, node, conv.apply(Box(FlipOp(_own(conv, vid, own))), [vid]))


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
    vid = _live_float(conv, x) if mode != "constant" else _live_padded(conv, x)
    seg = conv.segs[vid]
    amounts = [int(a) for a in amounts]
    n = len(amounts) // 2
    if len(amounts) % 2 or not 0 < n <= len(seg.axes) or mode not in ("constant", "reflect", "replicate", "circular"):
        raise Decline(f"padding {amounts} in mode {mode!r}")
    before = tuple(amounts[2 * k] for k in reversed(range(n)))
    after = tuple(amounts[2 * k + 1] for k in reversed(range(n)))
    keep = [k for k in range(n) if before[k] or after[k]]
    if not keep:
        _same_wires(conv, node, vid)
        return
    axes = Segment(seg.axes[len(seg.axes) - n:])
    try:
        prim = PadOp(Segment(tuple(axes.axes[k] for k in keep), seg.dtype, seg.range), tuple(before[k] for k in keep),
                     tuple(after[k] for k in keep), mode, float(value or 0.0))
        # ids padded to a length computed from the input's (the model's, at the traced size): named by that size; by
        # amounts the recording saw computed from no size (``F.pad(ids, (0, 2))``), a pad as any (export marks none)
        fit = seg.dtype == "index" and (conv.captured.method != "dispatch" or any(
            type(k) is tuple and k[0] in (1, "pad") for k in node.sized or ()))
        if fit:  # (its amounts drawn as the length padded to: not held by shape_expressions.check_node)
            conv.sized_drawn.add(id(node))
        out = _renamed(conv, seg, prim.padded()) if not fit else \
            conv.namer.segment([conv.namer.fresh(int(a.size)) for a in prim.padded()],
                               tuple(int(a.size) for a in prim.padded()))
        prim = PadOp(prim.axes, prim.before, prim.after, prim.mode, prim.value, Segment(out.axes, seg.dtype, seg.range),
                     fit)
    except Exception as error:  # noqa: BLE001 - a pad the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(Box(prim), [vid]))


@rule("aten.diff")
def diff(conv: Converter, node: Node) -> None:
    """``torch.diff(x, n, dim, prepend, append)`` of numbers (not flags, whose difference is an exclusive or):
    ``prepend``, ``x`` and ``append`` joined along ``dim``, then ``n`` times the later entries minus the earlier ones
    (two slices and a subtraction, each by its own rule: transformers' packed-sequence test of ``position_ids``)."""
    from ncd.trace.boxes_losses import _call

    def arg(k: int, name: str, default: Any) -> Any:
        return node.args[k] if len(node.args) > k else node.kwargs.get(name, default)

    x, n, dim = node.args[0], arg(1, "n", 1), arg(2, "dim", -1)
    ends = [arg(3, "prepend", None), arg(4, "append", None)]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or x.value.dtype == torch.bool \
            or not isinstance(n, int) or n < 1 or not isinstance(dim, int):
        raise Decline("not a difference of a live tensor of numbers")
    parts = [p for p in (ends[0], x, ends[1]) if p is not None]
    if any(not (isinstance(p, Node) and isinstance(p.value, torch.Tensor)) or p.value.dtype != x.value.dtype
           for p in parts):
        raise Decline("prepended or appended entries of another type")
    y = _call(conv, node, "joined", torch.ops.aten.cat.default, parts, dim) if len(parts) > 1 else x
    for k in range(n):
        length = int(y.value.shape[dim])
        later = _call(conv, node, f"later{k}", torch.ops.aten.slice.Tensor, y, dim, 1, length)
        earlier = _call(conv, node, f"earlier{k}", torch.ops.aten.slice.Tensor, y, dim, 0, length - 1)
        y = _call(conv, node, f"difference{k}", torch.ops.aten.sub.Tensor, later, earlier)
    if not torch.equal(y.value, node.value) and y.value.device.type != "meta":
        raise Decline("the slices' difference is not the recorded one")
    conv.bind(node, conv.values[id(y)])


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


@rule("aten.cumprod", "aten.logcumsumexp")
def running(conv: Converter, node: Node) -> None:
    """``torch.cumprod(x, dim)`` and ``torch.logcumsumexp(x, dim)`` of a float tensor (no change of dtype)."""
    from ncd.prims.cumulative import CumulativeOp

    function = "prod" if "cumprod" in node.target.name() else "logsumexp"
    x, dim = node.args[:2]
    if node.kwargs.get("dtype", node.args[2] if len(node.args) > 2 else None) not in (None, node.value.dtype):
        raise Decline("a running product that changes dtype")
    vid = _live_float(conv, x)
    if node.value.dtype != x.value.dtype:
        raise Decline("dtype")
    (d,) = _dims(conv, vid, dim)
    seg = conv.segs[vid]
    _same_wires(conv, node, conv.apply(Box(CumulativeOp(Segment((seg.axes[d],), seg.dtype, seg.range), function)), [vid]))


# -- elementwise functions (rows of ncd.prims.elementwise.ROWS) and division ----------------------
#: ATen operator -> (row of ROWS, the default arguments beyond the input it is exact for); a row with parameters
#: (``ROWS[...].params``) takes them from the call, the defaults listed here past them must be as given
#: (``reciprocal`` is ncd.trace.scalars': ``1 / ·``)
UNARY = {"rsqrt": ("rsqrt", ()), "square": ("square", ()), "softplus": ("softplus", (1, 20)), "mish": ("mish", ()),
         "hardswish": ("hardswish", ()), "hardsigmoid": ("hardsigmoid", ()), "relu6": ("relu6", ()),
         "leaky_relu": ("leaky_relu", (0.01,)), "elu": ("elu", (1, 1, 1)), "erf": ("erf", ()), "sin": ("sin", ()),
         "cos": ("cos", ()), "log1p": ("log1p", ()), "log2": ("log2", ()), "expm1": ("expm1", ()), "acos": ("acos", ()),
         "hardtanh": ("hardtanh", (-1, 1)), "log_sigmoid": ("log_sigmoid", ()), "celu": ("celu", (1,)),
         "selu": ("selu", ()), "sign": ("sign", ()), "trunc": ("trunc", ()), "round": ("round", ()),
         "frac": ("frac", ()), "floor": ("floor", ()), "ceil": ("ceil", ())}
#: keyword names of the ATen arguments, in order
_KEYWORDS = {"softplus": ("beta", "threshold"), "leaky_relu": ("negative_slope",), "elu": ("alpha", "scale", "input_scale"),
             "hardtanh": ("min_val", "max_val"), "celu": ("alpha",)}


@rule(*(f"aten.{name}" for name in UNARY))
def unary(conv: Converter, node: Node) -> None:
    from ncd.prims.elementwise import ROWS, ElementwiseOp
    from ncd.trace import idioms_norms

    name = node.target.name().split("::")[1].split(".")[0]
    if name == "square" and (idioms_norms.root_mean_square(conv, node) or idioms_norms.l2_norm(conv, node)):
        return  # x * rsqrt(mean(x²) + eps) in an RMS norm, x * rsqrt(sum(x²) + eps): an RMS box
    function, defaults = UNARY[name]
    keywords = _KEYWORDS.get(name, ())
    given = list(node.args[1:])
    if len(given) > len(defaults) or set(node.kwargs) - set(keywords[len(given):]):
        raise Decline(f"{name} with other arguments {given} {node.kwargs}")
    values = given + [node.kwargs.get(k, d) for k, d in zip(keywords[len(given):], defaults[len(given):])]
    values += list(defaults[len(values):])
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        raise Decline(f"{name} with arguments {values}")
    n = len(ROWS[function].params)
    if any(v != d for v, d in zip(values[n:], defaults[n:])):  # elu's scale and input scale: selu and celu have rows
        raise Decline(f"{name} with other arguments {values}")
    args = tuple(float(v) for v in values[:n])
    if name == "hardtanh" and args == (0.0, 6.0):
        function, args = "relu6", ()
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    _same_wires(conv, node, conv.apply(Box(ElementwiseOp(function, args)), [vid]))


@rule("aten.rrelu")
def rrelu(conv: Converter, node: Node) -> None:
    """``F.rrelu`` in evaluation (``training=False``): torch's leaky ReLU with the mean slope ``(lower + upper) / 2``
    (its gradient too); random slopes (training) stay opaque."""
    from ncd.prims.elementwise import ElementwiseOp

    given = dict(zip(("lower", "upper", "training", "generator"), node.args[1:])) | dict(node.kwargs)
    lower, upper = given.get("lower", 1.0 / 8), given.get("upper", 1.0 / 3)
    if given.get("training", False) is not False:
        raise Decline("random slopes (training)")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in (lower, upper)):
        raise Decline(f"rrelu with bounds {lower}, {upper}")
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    slope = (float(lower) + float(upper)) / 2  # as ATen computes it, in double precision
    _same_wires(conv, node, conv.apply(Box(ElementwiseOp("leaky_relu", (slope,))), [vid]))


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


def _by_number(conv: Converter, node: Node) -> bool:
    """``x / c`` of a number the forward made as a 0-d tensor of ``x``'s float type (DeBERTa's ``scale =
    sqrt(tensor(k) * 3)``): the arithmetic box ``/ c`` of that number, no constant box broadcast into a division.  The
    same values: torch divides by a 0-d tensor as by a Python number, each read as the tensor holds it; False when it
    is not that."""
    from ncd.trace.scalars import scalar_arithmetic

    a, b = node.args[:2]
    if not (isinstance(a, Node) and a.live and isinstance(a.value, torch.Tensor) and isinstance(b, Node)
            and b.kind == "call" and not b.live and isinstance(b.value, torch.Tensor) and b.value.dim() == 0
            and b.value.device.type != "meta" and b.value.is_floating_point()
            and a.value.dtype == b.value.dtype == node.value.dtype and node.kwargs.get("rounding_mode") is None
            and not conv.learned(b)):
        return False
    scalar_arithmetic(conv, node)
    return True


def _hook_division() -> None:
    """Tensor/tensor division beside the core arithmetic rule (which keeps numbers and the other operators)."""
    from ncd.trace.convert import RULES
    from ncd.trace.idioms import arithmetic
    from ncd.trace.idioms_arithmetic import sized_scalar

    def divide(conv: Converter, node: Node) -> None:
        if node.target.name().split("::")[1].split(".")[0] == "div":
            sized = sized_scalar(conv, node, node.args[0], node.args[1], "div")  # over k**0.5 held in a tensor: times k**-0.5
            if sized is not None:
                conv.bind(node, sized)
                return
            if _by_number(conv, node) or _division(conv, node):
                return
        arithmetic(conv, node)

    for name in ("aten.div",):
        if RULES.get(name) is arithmetic:
            RULES[name] = divide


_hook_division()


def sympy_int(value: int) -> Any:
    import sympy

    return sympy.Integer(value)


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
