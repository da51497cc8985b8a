"""Conversion rules for gathers and scatters along one axis: ``torch.gather(x, d, i)``, ``torch.scatter(x, d, i, v)``,
``scatter_add`` / ``scatter_reduce(.., "sum")`` and ``index_add`` / ``index_copy``.

``gather`` reads ``x`` along ``d`` at the positions ``i`` — a :class:`~ncd.prims.gather.GatherOp` woven over every other
axis on both inputs (a diagonal: the positions have ``x``'s size there); ``scatter`` of a number writes it there — a
:class:`~ncd.prims.gather.ScatterOp`; a scatter of a source tensor, added or set, is a
:class:`~ncd.prims.writes.ScatterWriteOp` (a router's ``full_like(logits, -inf).scatter_(1, top_i, top_v)``, a graph
network's messages summed at their targets).  The index computations these positions come from (casts, comparisons,
argmax, advanced indexing) are :mod:`ncd.trace.indexing`'s.
"""

from __future__ import annotations

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.prims.gather import GatherOp, ScatterOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.indexing import _integer, _retag
from ncd.trace.naming import PRIME, unique


def _scatter_operands(conv: Converter, node: Node, source: Node, integers: bool, why: str
                      ) -> tuple[int, int, int, Segment, list[str], int]:
    """The wires of ``scatter*(x, dim, i, s)``: ``x`` (floats, or integers where ``integers``), the positions ``i``,
    the source ``s`` (of ``x``'s dtype and ``i``'s shape, named as ``i``), what :func:`_along` reads, ``x``'s names and
    the scattered dimension; declines with ``why`` otherwise."""
    x, positions = node.args[0], node.args[2]
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor) and (x.value.is_floating_point() or integers)
            and source.value.dtype == x.value.dtype and isinstance(positions, Node)
            and isinstance(positions.value, torch.Tensor) and source.value.shape == positions.value.shape):
        raise Decline(why)
    vx, vi, at, nx = _along(conv, node)
    names, shape = conv.names(vi), tuple(int(s) for s in source.value.shape)
    vs = conv.view(conv.value(source), names, shape) if source.live else conv.value(source, names)
    return vx, vi, vs, at, nx, int(node.args[1]) % len(nx)


def _scatter_source(conv: Converter, node: Node, source: Node, reduce: str = "") -> None:
    """``torch.scatter(x, dim, i, s)`` with a source ``s`` of the positions' shape and ``x``'s float dtype (Llama 4's
    router: ``full_like(logits, -inf).scatter_(1, top_i, top_v)``): a :class:`~ncd.prims.writes.ScatterWriteOp`
    (``reduce``: ``scatter_add``'s ``"sum"``)."""
    from ncd.prims.writes import ScatterWriteOp

    x = node.args[0]
    counted = reduce == "sum" and isinstance(x, Node) and isinstance(x.value, torch.Tensor) and _integer(x.value) \
        and x.value.dtype != torch.bool  # integers added: a count (glm5_next's selected keys, tokens per expert)
    vx, vi, vs, at, nx, d = _scatter_operands(conv, node, source, counted,
                                              "a scatter of a tensor of another dtype or shape than its positions")
    integers = {}
    if counted:
        sx, ss = conv.segs[vx], conv.segs[vs]
        if sx.dtype != "index" or ss.dtype != "index" or sx.range is None or ss.range is None:
            raise Decline("integers without a known range")
        integers = {"dtype": "index", "range": sx.range, "source_range": ss.range}
    out = conv.apply(Box(ScatterWriteOp(conv.segs[vx].axes[d], at, reduce, **integers)), [vx, vi, vs])
    if conv.names(out) != nx:
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


