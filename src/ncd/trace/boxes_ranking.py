"""Conversion rules for ranking and reductions: ``topk``, ``sort``/``argsort``, vector norms, ``_weight_norm``,
``logsumexp``, ``prod``, the values of ``cummax``/``cummin`` and ``median`` (see :mod:`ncd.trace.boxes` for the shared helpers).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.trace.boxes import _dims, _emit_many, _live_float, _live_ranked, _own, _positions_axis, _same_wires, _used
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.naming import kept_units

__all__: list[str] = []


# -- ranking -------------------------------------------------------------------------------------

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
    spread, axes = vid, own
    if own != list(range(own[0], own[-1] + 1)):  # dims apart (``norm(dim=(0, 2))``): moved behind the others first
        from ncd.prims.structure import TransposeOp  # (woven over the wire between them, it failed to compose)

        perm = [d for d in range(len(seg.axes)) if d not in own] + own
        moved = Box(TransposeOp(seg, tuple(perm)))
        (spread,) = conv.emit(moved, [vid], list(moved.cod))
        axes = list(range(len(perm) - len(own), len(perm)))
    try:
        box = Box(box_for(_own(conv, spread, axes)))
    except Exception as error:  # noqa: BLE001 - a reduction the box refuses stays opaque
        raise Decline(str(error)) from None
    out = conv.apply(box, [spread])
    if keep:
        names = kept_units(seg.names, own)
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
    """``torch._weight_norm(v, g, dim)`` (``nn.utils.parametrizations.weight_norm``): ``v · g / ‖v‖``, the 2-norm over
    every axis of ``v`` but ``dim`` — one :class:`~ncd.prims.weightnorm.WeightNormOp` box, the same call lowered."""
    from ncd.prims.weightnorm import WeightNormOp

    v, g = node.args[:2]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if not all(isinstance(a, Node) and isinstance(a.value, torch.Tensor) and a.value.is_floating_point() for a in (v, g)):
        raise Decline("not float tensors")
    if node.value.dtype != v.value.dtype:
        raise Decline("dtype")
    names = _read_as(conv, node)  # a convolution's weight: its wires named as the convolution names them
    vv = conv.value(v, names)
    seg = conv.segs[vv]
    if not isinstance(dim, int) or dim == -1 or not -len(seg.axes) <= dim < len(seg.axes) or len(set(seg.names)) < 2:
        raise Decline("the norm of the whole tensor")
    d = dim % len(seg.axes)
    size = int(seg.axes[d].size)
    gshape = tuple(int(s) for s in g.value.shape)
    vg = conv.value(g, None if names is None else [seg.names[d]] if gshape == (size,) else
                    [seg.names[k] if k == d else "1" for k in range(len(gshape))]
                    if gshape == tuple(size if k == d else 1 for k in range(len(seg.axes))) else None)
    gseg = conv.segs[vg]
    if gseg.axes == (seg.axes[d],):
        box = Box(WeightNormOp(seg, d))
    elif len(gseg.axes) == len(seg.axes) and gseg.axes[d] == seg.axes[d] and not gseg.repeated and all(
            int(a.size) == 1 for k, a in enumerate(gseg.axes) if k != d):
        box = Box(WeightNormOp(seg, d, gseg))  # the gain as the parametrization keeps it (o 1 1): no view
    elif tuple(int(s) for s in g.value.shape) in ((size,), tuple(size if k == d else 1 for k in range(len(seg.axes)))):
        vg = conv.view(vg, [seg.names[d]], (size,))
        box = Box(WeightNormOp(seg, d))
    else:
        raise Decline("a gain of another shape")
    _same_wires(conv, node, conv.apply(box, [vv, vg]))


def _read_as(conv: Converter, node: Node) -> list[str] | None:
    """The names the first convolution reading ``node`` as its weight gives the weight's wires
    (:func:`ncd.trace.boxes_windows.weight_wires`), if they fit ``node``'s shape; else ``None`` (names of its own)."""
    from ncd.trace.boxes_windows import weight_wires

    for reader in conv.consumers.get(id(node), ()):
        names = weight_wires(conv, reader, node)
        if names is not None:
            return names if len(names) == node.value.dim() and len(set(names)) == len(names) else None
    return None


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


