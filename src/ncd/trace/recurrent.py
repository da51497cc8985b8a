"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) as scans over the time axis, built from their equations.

``aten.lstm`` / ``aten.gru`` / ``aten.rnn_tanh`` / ``aten.rnn_relu`` arrive as one call each.  Every
layer becomes the input projection of all positions at once (a learned ``L^ih`` woven over the
batch and time axes) and an :func:`ncd.Scan` over the time axis whose body is one cell — drawn
once, never unrolled per token.  The cells are PyTorch's documented equations (``nn.LSTM``:
``i, f, g, o`` gates; ``nn.GRU``: ``r, z, n`` with the reset gate applied to ``W_hn h + b_hn``);
the round-trip test checks them against the modules.  A bidirectional layer is two scans, the second
``reverse`` (from the last position to the first), their outputs joined along the features; projections
(``proj_size``) and packed sequences are declined (an opaque box calling the operator).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import SCALAR, Axis, Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box, Diagram
from ncd.ir.size import size
from ncd.prims.elementwise import ElementwiseOp, MultiplyOp, ScaleOp
from ncd.prims.linear import LinearOp
from ncd.prims.movement import ConcatOp, IndexOp, UnsqueezeOp
from ncd.prims.scan import ScanOp
from ncd.prims.structure import AddOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.wiring import Step, wire

__all__ = ["Graph"]

#: gates per cell, by ATen operator
GATES = {"aten.lstm": 4, "aten.gru": 3, "aten.rnn_tanh": 1, "aten.rnn_relu": 1}


class Graph:
    """A small graph of boxes over value ids, wired into one diagram (a scan's body)."""

    def __init__(self) -> None:
        self.segs: dict[int, Segment] = {}
        self.steps: list[Step] = []

    def value(self, seg: Segment) -> int:
        vid = len(self.segs) + 1
        self.segs[vid] = seg
        return vid

    def apply(self, box: Diagram, *ins: int) -> int:
        """``box`` woven over the axes of its inputs it does not use; its one output."""
        woven, mapping = fit(box, Type(tuple(self.segs[v] for v in ins)))
        if mapping:
            raise Decline(f"sizes would need unifying: {mapping}")
        (out,) = woven.cod
        vid = self.value(out)
        self.steps.append(Step(woven, list(ins), [vid]))
        return vid

    def diagram(self, inputs: list[int], outputs: list[int]) -> Diagram:
        return wire(inputs, self.steps, outputs, self.segs)


def _tensor(ref: Any) -> torch.Tensor:
    if not isinstance(ref, Node) or ref.live or not isinstance(ref.value, torch.Tensor) or ref.value.device.type == "meta":
        raise Decline("a recurrent layer's weights must be parameters with values")
    return ref.value.detach()


def _cell(kind: str, q: Axis | None, k: Axis, batch: tuple[Axis, ...], biased: bool) -> tuple[Diagram, int]:
    """One step ``(state..., gx_t) -> (state'..., y_t)``; returns the body and its number of states.  Its one learned
    box (``hh``, with a bias if ``biased``) takes the tensors its caller hands it."""
    g = Graph()
    state = Segment(batch + (k,))
    h = g.value(state)
    c = g.value(state) if kind == "aten.lstm" else None
    gates = Segment(batch + ((q,) if q is not None else ()) + (k,))
    gx = g.value(gates)
    cod = Segment(((q,) if q is not None else ()) + (k,))
    gh = g.apply(Box(LinearOp(Segment((k,)), cod, biased), "hh"), h)

    def pick(v: int, j: int) -> int:
        assert q is not None
        return g.apply(Box(IndexOp(q, size(j))), v)

    def act(name: str, v: int) -> int:
        return g.apply(Box(ElementwiseOp(name)), v)

    def add(a: int, b: int) -> int:
        return g.apply(Box(AddOp(2)), a, b)

    def mul(a: int, b: int) -> int:
        return g.apply(Box(MultiplyOp(2)), a, b)

    if kind == "aten.lstm":
        assert c is not None
        s = add(gx, gh)
        i, f, cand, o = act("sigmoid", pick(s, 0)), act("sigmoid", pick(s, 1)), act("tanh", pick(s, 2)), \
            act("sigmoid", pick(s, 3))
        c2 = add(mul(f, c), mul(i, cand))
        h2 = mul(o, act("tanh", c2))
        return g.diagram([h, c, gx], [h2, c2, h2]), 2
    if kind == "aten.gru":
        r = act("sigmoid", add(pick(gx, 0), pick(gh, 0)))
        z = act("sigmoid", add(pick(gx, 1), pick(gh, 1)))
        n = act("tanh", add(pick(gx, 2), mul(r, pick(gh, 2))))
        h2 = add(n, mul(z, add(h, g.apply(Box(ScaleOp(size(-1))), n))))  # (1 - z) n + z h
        return g.diagram([h, gx], [h2, h2]), 1
    h2 = act("tanh" if kind == "aten.rnn_tanh" else "relu", add(gx, gh))
    return g.diagram([h, gx], [h2, h2]), 1