@rule("aten.scatter_add", "aten.scatter_reduce")
def scatter_reduce(conv: Converter, node: Node) -> None:
    """``torch.scatter_add(x, dim, i, s)`` (a GNN's messages summed at their targets; ``scatter_reduce(x, dim, i, s,
    "sum")``) with a source of the positions' shape: a :class:`~ncd.prims.writes.ScatterWriteOp` adding them,
    lowered as ``scatter_add``; ``"amax"``/``"amin"`` a :class:`~ncd.prims.scatter_extremum.ScatterExtremumOp`
    (``"mean"`` is :mod:`ncd.trace.boxes_composed`'s; ``"prod"`` stays opaque)."""
    packet = node.target.name().split("::")[1]
    given = dict(zip(("reduce", "include_self"), node.args[4:])) | dict(node.kwargs)
    reduce = "sum" if packet == "scatter_add" else given.get("reduce")
    include_self = given.get("include_self", True)
    source = node.args[3] if len(node.args) > 3 else None
    if not (isinstance(source, Node) and isinstance(source.value, torch.Tensor) and source.value.dim() > 0):
        raise Decline("a scatter of no tensor")
    if reduce in ("amax", "amin") and isinstance(include_self, bool) and not set(given) - {"reduce", "include_self"}:
        _scatter_extremum(conv, node, source, reduce, include_self)
        return
    if reduce != "sum" or include_self is not True:
        raise Decline("not a scatter adding a source into x, nor its largest or smallest entries")
    _scatter_source(conv, node, source, "sum")


def _scatter_extremum(conv: Converter, node: Node, source: Node, reduce: str, include_self: bool) -> None:
    """``scatter_reduce(x, dim, i, s, "amax" | "amin", include_self)`` of floats, ``s`` of the positions' shape: a
    :class:`~ncd.prims.scatter_extremum.ScatterExtremumOp`."""
    from ncd.prims.scatter_extremum import ScatterExtremumOp

    vx, vi, vs, at, nx, d = _scatter_operands(conv, node, source, False,
                                              "not floats and a source of their dtype and the positions' shape")
    out = conv.apply(Box(ScatterExtremumOp(conv.segs[vx].axes[d], at, reduce, include_self)), [vx, vi, vs])
    if conv.names(out) != nx:
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


@rule("aten.index_add", "aten.index_copy")
def index_add(conv: Converter, node: Node) -> None:
    """``x.index_add(d, i, s)`` (a graph network's messages summed into their receiving nodes): the slices of ``s`` along
    ``d`` added at the positions ``i`` (one per slice) — a :class:`~ncd.prims.writes.ScatterWriteOp` adding them, its
    positions broadcast over ``x``'s other wires.  ``i`` reads ``x`` along ``d``: torch refuses a position outside it
    (``index out of range``), as the lowered ``scatter_add`` does, so the positions are read with that range.
    ``x.index_copy(d, i, s)`` is the same write setting the slices (where positions repeat, one of them, as torch's)."""
    from ncd.prims.writes import ScatterWriteOp

    x, dim, index, source = (list(node.args) + [None] * 4)[:4]
    alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
    reduce = "" if "index_copy" in node.target.name() else "sum"
    if alpha != 1 or set(node.kwargs) - {"alpha"} or not isinstance(dim, int):
        raise Decline("a scaled source (alpha)")
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()
            and isinstance(source, Node) and isinstance(source.value, torch.Tensor) and source.value.dtype == x.value.dtype
            and isinstance(index, Node) and isinstance(index.value, torch.Tensor) and _integer(index.value)
            and index.value.dim() == 1 and index.value.device.type != "meta" and (x.live or source.live or index.live)):
        raise Decline("not a float tensor, a source of its dtype and positions along one axis")
    shape = tuple(int(v) for v in x.value.shape)
    if not shape:
        raise Decline("a number added into")
    d = dim % len(shape)
    n = int(index.value.shape[0])
    wanted = shape[:d] + (n,) + shape[d + 1:]
    if tuple(int(v) for v in source.value.shape) != wanted or n == 0:
        raise Decline("a source of another shape than x's with the positions along d")
    vx = conv.value(x)
    nx = conv.names(vx)
    j = conv.names(conv.value(index))[0] if index.live else conv.namer.fresh(n, None)
    while j in nx:
        j += PRIME
    vi = _retag(conv, conv.value(index), [j], (n,), shape[d])
    names = [j if k == d else w for k, w in enumerate(nx)]
    vs = conv.view(conv.value(source), names, wanted) if source.live else conv.value(source, names)
    axis = conv.segs[vx].axes[d]
    out = conv.apply(Box(ScatterWriteOp(axis, Segment(conv.segs[vi].axes, "index", axis.size), reduce)), [vx, vi, vs])
    if conv.names(out) != nx:
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