@rule("aten.prod")
def prod(conv: Converter, node: Node) -> None:
    """``torch.prod(x, dim, keepdim)`` and ``x.prod()`` (every axis) on a float tensor, in its own dtype."""
    from ncd.prims.product import ProdOp

    whole = node.target.name() == "aten::prod"  # the default overload: every axis
    args = list(node.args[1:]) + [None] * 2
    dims = None if whole else args[0] if args[0] is not None else node.kwargs.get("dim")
    keep = False if whole else args[1] if args[1] is not None else node.kwargs.get("keepdim", False)
    if whole and len(node.args) > 1 or node.kwargs.get("dtype") not in (None, node.args[0].value.dtype):
        raise Decline("a product with a dtype")
    if not whole and not isinstance(dims, int):
        raise Decline("a product over no one axis")
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    _reduce(conv, node, vid, [dims] if not whole else None, keep, lambda axes: ProdOp(axes))


@rule("aten.cummax", "aten.cummin")
def running_extremum(conv: Converter, node: Node) -> None:
    """The values of ``torch.cummax(x, dim)`` / ``cummin`` on a float tensor, or on integers of a known range
    (GroundingDINO's previous special token: the range kept); their positions used: opaque."""
    from ncd.prims.cumulative import CumulativeOp

    if 1 in _used(conv, node):
        raise Decline("the positions of a running maximum are read")
    x, dim = node.args[:2]
    integers = isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dtype in (
        torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    vid = conv.value(x) if integers else _live_float(conv, x)
    if integers and (conv.segs[vid].dtype != "index" or conv.segs[vid].range is None):
        raise Decline("integers without a known range")
    (d,) = _dims(conv, vid, dim)
    seg = conv.segs[vid]
    function = "max" if "cummax" in node.target.name() else "min"
    out = conv.apply(Box(CumulativeOp(Segment((seg.axes[d],), seg.dtype, seg.range), function)), [vid])
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value[0].shape):
        raise Decline("shape")
    conv._picked[(id(node), 0)] = out


@rule("aten.median")
def median(conv: Converter, node: Node) -> None:
    """The values of ``torch.median(x, dim, keepdim)`` on a float tensor (its positions used, or the median of every
    entry: opaque)."""
    from ncd.prims.median import MedianOp

    if node.target.name() != "aten::median.dim" or 1 in _used(conv, node):
        raise Decline("the median of every entry, or its positions read")
    args = list(node.args[1:]) + [None] * 2
    dim = args[0] if args[0] is not None else node.kwargs.get("dim")
    keep = args[1] if args[1] is not None else node.kwargs.get("keepdim", False)
    vid = _live_float(conv, node.args[0])
    (d,) = _dims(conv, vid, dim)
    seg = conv.segs[vid]
    out = conv.apply(Box(MedianOp(_own(conv, vid, [d]))), [vid])
    if keep:
        names = kept_units(seg.names, [d])
        out = conv.view(out, names, tuple(int(s) for s in node.value[0].shape))
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value[0].shape):
        raise Decline("shape")
    conv._picked[(id(node), 0)] = out


@rule("aten.linalg_norm")
def norm(conv: Converter, node: Node) -> None:
    """``torch.linalg.norm(x, ord, dim, keepdim)`` where it is a vector norm: a finite order ``p >= 1`` over one axis,
    or no order (the 2-norm of the entries, Frobenius's for two axes); matrix norms of other orders stay opaque."""
    from ncd.prims.reduction import VectorNormOp

    args = list(node.args[1:]) + [None] * 3
    p = args[0] if args[0] is not None else node.kwargs.get("ord")
    dims = args[1] if args[1] is not None else node.kwargs.get("dim")
    keep = args[2] if args[2] is not None else node.kwargs.get("keepdim", False)
    if node.kwargs.get("dtype") is not None or isinstance(p, (bool, str)) or (p is not None and not isinstance(p, (int, float))):
        raise Decline("a norm with a dtype or a named order")
    vid = _live_float(conv, node.args[0])
    if node.value.dtype != node.args[0].value.dtype:
        raise Decline("dtype")
    many = dims is None or (isinstance(dims, (list, tuple)) and len(dims) != 1)
    if p is not None and many:
        raise Decline("a matrix norm")
    _reduce(conv, node, vid, dims, keep, lambda axes: VectorNormOp(axes, 2.0 if p is None else float(p)))