def _cell_of(conv: Converter, kind: str, q: Axis | None, k: Axis, batch: tuple[Axis, ...],
             biased: bool) -> tuple[Diagram, int]:
    """:func:`_cell`, made once per converter for each kind and wires: every layer and direction of a recurrent layer,
    and a cell called at every position of a loop, steps by the one body (each with its own weights, handed to its
    ``hh`` box in order), which symbolize, the loop folding and the page's column memo then meet once."""
    cells: dict[tuple[Any, ...], tuple[Diagram, int]] = conv.__dict__.setdefault("_cells", {})
    key = (kind, q, k, batch, biased)
    found = cells.get(key)
    if found is None:
        found = cells[key] = _cell(kind, q, k, batch, biased)
    return found


@rule("aten.lstm", "aten.gru", "aten.rnn_tanh", "aten.rnn_relu")
def recurrent(conv: Converter, node: Node) -> None:
    """``aten.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)``."""
    from ncd.trace.convert import op_name

    kind = op_name(node.target)[0]
    if len(node.args) != 9 or not isinstance(node.args[0], Node) or not node.args[0].live:
        raise Decline("packed sequences or an input that is not a traced value")
    x, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first = node.args
    n_gates = GATES[kind]
    per_layer = 4 if has_biases else 2
    dirs = 2 if bidirectional else 1
    if len(params) != per_layer * layers * dirs or (train and dropout and layers > 1):
        raise Decline("projections (proj_size) or dropout between layers")
    hxs = list(hx) if kind == "aten.lstm" else [hx]
    xv = conv.value(x)
    seg = conv.segs[xv]
    batched = len(seg) == 3
    tdim = 1 if batched and batch_first else 0
    time = seg.axes[tdim]
    batch = (seg.axes[1 - tdim],) if batched else ()
    hidden = int(_tensor(params[1]).shape[1])
    k = conv.namer.segment([conv.namer.fresh(hidden)], (hidden,)).axes[0]
    q = _gates(conv, n_gates, {k.name, *seg.names})
    both = conv.namer.segment([conv.namer.fresh(2 * hidden)], (2 * hidden,)).axes[0] if bidirectional else None
    states_in: list[int] = []  # (layers × directions, [batch,] hidden) each, after the first projection (first use)
    finals: list[list[int]] = [[] for _ in hxs]
    out = xv
    for layer in range(layers):
        feature = conv.segs[out].axes[-1]
        ys = []
        for direction in range(dirs):  # the second direction runs from the last position to the first
            at = layer * dirs + direction
            w_ih, w_hh = _tensor(params[per_layer * at]), _tensor(params[per_layer * at + 1])
            b_ih, b_hh = (_tensor(params[per_layer * at + 2]), _tensor(params[per_layer * at + 3])) if has_biases \
                else (None, None)
            gates_cod = Segment(((q,) if q is not None else ()) + (k,))
            suffix = "" if dirs == 1 else ("f", "r")[direction]
            gx = conv.apply(Box(LinearOp(Segment((feature,)), gates_cod, b_ih is not None), f"ih{layer}{suffix}"), [out])
            conv.emitted.tensors.append([w_ih] + ([b_ih] if b_ih is not None else []))
            if not states_in:
                states_in = [conv.value(h) for h in hxs]
            layer_axis = conv.segs[states_in[0]].axes[0]
            starts = []
            for v in states_in:
                picked = conv.apply(Box(IndexOp(layer_axis, size(at))), [v])
                starts.append(conv.view(picked, [a.name for a in batch] + [k.name],
                                        tuple(int(a.size) for a in batch) + (hidden,)))
            body, carry = _cell_of(conv, kind, q, k, batch, b_hh is not None)
            conv.emitted.tensors.append([w_hh] + ([b_hh] if b_hh is not None else []))
            pos = conv.segs[gx].names.index(time.name)
            label = kind.removeprefix("aten.").upper() + ("", "ʳ")[direction]
            scan = Box(ScanOp(body, time, 0, carry, (pos,), (pos,), reverse=direction == 1), label)
            outs = conv.emit(scan, starts + [gx], list(scan.cod))
            for j in range(carry):
                finals[j].append(outs[j])
            ys.append(outs[-1])
        if len(ys) == 1:
            out = ys[0]
        else:  # both directions' outputs side by side along the features (forward first), as torch lays them out
            assert both is not None
            before = Segment(conv.segs[ys[0]].axes[:-1])
            out = conv.emit(Box(ConcatOp((k, k), both, before, SCALAR)), ys, [Segment(before.axes + (both,))])[0]
    conv._picked[(id(node), 0)] = out
    for j, values in enumerate(finals):
        conv._picked[(id(node), j + 1)] = _stack(conv, values, conv.segs[states_in[0]].axes[0])