def _along(conv: Converter, node: Node) -> tuple[int, int, Segment, list[str]]:
    """``x, dim, i`` of ``gather``/``scatter``: the tensor, the positions named after it (a diagonal off ``dim``, a new
    axis along it), the positions' segment for the box, and the wires' names."""
    x, dim, positions = node.args[:3]
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor) and (
            x.value.is_floating_point() or _integer(x.value) and ("gather" in node.target.name()
                                                                  or "scatter_add" in node.target.name())
            or x.value.dtype == torch.bool and ("scatter" in node.target.name() or "gather" in node.target.name()))):
        raise Decline("not a float tensor (or integers gathered or added, flags scattered or gathered)")
    if not (isinstance(positions, Node) and (positions.live or x.live) and _integer(positions.value)
            and positions.value.device.type != "meta"):
        raise Decline("positions not an integer tensor (live, or constant positions of a live tensor)")
    shape, pshape = tuple(int(s) for s in x.value.shape), tuple(int(s) for s in positions.value.shape)
    if len(shape) != len(pshape) or not shape:
        raise Decline("index of another rank")
    d = int(dim) % len(shape)
    if any(pshape[k] != shape[k] for k in range(len(shape)) if k != d):
        raise Decline("index narrower than the tensor off its axis")
    # a constant at live positions (a router's zeros scattered into): its wires are the positions' where they line up,
    # not names of their size alone (the tokens b*t taken for a width of that size)
    vi = conv.value(positions)
    if x.live or not positions.live or id(x) in conv.values:
        vx = conv.value(x)
    else:
        own = conv.names(vi)
        # the wire the positions point along: a name of its own (the positions' range may be the tokens while a
        # width of the same traced size holds the generic name: the width would then follow the tokens)
        along = "1" if shape[d] == 1 else conv.namer.fresh(shape[d], None, "feature", (own[d].rstrip(PRIME), "@"))
        vx = conv.value(x, unique([along if k == d else n for k, n in enumerate(own)]))
    nx = conv.names(vx)
    seg = conv.segs[vi]
    if seg.range is None or int(seg.range) > shape[d]:
        raise Decline("positions without a known range")
    j = conv.names(vi)[d]
    while j in nx:
        j += PRIME
    vi = _retag(conv, vi, [j if k == d else n for k, n in enumerate(nx)], pshape, shape[d])
    axis = conv.segs[vx].axes[d]
    return vx, vi, Segment((conv.segs[vi].axes[d],), "index", axis.size), nx


@rule("aten.gather")
def gather(conv: Converter, node: Node) -> None:
    """``torch.gather(x, dim, i)``: ``out[.., j, ..] = x[.., i[.., j, ..], ..]`` — a gather along ``dim`` at positions ``j``,
    woven over every other axis on both inputs (a diagonal: the index has ``x``'s size there)."""
    vx, vi, positions, _ = _along(conv, node)
    seg = conv.segs[vx]
    d = int(node.args[1]) % len(seg.axes)
    if seg.dtype not in ("float", "index", "bool"):
        raise Decline(f"a gather of {seg.dtype} entries")
    out = conv.apply(Box(GatherOp(seg.axes[d], positions, seg.dtype, seg.range, wraps=False)), [vx, vi])
    if conv.names(out) != conv.names(vi):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


@rule("aten.scatter")
def scatter(conv: Converter, node: Node) -> None:
    """``torch.scatter(x, dim, i, value)`` with a number: ``x`` with ``x[.., i[.., j, ..], ..] = value`` — a scatter along
    ``dim``, woven over every other axis on both inputs."""
    if len(node.args) < 4 or node.kwargs.get("reduce") is not None or len(node.args) > 4:
        raise Decline("a scatter with a reduction")
    value = node.args[3]
    if isinstance(value, Node) and not value.live and isinstance(value.value, torch.Tensor) and value.value.dim() == 0:
        value = value.value.item()
    if isinstance(value, Node) and isinstance(value.value, torch.Tensor) and value.value.dim() > 0:
        _scatter_source(conv, node, value)
        return
    if isinstance(value, Node) or not isinstance(value, (int, float)):
        raise Decline("a scatter of a tensor")
    vx, vi, positions, nx = _along(conv, node)
    d = int(node.args[1]) % len(nx)
    flags = conv.segs[vx].dtype == "bool"
    if flags != isinstance(value, bool) and not (flags and value in (0, 1)):
        raise Decline(f"a scatter of {value!r} into {conv.segs[vx].dtype} entries")
    written = bool(value) if flags else float(value)
    out = conv.apply(Box(ScatterOp(conv.segs[vx].axes[d], positions, written, "bool" if flags else "float")), [vx, vi])
    if conv.names(out) != nx:
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)
