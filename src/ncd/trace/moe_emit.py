"""A recognised mixture of experts (:class:`ncd.trace.moe.Experts`) drawn as the paper draws it: the gate ``G`` (a
gather from the identity on the expert axis ``e``, weighted by the router's weights), the experts as einsums with ``e``
on their learned weights, and the weighted sum over ``e``.  If drawing fails, every recorded operation is drawn by its
own rule (or opaque)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import sympy
import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.elementwise import ElementwiseOp, MultiplyOp
from ncd.prims.linear import EinsumOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, op_name

if TYPE_CHECKING:
    from ncd.trace.moe import Experts

#: each activation as the elementwise functions drawn for it, in order (``relu2`` is ``x ↦ relu(x)²``)
DRAWN: dict[str, tuple[str, ...]] = {"relu2": ("relu", "square")}


def _emitter(found: Experts) -> Callable[[Converter, Node], None]:
    def emit(conv: Converter, node: Node) -> None:
        mark = conv.mark()
        try:
            conv.bind(node, _emit(conv, found))
        except Exception:  # noqa: BLE001 - drawn as recorded (every operation by its rule or opaque)
            conv.rollback(mark)
            for n in found.members:
                if n.live and n.value is not None and not isinstance(n.value, (bool, int, float)):
                    _getitem_or_convert(conv, n)

    return emit


def _getitem_or_convert(conv: Converter, n: Node) -> None:
    from ncd.trace.attention import _convert_one

    if op_name(n.target)[0] == "operator.getitem":
        key = (id(n.args[0]), n.args[1])
        if key in conv._picked:
            conv.values[id(n)] = conv._picked[key]
        return
    _convert_one(conv, n)


def _fresh(conv: Converter, size: int, hint: str, taken: set[str]) -> str:
    from ncd.trace.naming import PRIME

    name = conv.namer.claim(hint, size)  # the role's own name (experts e, expert features f), not one by size
    while name in taken:
        name += PRIME
    taken.add(name)
    return name


def _emit(conv: Converter, found: Experts) -> int:
    from ncd.prims.gather import GatherOp
    from ncd.prims.movement import SliceOp

    vx, vi, vw = conv.value(found.x), conv.value(found.index), conv.value(found.weight)
    tx, m = conv.names(vx)
    ti, kk = conv.names(vi)
    taken = {tx, m, kk}
    experts = int(found.params[0][1].shape[0])
    e = _fresh(conv, experts, "e", taken)
    e_row = _fresh(conv, experts, "e", taken)
    # the gate: G[t, e] = Σ_k w[t, k] · I[i[t, k], e] (the identity on e, gathered at the chosen experts)
    vi = conv.view(vi, [tx, kk], tuple(int(s) for s in found.index.value.shape))
    iseg = conv.segs[vi]
    if iseg.dtype != "index" or iseg.range is None or int(iseg.range) != experts:
        from ncd.prims.opaque import ViewOp

        wider = Segment(iseg.axes, "index", sympy.Integer(experts))
        (vi,) = conv.emit(Box(ViewOp(iseg, wider)), [vi], [wider])
    identity = conv.value(Node("experts_identity", "constant", value=torch.eye(experts), source="identity"), [e_row, e])
    row = conv.segs[identity].axes[0]
    onehot = conv.apply(Box(GatherOp(row, conv.segs[vi])), [identity, vi])
    vw = conv.view(vw, [tx, kk], tuple(int(s) for s in found.weight.value.shape))
    gate_seg = Segment((conv.segs[vw].axes[0], conv.segs[onehot].axes[-1]))
    (gate,) = conv.emit(Box(EinsumOp(Type((conv.segs[vw], conv.segs[onehot])), gate_seg)), [vw, onehot], [gate_seg])
    # the experts: einsums with the expert axis e on their learned weights
    w_in = found.params[:-1]
    name_out, w_out = found.params[-1]
    width = int(w_out.shape[1 if found.layout == "gate_up_t" else 2])
    f = _fresh(conv, width, "f", taken)
    hidden: int
    if found.layout in ("gate_up", "gate_up_t"):
        g2 = _fresh(conv, 2 * width, "f", taken)
        names = [e, g2, m] if found.layout == "gate_up" else [e, m, g2]
        vw1 = _parameter(conv, w_in[0], names)
        h_seg = Segment((conv.segs[vx].axes[0], conv.segs[vw1].axes[0], conv.segs[vw1].axes[names.index(g2)]))
        (h,) = conv.emit(Box(EinsumOp(Type((conv.segs[vx], conv.segs[vw1])), h_seg)), [vx, vw1], [h_seg])
        axis = h_seg.axes[-1]
        f_axis = conv.namer.axis(f, width)
        gate_half = conv.apply(Box(SliceOp(axis, sympy.Integer(0), sympy.Integer(width), sympy.Integer(1), f_axis)), [h])
        up_half = conv.apply(Box(SliceOp(axis, sympy.Integer(width), sympy.Integer(2 * width), sympy.Integer(1), f_axis)),
                             [h])
        hidden = conv.apply(Box(MultiplyOp(2)), [_activation(conv, found.act, gate_half), up_half])
    else:
        projected = []
        for param in w_in:
            vw1 = _parameter(conv, param, [e, f, m])
            h_seg = Segment((conv.segs[vx].axes[0], conv.segs[vw1].axes[0], conv.segs[vw1].axes[1]))
            (h,) = conv.emit(Box(EinsumOp(Type((conv.segs[vx], conv.segs[vw1])), h_seg)), [vx, vw1], [h_seg])
            projected.append(h)
        hidden = _activation(conv, found.act, projected[0])
        if len(projected) == 2:
            hidden = conv.apply(Box(MultiplyOp(2)), [hidden, projected[1]])
    transposed = found.layout == "gate_up_t"  # W2: e f m (the layout a grouped GEMM consumes), else e m f
    vw2 = _parameter(conv, (name_out, w_out), [e, f, m] if transposed else [e, m, f])
    hseg = conv.segs[hidden]
    y_seg = Segment((hseg.axes[0], hseg.axes[1], conv.segs[vw2].axes[2 if transposed else 1]))
    (y,) = conv.emit(Box(EinsumOp(Type((hseg, conv.segs[vw2])), y_seg)), [hidden, vw2], [y_seg])
    # the weighted sum over the expert axis
    out_seg = Segment((y_seg.axes[0], y_seg.axes[2]))
    (out,) = conv.emit(Box(EinsumOp(Type((conv.segs[gate], y_seg)), out_seg)), [gate, y], [out_seg])
    return out


def _activation(conv: Converter, act: str, value: int) -> int:
    for function in DRAWN.get(act, (act,)):
        value = conv.apply(Box(ElementwiseOp(function)), [value])
    return value


def _parameter(conv: Converter, param: tuple[str, torch.Tensor], names: list[str]) -> int:
    name, value = param
    return conv.value(Node(name.replace(".", "_"), "parameter", value=value, source=name), names)