# -- variance and standard deviation -------------------------------------------------------------------------------

@rule("aten.var", "aten.std")
def variance(conv: Converter, node: Node) -> None:
    """``x.var(dims, correction)`` as the boxes of its definition: the mean ``𝔼`` over the wires ``dims``, subtracted
    (broadcast back over them), squared entry by entry, summed over them and divided by ``n - correction``
    (``unbiased=False``: ``n``); ``std``, its square root, as the 2-norm of the deviations over ``√(n - correction)``."""
    import math

    import sympy

    from ncd.ir.axes import Segment
    from ncd.prims.elementwise import MultiplyOp
    from ncd.prims.linear import EinsumOp
    from ncd.prims.reduction import VectorNormOp
    from ncd.prims.structure import AddOp, TransposeOp
    from ncd.trace.idioms import _scale, count_of

    name = node.target.name().split("::")[1].split(".")[0]
    x = node.args[0]
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    args, kwargs = list(node.args[1:]), dict(node.kwargs)
    dims = args[0] if args else kwargs.get("dim")
    if "correction" in kwargs or getattr(node.target, "_overloadname", "") == "correction":
        correction = kwargs.get("correction", args[1] if len(args) > 1 else None)
        correction = 1 if correction is None else correction
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    else:
        unbiased = args[1] if len(args) > 1 else kwargs.get("unbiased", True)
        correction = 1 if unbiased else 0
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    own = list(range(len(seg.axes))) if dims is None else _dims(conv, vid, dims)
    reduced = [seg.axes[d] for d in own]
    n = math.prod(int(a.size) for a in reduced)
    if not isinstance(correction, (int, float)) or n - correction <= 0 or not isinstance(keep, bool):
        raise Decline(f"a correction {correction!r} of {n} entries")
    rest = Segment(tuple(a for k, a in enumerate(seg.axes) if k not in own))
    count = count_of(conv, reduced)  # the sizes' symbols where the names hold them: 1/b follows the batch
    (mean,) = conv.emit(Box(EinsumOp(Type((seg,)), rest)), [vid], [rest])
    mean = _scale(conv, _scale(conv, mean, 1 / count), -1.0)
    deviation = conv.apply(Box(AddOp(2)), [vid, mean])
    if conv.names(deviation) != list(seg.names):
        raise Decline(f"the deviation's wires come out as '{conv.segs[deviation]}'")
    correction = int(correction) if float(correction).is_integer() else sympy.Float(correction)
    if name == "std":  # the deviations' norm, scaled: torch's std has gradient 0 where every entry is equal (a dead
        # ReLU channel's), where the root of their mean square has 0/0 (NaN: AdaIN's lowered module trained on NaN)
        spread, axes = deviation, sorted(own)
        if axes != list(range(axes[0], axes[-1] + 1)):  # dims apart (``std((0, 2))``): moved behind the others first
            perm = [d for d in range(len(seg.axes)) if d not in axes] + axes
            moved = Box(TransposeOp(conv.segs[deviation], tuple(perm)))
            (spread,) = conv.emit(moved, [deviation], list(moved.cod))
            axes = list(range(len(perm) - len(axes), len(perm)))
        norm = conv.apply(Box(VectorNormOp(_own(conv, spread, axes), 2.0)), [spread])
        out = _scale(conv, norm, (count - correction) ** sympy.Rational(-1, 2))
    else:
        square = conv.apply(Box(MultiplyOp(2)), [deviation, deviation])
        (out,) = conv.emit(Box(EinsumOp(Type((conv.segs[square],)), rest)), [square], [rest])
        out = _scale(conv, out, 1 / (count - correction))
    if keep:
        out = conv.view(out, kept_units(seg.names, own),
                        tuple(int(s) for s in node.value.shape))
    _same_wires(conv, node, out)
