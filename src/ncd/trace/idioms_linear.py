"""Conversion rules for learned linear maps and einsum wirings.

``linear`` (and ``view → addmm → view``, ``x @ W``, ``W @ x``) is a learned map **L** that keeps the leading axes and
names a new feature axis (the same name when the width is unchanged, else the role the model's config gives the width:
:func:`linear_out_name`); ``matmul``/``bmm`` of two values (or of a value and a constant) is an einsum wiring on named
axes (:func:`contract`: the second operand's wires are renamed where a name would otherwise wrongly join two axes).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.structure import AddOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, apart, rule
from ncd.trace.idioms_wires import _fused_input, _live, _shape, _tensor, _weight
from ncd.trace.naming import PRIME, noted
from ncd.trace.registry import op_name

__all__ = ["linear_out_name", "emit_linear", "linear", "addmm", "matmul", "relabel", "contract"]


# -- learned linear maps -------------------------------------------------------------------
def linear_out_name(conv: Converter, in_name: str, in_size: int, out_size: int, one_head: bool = False) -> str:
    """The output wire of a learned map: the input's name at the same size; else the role the model's config gives
    the size (its width ``m``, its feed-forward width ``f``, a router's experts ``e``; ``one_head``: head features
    ``k`` where the map's output is one head's, :func:`_one_head`); a fused projection (2 or 3 widths: keys and
    values, queries keys and values) no feed-forward name; else ``f`` for a wider output."""
    if in_size == out_size:
        return in_name.rstrip(PRIME)
    roles = conv.namer.config.get(out_size, set())
    if one_head and "k" in roles and not roles & {"m", "f", "e"}:
        return conv.namer.fresh(out_size, "k")
    for hint in ("m", "f", "e"):
        if hint in roles:
            return conv.namer.fresh(out_size, hint)
    if _fused_projection(conv.namer.config, out_size):
        return conv.namer.fresh(out_size)
    return conv.namer.fresh(out_size, "f" if out_size > in_size else None)


#: the operators splitting a wire into heads and head features (``view(b, t, 1, k)``, ``unflatten``, ``unsqueeze``)
_SPLITS = frozenset({"view", "reshape", "_unsafe_view", "unflatten", "unsqueeze"})


def _one_head(conv: Converter, node: Node, size: int) -> bool:
    """Whether a learned map's output of ``size`` is read as one head of ``size`` features: a reader splits a wire of
    size 1 off before it (multi-query attention's keys and values, ``k_proj(x).view(b, t, 1, k)``), so the features
    are the queries' head features ``k``, not a wire named by its size alone."""
    if not isinstance(node.value, torch.Tensor) or not node.value.dim() or int(node.value.shape[-1]) != size:
        return False
    for user in conv.consumers.get(id(node), ()):
        value = user.value
        if user.kind != "call" or not isinstance(value, torch.Tensor) or value.dim() != node.value.dim() + 1 \
                or tuple(value.shape[-2:]) != (1, size) or tuple(value.shape[:-2]) != tuple(node.value.shape[:-1]):
            continue
        if op_name(user.target)[0].rpartition(".")[2] in _SPLITS:
            return True
    return False


def _fused_projection(config: dict[int, set[str]], size: int) -> bool:
    """Whether ``size`` is that of fused projections: keys and values or queries, keys and values (``2m``, ``3m``), or
    queries and the keys and values of ``g`` key/value heads (``m + 2gk``; multi-query attention: ``g = 1``)."""
    widths = [w for w, r in config.items() if "m" in r]
    kv = [g * k for g in [1] + [g for g, r in config.items() if "g" in r] for k, r in config.items() if "k" in r]
    return any(size in (2 * w, 3 * w) for w in widths) or any(size == w + 2 * c for w in widths for c in kv)


def _generated(generated: dict[Any, str], name: str) -> bool:
    return name in generated.values()


def emit_linear(conv: Converter, node: Node, vid: int, weight: torch.Tensor, bias: torch.Tensor | None,
                at: int = -1) -> int:
    """``weight`` in torch layout (out, in), acting on the axis ``at`` of ``vid`` (default the last; ``W @ x`` acts on
    the second last), woven over the others."""
    seg = conv.segs[vid]
    if not seg.axes or seg.dtype != "float" or not -len(seg.axes) <= at < 0:
        raise Decline("no feature axis")
    last = seg.axes[at]
    size = int(weight.shape[0])
    out_name = linear_out_name(conv, last.name, int(last.size), size, at == -1 and _one_head(conv, node, size))
    if size == int(last.size) and last.role != "item" and "m" in conv.namer.config.get(size, ()) \
            and last.name.rstrip(PRIME) not in conv.namer.declared \
            and not noted(conv.namer, _generated, conv.namer.generated, last.name.rstrip(PRIME)):
        # a map onto the config's width from a wire the config does not name and the namer did not make (a window of
        # as many values as the width, PatchTSMixer's patcher on its patches): the width m, as from any other size
        out_name = conv.namer.fresh(size, "m")
    out_name = apart(out_name, set(seg.names) - {last.name})
    cod = conv.namer.segment([out_name], (int(weight.shape[0]),))
    path = conv.stack[-1][0] if conv.stack else ""
    label = path.rsplit(".", 1)[-1] or None
    box = Box(LinearOp(Segment((last,)), cod, bias is not None), label)
    vid_out = conv.apply(box, [vid])
    conv.emitted.tensors.append([weight] + ([bias] if bias is not None else []))
    return vid_out


@rule("aten.linear")
def linear(conv: Converter, node: Node) -> None:
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    weight = _weight(w)
    if not _tensor(x) or not x.value.is_floating_point() or weight is None or weight.dim() != 2:
        raise Decline("not a learned linear map")
    if b is not None and _weight(b) is None:  # a bias computed from parameters (WavLM's chunk of cat(q, k, v biases))
        if not (_live(b) and isinstance(b.value, torch.Tensor) and tuple(b.value.shape) == (int(weight.shape[0]),)
                and b.value.dtype == node.value.dtype):
            raise Decline("not a learned linear map")
        out = emit_linear(conv, node, conv.value(x), weight, None)
        bias = conv.view(conv.value(b), [conv.names(out)[-1]], (int(weight.shape[0]),))
        conv.bind(node, conv.apply(Box(AddOp(2)), [out, bias]))
        return
    conv.bind(node, emit_linear(conv, node, conv.value(x), weight, None if b is None else _weight(b)))


@rule("aten.addmm")
def addmm(conv: Converter, node: Node) -> None:
    bias, x, w = node.args[:3]
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        raise Decline("scaled addmm")
    weight, b = _weight(w), _weight(bias)
    if weight is None or b is None or b.dim() != 1 or not _live(x):
        raise Decline("not a learned linear map")
    _linear_2d(conv, node, x, weight.t(), b)


@rule("aten.mm", "aten.matmul", "aten.bmm")
def matmul(conv: Converter, node: Node) -> None:
    """``x @ W`` and ``W @ x`` with ``W`` a parameter (or computed from parameters only) are linear maps; with ``W`` a
    buffer or a tensor the model makes (a fixed projection), the einsum with that constant (a linear map would make it a
    parameter of the lowered module)."""
    a, b = node.args[:2]
    weight = _weight(b) if isinstance(b, Node) and conv.learned(b) else None
    if _live(a) and weight is not None and weight.dim() == 2:
        _linear_2d(conv, node, a, weight.t(), None)
        return
    if weight is not None and weight.dim() == 2 and _computed_constant(conv, a, node):
        # a constant the forward makes through a learned matrix (SAM's grid of coordinates ``@`` its positional
        # embedding): the learned map of that constant (the constant's value is what the model computed)
        conv.bind(node, emit_linear(conv, node, conv.value(a), weight.t(), None))
        return
    first = _weight(a) if isinstance(a, Node) and conv.learned(a) else None
    if _live(b) and first is not None and first.dim() == 2 and "bmm" not in str(node.target):
        # ``W @ x``: a linear map of x's second last axis (its last when x is a vector), woven over the others
        conv.bind(node, emit_linear(conv, node, conv.value(b), first, None, -2 if len(_shape(b)) >= 2 else -1))
        return
    if (_live(a) or _live(b)) and _tensor(a) and _tensor(b):  # two values, or one and a constant (a zero state)
        contract(conv, node, a, b)
        return
    raise Decline("not a learned map or a wiring of two values")


def _computed_constant(conv: Converter, a: Any, node: Node) -> bool:
    """Whether ``a`` is a constant float tensor of the product's dtype with values (not learned, not on ``meta``)."""
    return (isinstance(a, Node) and not a.live and _tensor(a) and not conv.learned(a) and a.value.dim() >= 1
            and a.value.is_floating_point() and a.value.dtype == node.value.dtype and a.value.device.type != "meta")


def _linear_2d(conv: Converter, node: Node, x: Node, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    inner = _fused_input(conv, node)
    consumers = conv.consumers.get(id(node), [])
    if inner is not None and len(consumers) == 1 and "view" in str(consumers[0].target) and \
            tuple(consumers[0].value.shape) == tuple(inner.value.shape[:-1]) + (weight.shape[0],):
        out = emit_linear(conv, node, conv.value(inner), weight, bias)
        conv.bind(x, conv.value(inner))
        conv.bind(node, out)
        conv.bind(consumers[0], out)
        return
    conv.bind(node, emit_linear(conv, node, conv.value(x), weight, bias))


# -- einsum wirings -----------------------------------------------------------------------
def relabel(conv: Converter, vid: int, names: list[str]) -> int:
    seg = conv.segs[vid]
    return conv.view(vid, names, tuple(int(a.size) for a in seg.axes))


def contract(conv: Converter, node: Node, a: Node, b: Node) -> None:
    """``a @ b`` with broadcast batch axes, as an einsum on named wires.

    A batch axis of size 1 broadcast against a longer one (or missing on one side) is dropped from that operand (a
    view): the einsum weaves the other operand's axis through to the output, as ``matmul`` broadcasts."""
    va, vb = conv.value(a), conv.value(b)
    sa, sb = tuple(_shape(a)), tuple(_shape(b))
    if len(sa) < 2 or len(sb) < 2:
        raise Decline("matmul with vectors")
    try:
        batch = tuple(torch.broadcast_shapes(sa[:-2], sb[:-2]))  # type: ignore[no-untyped-call]
    except RuntimeError:
        raise Decline("matmul batch shapes do not broadcast") from None
    if tuple(_shape(node)) != batch + (sa[-2], sb[-1]):
        raise Decline("matmul result shape")
    na, nb = conv.names(va), conv.names(vb)
    pa, pb = len(batch) - len(sa[:-2]), len(batch) - len(sb[:-2])  # where each operand's batch axes start
    keep_a = [k for k in range(len(sa) - 2) if sa[k] == batch[pa + k]]
    keep_b = [k for k in range(len(sb) - 2) if sb[k] == batch[pb + k]]
    if len(keep_a) < len(sa) - 2:
        kept = keep_a + [len(sa) - 2, len(sa) - 1]
        va = conv.view(va, [na[k] for k in kept], tuple(sa[k] for k in kept))
    names_a = {pa + k: na[k] for k in keep_a}
    taken = set(conv.names(va))
    want_b = []
    for k in keep_b:
        name = names_a.get(pb + k)
        if name is None:
            name = apart(nb[k], taken)
            taken.add(name)
        want_b.append(name)
    j = na[-1]
    k_name = apart(nb[-1].rstrip(PRIME) if nb[-1] in taken else nb[-1], taken)
    want_b += [j, k_name]
    vb = conv.view(vb, want_b, tuple(sb[k] for k in keep_b) + sb[-2:])
    seg_a, seg_b = conv.segs[va], conv.segs[vb]
    by_name = {x.name: x for x in seg_a.axes + seg_b.axes}
    out_names = [names_a.get(p) or want_b[keep_b.index(p - pb)] for p in range(len(batch))]
    out = Segment(tuple(by_name[n] for n in out_names) + (seg_a.axes[-2], seg_b.axes[-1]))
    box = Box(EinsumOp(Type((seg_a, seg_b)), out))
    (vid,) = conv.emit(box, [va, vb], [out])
    conv.bind(node, vid)