def _gates(conv: Converter, n_gates: int, taken: set[str]) -> Axis | None:
    """The gates' axis (none for one gate), named apart from the hidden features and the input's wires (a hidden size
    equal to the number of gates would otherwise share its name)."""
    if n_gates == 1:
        return None
    q = conv.namer.segment([conv.namer.fresh(n_gates)], (n_gates,)).axes[0]
    name = q.name
    while name in taken:
        name += "′"
    return q if name == q.name else Axis(name, q.size)


def _stack(conv: Converter, values: list[int], layer: Axis) -> int:
    """The final states of every layer along a new leading layer axis (``h_n``)."""
    taken = set(conv.segs[values[0]].names)
    name = "l"
    while name in taken:
        name += "′"
    layer = Axis(name, layer.size)
    one = layer.resized(1)
    rows = [conv.apply(Box(UnsqueezeOp(one, Segment((conv.segs[v].axes[0],)), 0)), [v]) for v in values]
    if len(rows) == 1:
        return rows[0]
    rest = Segment(conv.segs[rows[0]].axes[1:])
    return conv.emit(Box(ConcatOp((one,) * len(rows), layer, SCALAR, rest)), rows,
                     [Segment((layer,) + rest.axes)])[0]


@rule("aten.lstm_cell", "aten.gru_cell", "aten.rnn_tanh_cell", "aten.rnn_relu_cell")
def recurrent_cell(conv: Converter, node: Node) -> None:
    """``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``: one step of the layer's cell (the scan's body above), its input
    projection ``L^ih`` beside it; ``aten.lstm_cell(input, [h, c], w_ih, w_hh, b_ih, b_hh) -> (h', c')``."""
    from ncd.ir.diagram import Block
    from ncd.trace.convert import op_name

    kind = op_name(node.target)[0].removesuffix("_cell")
    args = list(node.args) + [None] * (6 - len(node.args))
    x, hx, w_ih_ref, w_hh_ref, b_ih_ref, b_hh_ref = args[:6]
    if not isinstance(x, Node) or not isinstance(x.value, torch.Tensor) or len(node.args) > 6 or node.kwargs:
        raise Decline("an input that is not a traced value, or arguments of another form")
    hxs = list(hx) if kind == "aten.lstm" else [hx]
    if not all(isinstance(h, Node) and isinstance(h.value, torch.Tensor) for h in hxs):
        raise Decline("a state that is not a traced value")
    w_ih, w_hh = _tensor(w_ih_ref), _tensor(w_hh_ref)
    if (b_ih_ref is None) != (b_hh_ref is None):
        raise Decline("one bias without the other")
    b_ih = _tensor(b_ih_ref) if b_ih_ref is not None else None
    b_hh = _tensor(b_hh_ref) if b_hh_ref is not None else None
    n_gates, hidden = GATES[kind], int(w_hh.shape[1])
    if w_ih.shape[0] != n_gates * hidden or w_hh.shape[0] != n_gates * hidden:
        raise Decline("weights of another shape than the cell's gates")
    xv = conv.value(x)
    seg = conv.segs[xv]
    batch = tuple(seg.axes[:-1])
    if len(batch) > 1:
        raise Decline("an input with more than one batch axis")
    k = conv.namer.segment([conv.namer.fresh(hidden)], (hidden,)).axes[0]
    q = _gates(conv, n_gates, {k.name, *seg.names})
    gates_cod = Segment(((q,) if q is not None else ()) + (k,))
    gx = conv.apply(Box(LinearOp(Segment((seg.axes[-1],)), gates_cod, b_ih is not None), "ih"), [xv])
    conv.emitted.tensors.append([w_ih] + ([b_ih] if b_ih is not None else []))
    states = [conv.view(conv.value(h), [a.name for a in batch] + [k.name], tuple(int(a.size) for a in batch) + (hidden,))
              for h in hxs]
    body, carry = _cell_of(conv, kind, q, k, batch, b_hh is not None)
    conv.emitted.tensors.append([w_hh] + ([b_hh] if b_hh is not None else []))
    cell = Block(body, kind.removeprefix("aten.").upper() + "Cell")
    outs = conv.emit(cell, states + [gx], list(cell.cod))
    if kind == "aten.lstm":
        conv._picked[(id(node), 0)], conv._picked[(id(node), 1)] = outs[0], outs[1]
    else:
        conv.bind(node, outs[0])
