"""Conversion rules: ATen operators drawn in the paper's vocabulary, with their axis names.

* aliases (``dropout`` in eval, ``clone``, ``to`` the same dtype, ...) are wires;
* ``view``/``reshape``/``(un)squeeze``/``flatten`` regroup wires: a split names its parts
  ``h`` and ``k`` (heads, head features), a merge of a split gives the old name back;
* ``permute``/``transpose`` are crossings; ``linear`` (and ``view → addmm → view``,
  ``x @ W``) is a learned map **L** that keeps the leading axes and names a new feature
  axis (the same name when the width is unchanged);
* ``matmul``/``bmm``/``einsum`` are einsum wirings on named axes (the second operand's
  wires are renamed where a name would otherwise wrongly join two axes);
* ``softmax`` lands on the named axis; ``scaled_dot_product_attention`` is drawn as the
  paper's attention (scores einsum, scale, mask, softmax on the key axis, value einsum),
  grouped-query attention as an inner broadcast; elementwise maps, residual additions,
  products and sums keep their names.

A rule raises :class:`~ncd.trace.convert.Decline` to leave a call to the opaque box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sympy
import torch

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Primitive
from ncd.ir.size import symbol
from ncd.prims.elementwise import ElementwiseOp, MultiplyOp, ScaleOp
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp, TransposeOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, apart, rule
from ncd.trace.naming import PRIME, unique
from ncd.trace.shapes import factor_of

__all__ = ["load_rules", "prepare"]


def load_rules() -> None:
    """Rules register on import (this module, :mod:`ncd.trace.indexing` and :mod:`ncd.trace.scalars`)."""
    import ncd.trace.attention  # noqa: F401
    import ncd.trace.boxes  # noqa: F401  (newprims: roll, pad, cumsum, ...; its siblings below)
    import ncd.trace.boxes_complex  # noqa: F401  (imports boxes first: wraps its division rule)
    import ncd.trace.boxes_einsum  # noqa: F401
    import ncd.trace.boxes_indexing  # noqa: F401
    import ncd.trace.boxes_integer  # noqa: F401  (integer ∘ integer tensors: imports scalars, hooks in front)
    import ncd.trace.boxes_losses  # noqa: F401
    import ncd.trace.boxes_products  # noqa: F401  (baddbmm)
    import ncd.trace.boxes_ranking  # noqa: F401
    import ncd.trace.boxes_selection  # noqa: F401
    import ncd.trace.boxes_windows  # noqa: F401
    import ncd.trace.indexing  # noqa: F401
    import ncd.trace.recurrent  # noqa: F401  (LSTM, GRU, RNN as scans: recur)
    import ncd.trace.scalars  # noqa: F401
    import ncd.trace.triangular  # noqa: F401  (triangular solves and forward substitution: recur)


def prepare(conv: Converter) -> dict[int, Any]:
    """Pre-passes before the walk: idioms spanning several recorded operations mark the ones they replace as skipped;
    returns, for the node that stands for each of them, the function that emits it (called by the walk in its place)."""
    from ncd.trace.attention import prepare as attention
    from ncd.trace.moe import prepare as experts

    attention(conv)
    return experts(conv)


def _tensor(value: Any) -> bool:
    return isinstance(value, Node) and isinstance(value.value, torch.Tensor)


def _live(value: Any) -> bool:
    return isinstance(value, Node) and value.live


def _shape(node: Node) -> tuple[int, ...]:
    return tuple(int(s) for s in node.value.shape)


# -- wires that do not change the value ---------------------------------------------------
@rule("aten.dropout", "aten.feature_dropout", "aten.alpha_dropout")
def dropout(conv: Converter, node: Node) -> None:
    if len(node.args) > 2 and node.args[2]:
        raise Decline("dropout in training mode")
    conv.bind(node, conv.value(node.args[0]))


@rule("aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.to", "aten._to_copy",
      "aten.type_as")
def alias(conv: Converter, node: Node) -> None:
    source = node.args[0]
    if _tensor(source) and source.value.dtype != node.value.dtype:
        from ncd.trace.indexing import cast

        if cast(conv, node):
            return
    if not _tensor(source) or source.value.dtype != node.value.dtype or tuple(source.value.shape) != tuple(node.value.shape):
        raise Decline("changes dtype or shape")
    conv.bind(node, conv.value(source))


# -- regrouping wires ---------------------------------------------------------------------
def _is_item(conv: Converter, name: str) -> bool:
    """Whether wires of this name are positions (tokens, rows, columns: the namer's item role)."""
    return conv.namer.roles.get(name.rstrip(PRIME)) == "item"


def regroup(conv: Converter, names: list[str], shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> list[str]:
    """Output names of a reshape: kept where a wire is unchanged, split into heads ``h k``, merged back."""
    out: list[str] = []
    i = j = 0
    split_names = conv.__dict__.setdefault("_splits", {})
    merged: dict[str, list[tuple[str, int]]] = conv.__dict__.setdefault("_merges", {})  # name -> (wire, size) merged
    while j < len(shape_out) or i < len(shape_in):
        if j < len(shape_out) and shape_out[j] == 1 and (i >= len(shape_in) or shape_in[i] != 1):
            out.append("1")
            j += 1
            continue
        if i < len(shape_in) and shape_in[i] == 1 and (j >= len(shape_out) or shape_out[j] != 1):
            i += 1
            continue
        if i >= len(shape_in) or j >= len(shape_out):
            raise Decline("reshape does not line up")
        a, b = [i], [j]
        pa, pb = shape_in[i], shape_out[j]
        while pa != pb:
            if pa < pb:
                i += 1
                if i >= len(shape_in):
                    raise Decline("reshape does not line up")
                a.append(i)
                pa *= shape_in[i]
            else:
                j += 1
                if j >= len(shape_out):
                    raise Decline("reshape does not line up")
                b.append(j)
                pb *= shape_out[j]
        i, j = i + 1, j + 1
        group_in = [names[k] for k in a]
        sizes_in = [shape_in[k] for k in a]
        sizes_out = [shape_out[k] for k in b]
        items = [_is_item(conv, n) for n in group_in]
        if len(a) == 1 and len(b) == 1:
            out.append(group_in[0])
        elif len(a) == 1 and merged.get(group_in[0]) and [s for _, s in merged[group_in[0]]] == sizes_out:
            out.extend(n for n, _ in merged[group_in[0]])  # a merge undone (tokens flattened, then unflattened)
        elif len(a) == 1:
            parent = group_in[0].rstrip(PRIME)
            if items[0] and len(b) == 2:  # positions cut into windows: which window (s), where in it (w)
                parts = [conv.namer.fresh(s, hint, "item") for s, hint in zip(sizes_out, ("s", "w"))]
            else:  # into heads and their features, unless the config gives neither part a heads' size
                heads = not conv.namer.config or {"h", "g"} & conv.namer.config.get(sizes_out[0], set()) \
                    or "k" in conv.namer.config.get(sizes_out[-1], set())
                hints = ["h", "k"] if len(b) == 2 and heads else [None] * len(b)
                parts = [conv.namer.fresh(s, hint) for s, hint in zip(sizes_out, hints)]
            parts = unique(parts)
            parents = split_names.setdefault(tuple(n.rstrip(PRIME) for n in parts), [])
            if parent not in parents:
                parents.append(parent)
            out.extend(parts)
        elif len(b) == 1:
            key = tuple(n.rstrip(PRIME) for n in group_in)
            # positions merged (an image's rows and columns flattened into tokens) are positions again
            parents = [p for p in split_names.get(key, ()) if p not in {n.rstrip(PRIME) for n in out}]
            if parents:
                name = parents[0]
            else:  # the width the config names (heads merged back: m), else a name of the merge's own
                letters = [] if all(items) else [x for x in ("m", "f") if x in conv.namer.config.get(sizes_out[0], set())]
                of = tuple(n.rstrip(PRIME) for n in group_in) if conv.namer.config and not letters else ()
                name = conv.namer.fresh(sizes_out[0], letters[0] if letters else None,
                                        "item" if all(items) else "feature", of)
            merged.setdefault(name, list(zip(group_in, sizes_in)))
            out.append(name)
        else:
            out.extend(conv.namer.fresh(s) for s in sizes_out)
    return out


@rule("aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze", "aten.squeeze", "aten.flatten", "aten.unflatten",
      "aten.view_as", "aten.reshape_as")
def reshape(conv: Converter, node: Node) -> None:
    source = node.args[0]
    if not _live(source):
        raise Decline("not live")
    vid = conv.value(source)
    consumers = conv.consumers.get(id(node), [])
    if len(consumers) == 1 and _fused_input(conv, consumers[0]) is source:
        conv.bind(node, vid)  # flattening for a matrix product that is drawn as a linear map
        return
    shape_in = tuple(int(a.size) for a in conv.segs[vid].axes)
    shape_out = _shape(node)
    names = regroup(conv, conv.names(vid), shape_in, shape_out)
    conv.bind(node, conv.view(vid, names, shape_out))


@rule("aten.permute", "aten.transpose", "aten.t", "aten.swapaxes", "aten.movedim", "aten.numpy_T")
def permute(conv: Converter, node: Node) -> None:
    source = node.args[0]
    vid = conv.value(source)
    n = len(conv.segs[vid])
    name = node.target.name()
    if "permute" in name:
        perm = [d % n for d in node.args[1]]
    elif name.endswith("::t") or "numpy_T" in name:
        perm = list(reversed(range(n)))
    elif "movedim" in name:
        src, dst = node.args[1] % n, node.args[2] % n
        rest = [d for d in range(n) if d != src]
        perm = rest[:dst] + [src] + rest[dst:]
    else:
        a, b = node.args[1] % n, node.args[2] % n
        perm = list(range(n))
        perm[a], perm[b] = perm[b], perm[a]
    if perm == list(range(n)):
        conv.bind(node, vid)
        return
    seg = conv.segs[vid]
    box = Box(TransposeOp(seg, tuple(perm)))
    (out,) = conv.emit(box, [vid], list(box.cod))
    conv.bind(node, out)


# -- learned linear maps -------------------------------------------------------------------
def linear_out_name(conv: Converter, in_name: str, in_size: int, out_size: int) -> str:
    """The output wire of a learned map: the input's name at the same size; else the role the model's config gives
    the size (its width ``m``, its feed-forward width ``f``, a router's experts ``e``); a fused projection (2 or 3
    widths: keys and values, queries keys and values) no feed-forward name; else ``f`` for a wider output."""
    if in_size == out_size:
        return in_name.rstrip(PRIME)
    roles = conv.namer.config.get(out_size, set())
    for hint in ("m", "f", "e"):
        if hint in roles:
            return conv.namer.fresh(out_size, hint)
    if _fused_projection(conv.namer.config, out_size):
        return conv.namer.fresh(out_size)
    return conv.namer.fresh(out_size, "f" if out_size > in_size else None)


def _fused_projection(config: dict[int, set[str]], size: int) -> bool:
    """Whether ``size`` is that of fused projections: keys and values or queries, keys and values (``2m``, ``3m``), or
    queries and the keys and values of ``g`` key/value heads (``m + 2gk``; multi-query attention: ``g = 1``)."""
    widths = [w for w, r in config.items() if "m" in r]
    kv = [g * k for g in [1] + [g for g, r in config.items() if "g" in r] for k, r in config.items() if "k" in r]
    return any(size in (2 * w, 3 * w) for w in widths) or any(size == w + 2 * c for w in widths for c in kv)


def emit_linear(conv: Converter, node: Node, vid: int, weight: torch.Tensor, bias: torch.Tensor | None,
                at: int = -1) -> int:
    """``weight`` in torch layout (out, in), acting on the axis ``at`` of ``vid`` (default the last; ``W @ x`` acts on
    the second last), woven over the others."""
    seg = conv.segs[vid]
    if not seg.axes or seg.dtype != "float" or not -len(seg.axes) <= at < 0:
        raise Decline("no feature axis")
    last = seg.axes[at]
    out_name = linear_out_name(conv, last.name, int(last.size), int(weight.shape[0]))
    out_name = apart(out_name, set(seg.names) - {last.name})
    cod = conv.namer.segment([out_name], (int(weight.shape[0]),))
    path = conv.stack[-1][0] if conv.stack else ""
    label = path.rsplit(".", 1)[-1] or None
    box = Box(LinearOp(Segment((last,)), cod, bias is not None), label)
    vid_out = conv.apply(box, [vid])
    conv.emitted.tensors.append([weight] + ([bias] if bias is not None else []))
    return vid_out


def _weight(value: Any) -> torch.Tensor | None:
    if isinstance(value, Node) and not value.live and isinstance(value.value, torch.Tensor) and value.value.is_floating_point():
        return value.value
    return None


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


def _fused_input(conv: Converter, node: Node) -> Any:
    """For ``view(x, [-1, m])`` feeding only this node, the tensor ``x`` (leading axes kept)."""
    name = str(node.target)
    if "addmm" in name:
        source, weight = node.args[1], node.args[2]
    elif "aten.mm" in name or "matmul" in name:
        source, weight = node.args[0], node.args[1]
        if not (isinstance(weight, Node) and conv.learned(weight)):  # a constant's product is an einsum (matmul)
            return None
    else:
        return None
    consumers = conv.consumers.get(id(node), [])
    if _weight(weight) is None or len(consumers) != 1 or "view" not in str(consumers[0].target):
        return None
    if (isinstance(source, Node) and source.kind == "call" and "view" in str(source.target)
            and len(conv.consumers.get(id(source), [])) == 1 and _live(source.args[0])
            and tuple(source.args[0].value.shape)[-1:] == tuple(source.value.shape)[-1:]):
        return source.args[0]
    return None


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
    first = _weight(a) if isinstance(a, Node) and conv.learned(a) else None
    if _live(b) and first is not None and first.dim() == 2 and "bmm" not in str(node.target):
        # ``W @ x``: a linear map of x's second last axis (its last when x is a vector), woven over the others
        conv.bind(node, emit_linear(conv, node, conv.value(b), first, None, -2 if len(_shape(b)) >= 2 else -1))
        return
    if (_live(a) or _live(b)) and _tensor(a) and _tensor(b):  # two values, or one and a constant (a zero state)
        contract(conv, node, a, b)
        return
    raise Decline("not a learned map or a wiring of two values")


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


# -- softmax, elementwise, arithmetic ------------------------------------------------------
@rule("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax", "aten.special_softmax")
def softmax(conv: Converter, node: Node) -> None:
    x = node.args[0]
    vid = conv.value(x)
    seg = conv.segs[vid]
    if not seg.axes or seg.dtype != "float" or node.value.dtype != x.value.dtype:
        raise Decline("not a float softmax")
    dim = node.args[1] % len(seg.axes)
    box = Box(SoftmaxOp(seg.axes[dim], "log" in node.target.name()))
    conv.bind(node, conv.apply(box, [vid]))


UNARY = {"relu": "relu", "silu": "silu", "tanh": "tanh", "sigmoid": "sigmoid", "exp": "exp", "log": "log",
         "sqrt": "sqrt", "neg": "neg", "abs": "abs", "gelu": "gelu"}


@rule(*(f"aten.{k}" for k in UNARY))
def unary(conv: Converter, node: Node) -> None:
    x = node.args[0]
    if not _live(x) or not x.value.is_floating_point():
        raise Decline("not float")
    fn = UNARY[node.target.name().split("::")[1].split(".")[0]]
    if fn == "gelu" and node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none") == "tanh":
        fn = "gelu_tanh"
    conv.bind(node, conv.apply(Box(ElementwiseOp(fn)), [conv.value(x)]))


@rule("aten.pow")
def power(conv: Converter, node: Node) -> None:
    x, e = node.args[:2]
    if not _live(x) or e not in (2, 2.0, 0.5):
        raise Decline("other power")
    conv.bind(node, conv.apply(Box(ElementwiseOp("square" if e in (2, 2.0) else "sqrt")), [conv.value(x)]))


#: Names whose sizes :func:`ncd.trace.symbolic.symbolize` makes symbols (a factor read off them would follow them).
SYMBOLIZED = ("b", "t")


def size_constant(conv: Converter, name: str) -> sympy.Symbol | None:
    """The symbol of a wire name (``k`` for the head dimension), its traced size recorded among the diagram's
    defaults; None for a size 1 or a name that is no identifier."""
    base = name.rstrip(PRIME)
    size = conv.namer.size_of.get(base)
    if size is None or size <= 1 or not base.isidentifier():
        return None
    conv.__dict__.setdefault("_constants", {})[base] = size
    return symbol(base)


def count_of(conv: Converter, reduced: Sequence[Axis]) -> sympy.Expr:
    """How many entries a reduction over the wires ``reduced`` reads: the product of their sizes' symbols where the
    names hold them (a mean over the batch is ``1/b``, so it follows the batch when the diagram is lowered at another),
    else the number."""
    exact = all(not a.size.free_symbols and int(a.size) > 1 and a.name.rstrip(PRIME).isidentifier()
                and conv.namer.size_of.get(a.name.rstrip(PRIME)) == int(a.size) for a in reduced)
    if exact:
        return sympy.Mul(*[size_constant(conv, a.name) for a in reduced])
    return sympy.Integer(math.prod(int(a.size) for a in reduced))


def _factor(conv: Converter, factor: float, like: Sequence[str]) -> sympy.Expr:
    """``factor`` as a size of one of the wires ``like`` when it is one (``k**-0.5``, ``1/m``, ``m**0.5``), else the
    number: an attention scale reads as the head dimension's, not as 16 digits.  A factor the model computed in
    Python from the batch or sequence size (``x / x.shape[0]``) is that expression of their symbols."""
    sized = factor_of(conv, factor)
    if sized is not None:
        return sized
    for name in like:
        base = name.rstrip(PRIME)
        n = conv.namer.size_of.get(base)
        if n is None or n <= 1 or base in SYMBOLIZED:
            continue
        for power in (sympy.Rational(-1, 2), sympy.Integer(-1), sympy.Rational(1, 2)):
            if math.isclose(factor, n ** float(power), rel_tol=1e-12, abs_tol=0.0):
                s = size_constant(conv, base)
                if s is not None:
                    return s ** power
    return sympy.Float(factor) if not float(factor).is_integer() else sympy.Integer(int(factor))


def written(factor: float) -> bool:
    """Whether a factor is a number as a user writes one (``2``, ``0.5``, ``0.125``: six significant digits or fewer),
    not one computed from a size (``8**-0.5`` is 0.35355339...).  A written number is drawn as itself: ``x * 2`` on a
    wire of width 4 is not ``m**0.5``, ``x * 0.5`` on a width 2 is not ``1/n``."""
    return float(f"{factor:.6g}") == factor


def _scale(conv: Converter, vid: int, factor: float | sympy.Expr, like: Sequence[str] = ()) -> int:
    """``vid`` times ``factor`` (a number, read as a size of the wires ``like`` where it is one, or an expression)."""
    if factor == 1:
        return vid
    if not isinstance(factor, sympy.Expr) and not math.isfinite(factor):
        raise Decline("a factor that is not finite (Scale refuses inf and nan)")
    expr = factor if isinstance(factor, sympy.Expr) else _factor(conv, float(factor), like)
    return conv.apply(Box(ScaleOp(expr)), [vid])


def operand(conv: Converter, value: Any, out_names: list[str], out_shape: tuple[int, ...]) -> int:
    """An operand of a broadcasting op, with wires named like the output's (size-1 wires dropped)."""
    tensor = value.value if isinstance(value, Node) else torch.as_tensor(value)
    shape = tuple(int(s) for s in tensor.shape)
    tail = out_names[len(out_names) - len(shape):] if shape else []
    out_tail = out_shape[len(out_shape) - len(shape):] if shape else ()
    keep = [not (s == 1 and o != 1) for s, o in zip(shape, out_tail)]  # drop only the wires that broadcast
    names = [n for n, k in zip(tail, keep) if k]
    kept = tuple(s for s, k in zip(shape, keep) if k)
    if isinstance(value, Node) and value.live:
        vid = conv.value(value)
        return conv.view(vid, names, kept)
    squeezed = Node("operand", "constant", value=tensor.reshape(kept)) if not isinstance(value, Node) else value
    if isinstance(value, Node):
        squeezed = Node(value.name, value.kind, value.target, value.args, value.kwargs, tensor.reshape(kept),
                        value.stack, value.source, value.live)
        if conv.learned(value):
            squeezed.kind = "parameter"
        elif value.kind == "call":
            squeezed.kind = "call"
    return conv.value(squeezed, names)


def out_names(conv: Converter, node: Node, operands: list[Any]) -> list[str]:
    shape = _shape(node)
    names: list[str | None] = [None] * len(shape)
    for value in operands:
        if not _live(value):
            continue
        own = conv.names(conv.value(value))
        vshape = _shape(value)
        for k in range(1, len(vshape) + 1):
            if vshape[-k] == shape[-k] and names[-k] is None and shape[-k] != 1:
                names[-k] = own[-k]
    done = [n if n is not None else ("1" if s == 1 else conv.namer.fresh(s)) for n, s in zip(names, shape)]
    return unique(done)


@rule("aten.add", "aten.sub", "aten.mul", "aten.div", "aten.rsub")
def arithmetic(conv: Converter, node: Node) -> None:
    name = node.target.name().split("::")[1].split(".")[0]
    a, b = node.args[:2]
    alpha = node.kwargs.get("alpha", 1)
    if node.kwargs.get("rounding_mode") is not None or not node.value.is_floating_point() or name == "rsub":
        raise Decline("not float arithmetic")
    if any(_tensor(v) and v.value.dtype != node.value.dtype for v in (a, b)):
        raise Decline("mixed dtypes")
    scalar_b = not _tensor(b)
    if _live(a) and scalar_b and name in ("mul", "div"):
        factor = float(b) if name == "mul" else 1.0 / float(b)
        vid = conv.value(a)
        if tuple(int(x.size) for x in conv.segs[vid].axes) != _shape(node):
            raise Decline("broadcast")
        conv.bind(node, _scale(conv, vid, factor, conv.names(vid) if not written(factor) else ()))
        return
    if name == "div":
        raise Decline("division by a tensor")
    names = out_names(conv, node, [a, b])
    shape = _shape(node)
    va = operand(conv, a, names, shape)
    vb = operand(conv, b, names, shape)
    if name == "sub" or alpha != 1:
        vb = _scale(conv, vb, (-1.0 if name == "sub" else 1.0) * float(alpha))
    bind_product(conv, node, AddOp(2) if name in ("add", "sub") else MultiplyOp(2), va, vb, names)


def bind_product(conv: Converter, node: Node, prim: Primitive, va: int, vb: int, names: list[str],
                 *, commutes: bool = True) -> None:
    """Bind ``node`` to ``prim`` applied to the values ``va``, ``vb`` (an operand with every wire first when
    ``prim`` commutes, so the result keeps its order); declines when the wires come out other than ``names``."""
    if commutes and len(conv.segs[vb].axes) > len(conv.segs[va].axes):
        va, vb = vb, va
    conv.bind(node, cross_back(conv, conv.apply(Box(prim), [va, vb]), names))


def cross_back(conv: Converter, vid: int, names: list[str]) -> int:
    """``vid`` with its wires in the order ``names``: a box woven over wires that neither operand has all of gives
    them in weaving order (``b u j d`` + ``j uʹ d`` -> ``b u j d uʹ``); a transpose crosses them back.  Declines when the
    wires are not those of ``names``."""
    got = list(conv.segs[vid].names)
    if got != names and sorted(got) == sorted(names):
        seg = conv.segs[vid]
        perm = tuple(got.index(n) for n in names)
        (vid,) = conv.emit(Box(TransposeOp(seg, perm)), [vid], [seg.with_axes(seg.axes[k] for k in perm)])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    return vid


@rule("aten.mean", "aten.sum")
def reduce(conv: Converter, node: Node) -> None:
    x = node.args[0]
    if not _live(x) or not x.value.is_floating_point() or node.kwargs.get("dtype") not in (None, x.value.dtype) \
            or len(node.args) == 2 and not isinstance(node.args[1], (int, list, tuple)):  # x.sum(torch.float64)
        raise Decline("dtype")
    vid = conv.value(x)
    seg = conv.segs[vid]
    given = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = list(range(len(seg.axes))) if given is None or given == [] or given == () else \
        given if isinstance(given, (list, tuple)) else [given]  # x.mean(), x.sum(dim=[]): every wire
    dims = sorted({d % len(seg.axes) for d in dims})
    keep = len(node.args) > 2 and node.args[2]
    out = Segment(tuple(a for k, a in enumerate(seg.axes) if k not in dims))
    box = Box(EinsumOp(Type((seg,)), out))
    (vid2,) = conv.emit(box, [vid], [out])
    if "mean" in node.target.name():  # 1 over the reduced wires' sizes: their symbols where the names hold them
        vid2 = _scale(conv, vid2, 1 / count_of(conv, [seg.axes[d] for d in dims]))
    if keep:
        names = [("1" if k in dims else a.name) for k, a in enumerate(seg.axes)]
        vid2 = conv.view(vid2, names, _shape(node))
    conv.bind(node, vid2)


# -- embeddings, normalisation, convolution -------------------------------------------------
@rule("aten.embedding")
def embedding(conv: Converter, node: Node) -> None:
    from ncd.prims.embedding import EmbeddingOp

    weight, ids = node.args[0], node.args[1]
    table = _weight(weight)
    if table is None or table.dim() != 2 or not _tensor(ids) or ids.value.is_floating_point():
        raise Decline("not a learned table")  # ids may be constant: a table read at fixed rows (BERT's token types)
    vid = conv.value(ids)
    seg = conv.segs[vid]
    if seg.dtype == "index" and seg.range is not None and not seg.range.free_symbols and int(seg.range) != table.shape[0]:
        from ncd.prims.opaque import ViewOp  # the model takes only positions below the table's rows: read them as rows

        wider = Segment(seg.axes, "index", sympy.Integer(int(table.shape[0])))
        (vid,) = conv.emit(Box(ViewOp(seg, wider)), [vid], [wider])
        seg = wider
    if seg.dtype != "index" or seg.range is None or int(seg.range) != table.shape[0]:
        raise Decline("indices without the vocabulary as range")
    dim = conv.namer.segment([conv.namer.fresh(int(table.shape[1]), _embedding_role(conv, int(table.shape[1])))],
                             (int(table.shape[1]),))
    label = (conv.stack[-1][0].rsplit(".", 1)[-1] or None) if conv.stack else None
    out = conv.apply(Box(EmbeddingOp(seg.range, dim), label), [vid])
    conv.emitted.tensors.append([table])
    conv.bind(node, out)


def _embedding_role(conv: Converter, width: int) -> str:
    """The role of an embedding's rows: the width ``m``, unless the config gives their size one other role a table
    holds one entry per (T5's relative-position bias: one per head ``h``)."""
    from ncd.trace.convert import PARAMETER_ROLES

    roles = conv.namer.config.get(width, set())
    letters = roles & PARAMETER_ROLES
    return next(iter(letters)) if len(letters) == 1 and "m" not in roles else "m"


@rule("aten.layer_norm")
def layer_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import LayerNormOp

    x, shape = node.args[0], node.args[1]
    extra = list(node.args[2:]) + [None] * 3
    weight, bias, eps = extra[0], extra[1], extra[2] if extra[2] is not None else 1e-5
    w, b = _weight(weight), _weight(bias)
    if not _live(x) or (weight is not None and w is None) or (bias is not None and b is None) or (w is None and b is not None):
        raise Decline("normalisation with computed parameters")
    vid = conv.value(x)
    seg = conv.segs[vid]
    axes = Segment(seg.axes[len(seg.axes) - len(shape):])
    box = Box(LayerNormOp(axes, float(eps), w is not None, b is not None))
    conv.bind(node, conv.apply(box, [vid]))
    tensors = [t for t in (w, b) if t is not None]
    if tensors:
        conv.emitted.tensors.append(tensors)


@rule("aten.rms_norm")
def rms_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import RMSNormOp

    x, shape = node.args[0], node.args[1]
    extra = list(node.args[2:]) + [None] * 2
    w = _weight(extra[0])
    eps = extra[1]
    if not _live(x) or (extra[0] is not None and w is None) or eps is None:
        raise Decline("rms norm without explicit eps")
    vid = conv.value(x)
    seg = conv.segs[vid]
    box = Box(RMSNormOp(Segment(seg.axes[len(seg.axes) - len(shape):]), float(eps), w is not None))
    conv.bind(node, conv.apply(box, [vid]))
    if w is not None:
        conv.emitted.tensors.append([w])


@rule("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d", "aten.conv_transpose2d", "aten.conv_transpose3d")
def convolution(conv: Converter, node: Node) -> None:
    from ncd.prims.convolution import ConvOp, ConvTransposeOp

    transposed = "conv_transpose" in str(node.target)
    x, weight = node.args[:2]
    extra = list(node.args[2:]) + [None] * 6
    w, b = _weight(weight), _weight(extra[0])
    if not transposed and _live(x) and _live(weight) and _tensor(weight) and not isinstance(extra[2], str):
        from ncd.trace.boxes_windows import computed_weight_convolution

        n = weight.value.dim() - 2
        stride, padding, dilation = (_ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 1))
        computed_weight_convolution(conv, node, stride, padding, dilation, int(extra[4] or 1))
        return
    if not _live(x) or w is None or (extra[0] is not None and b is None) or isinstance(extra[2], str):
        raise Decline("convolution with computed weights or string padding")
    n = w.dim() - 2
    if transposed:  # conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation)
        stride, padding, output_padding = _ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 0)
        groups, dilation = int(extra[4] or 1), _ints(extra[5], n, 1)
    else:  # conv(x, w, b, stride, padding, dilation, groups)
        stride, padding, dilation = (_ints(extra[1], n, 1), _ints(extra[2], n, 0), _ints(extra[3], n, 1))
        groups = int(extra[4] or 1)
    vid = conv.value(x)
    seg = conv.segs[vid]
    if len(seg.axes) < n + 1:
        raise Decline("unbatched convolution")
    dom = Segment(seg.axes[len(seg.axes) - n - 1:])
    out_shape = _shape(node)[-n - 1:]
    names = [linear_out_name(conv, dom.axes[0].name, int(dom.axes[0].size), out_shape[0])]
    names += [a.name for a in dom.axes[1:]]  # output positions keep the spatial wires' names
    lead = set(seg.names[: len(seg.axes) - n - 1])
    names = [nm + PRIME if nm in lead else nm for nm in names]
    while names[0] in names[1:] or names[0] in lead:  # output channels as many as a spatial wire's positions: another name
        names[0] += PRIME
    cod = conv.namer.segment(names, out_shape)
    label = (conv.stack[-1][0].rsplit(".", 1)[-1] or None) if conv.stack else None
    try:
        import sympy

        kernel = tuple(int(k) for k in w.shape[2:])
        if transposed:
            box = Box(ConvTransposeOp(dom, cod, kernel, stride, padding, output_padding, dilation, sympy.Integer(groups),
                                      b is not None), label)
        else:
            box = Box(ConvOp(dom, cod, kernel, stride, padding, dilation, sympy.Integer(groups), b is not None), label)
    except Exception as error:  # noqa: BLE001 - any rejection: keep the opaque box
        raise Decline(str(error)) from None
    conv.bind(node, conv.apply(box, [vid]))
    conv.emitted.tensors.append([w] + ([b] if b is not None else []))


def _ints(value: Any, n: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(v) for v in value)
    return values * n if len(values) == 1 else values


# -- slicing --------------------------------------------------------------------------------
def _slice_role(conv: Converter, size: int, kept: int, item: bool) -> str | None:
    """The role of a slice of a fused projection (queries, keys and values of ``size``): head features ``k`` for a
    key's or a value's part when the config gives ``kept`` that role (multi-query attention), else none."""
    config = conv.namer.config
    if item or not _fused_projection(config, size) or "m" in config.get(kept, ()):
        return None
    return "k" if "k" in config.get(kept, ()) else None


def emit_slice(conv: Converter, vid: int, dim: int, start: int, stop: int, step: int = 1) -> int:
    import sympy

    from ncd.prims.movement import SliceOp

    seg = conv.segs[vid]
    dim %= len(seg.axes)
    axis = seg.axes[dim]
    n = int(axis.size)
    start, stop = max(0, min(start if start >= 0 else start + n, n)), max(0, min(stop if stop >= 0 else stop + n, n))
    if start == 0 and stop == n and step == 1:
        return vid
    kept = len(range(start, stop, step))
    name = conv.namer.fresh(kept, _slice_role(conv, n, kept, axis.is_item), "item" if axis.is_item else "feature")
    name = apart(name, set(seg.names) - {axis.name})
    box = Box(SliceOp(axis, sympy.Integer(start), sympy.Integer(stop), sympy.Integer(step), conv.namer.axis(name, kept),
                      seg.dtype, seg.range))
    return conv.apply(box, [vid])


@rule("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unsafe_split")
def split(conv: Converter, node: Node) -> None:
    x = node.args[0]
    if not _live(x):
        raise Decline("not live")
    vid = conv.value(x)
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    pieces = node.value
    used = sorted({c.args[1] for c in conv.consumers.get(id(node), []) if "getitem" in str(c.target)})
    starts = [0]
    for p in pieces:
        starts.append(starts[-1] + int(p.shape[dim]))
    for k in used:
        if starts[k + 1] > starts[k]:  # an empty piece has no entries: a concatenation drops it (Converter.run)
            conv._picked[(id(node), k)] = emit_slice(conv, vid, dim, starts[k], starts[k + 1])


@rule("aten.slice")
def slice_(conv: Converter, node: Node) -> None:
    x = node.args[0]
    if not _live(x):
        raise Decline("not live")
    extra = list(node.args[1:]) + [None] * 4
    dim, start, stop, step = extra[0] or 0, extra[1] or 0, extra[2], extra[3] or 1
    vid = conv.value(x)
    n = int(conv.segs[vid].axes[dim].size)
    conv.bind(node, emit_slice(conv, vid, dim, int(start), n if stop is None else int(min(stop, n)), int(step)))


@rule("aten.narrow")
def narrow(conv: Converter, node: Node) -> None:
    """``x.narrow(dim, start, length)``: the slice ``start:start + length`` (a start counted from the end wraps)."""
    x, dim, start, length = (list(node.args) + [None] * 4)[:4]
    if not _live(x) or not all(isinstance(v, int) and not isinstance(v, bool) for v in (dim, start, length)):
        raise Decline("not live, or a start that is a tensor")
    vid = conv.value(x)
    n = int(conv.segs[vid].axes[dim].size)
    start = start + n if start < 0 else start
    if not 0 <= start < start + length <= n:
        raise Decline("empty or out of range")
    _same = emit_slice(conv, vid, dim, start, start + length)
    if tuple(int(a.size) for a in conv.segs[_same].axes) != _shape(node):
        raise Decline("shape")
    conv.bind(node, _same)


@rule("aten.cat", "aten.concat", "aten.concatenate")
def concat(conv: Converter, node: Node) -> None:
    from ncd.prims.movement import ConcatOp, joined_range

    out_shape = _shape(node)
    # torch.cat skips 1-d empty tensors (an empty key/value cache): drop them
    tensors = [t for t in node.args[0] if not (_tensor(t) and (len(out_shape) != 1 and tuple(_shape(t)) == (0,)
                                                                or t.value.numel() == 0))]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if len(tensors) == 1 and _live(tensors[0]) and tuple(_shape(tensors[0])) == tuple(out_shape):
        conv.bind(node, conv.value(tensors[0]))
        return
    if len(tensors) < 2 or not any(_live(t) for t in tensors) or not all(_tensor(t) for t in tensors):
        raise Decline("concat of fewer than two tensors or of constants only")
    out_shape = _shape(node)
    dim %= len(out_shape)
    template = next(conv.names(conv.value(t)) for t in tensors if _live(t))
    vids = []
    used: set[str] = set()
    for t in tensors:
        if _live(t):
            vid = conv.value(t)
        else:
            names = list(template)
            names[dim] = conv.namer.fresh(int(t.value.shape[dim]))
            vid = conv.value(t, names)
        names = conv.names(vid)
        if len(names) != len(template):
            raise Decline("the tensors have different numbers of wires")
        if [n for k, n in enumerate(names) if k != dim] != [n for k, n in enumerate(template) if k != dim]:
            # the same sizes reached by different paths (a skip connection): read them with the template's names
            names = [names[k] if k == dim else template[k] for k in range(len(names))]
        own = apart(names[dim], used)
        used.add(own)
        vids.append(conv.view(vid, names[:dim] + [own] + names[dim + 1:], _shape(t)))
    axes = tuple(conv.segs[v].axes[dim] for v in vids)
    if len({conv.segs[v].dtype for v in vids}) != 1:
        raise Decline("concat of tensors holding different kinds of values: "
                      + ", ".join(f"'{conv.segs[v]}'" for v in vids))
    try:
        kind = joined_range(conv.segs[vids[0]].dtype, tuple(conv.segs[v].range for v in vids), "concat")
    except ParseError as error:
        raise Decline(str(error)) from None
    name = conv.namer.fresh(out_shape[dim], None, "item" if axes[0].is_item or axes[-1].is_item else "feature")
    name = apart(name, set(template) - {template[dim]})
    box = Box(ConcatOp(axes, conv.namer.axis(name, out_shape[dim]), Segment(()), Segment(()), *kind))
    dom = Type(tuple(conv.segs[v] for v in vids))
    from ncd.ir.compose import fit

    woven, mapping = fit(box, dom)
    if mapping or list(woven.cod[0].names) != template[:dim] + [name] + template[dim + 1:]:
        raise Decline("concat does not weave")
    (vid,) = conv.emit(woven, vids, list(woven.cod))
    conv.bind(node, vid)


@rule("aten.stack")
def stack(conv: Converter, node: Node) -> None:
    """``stack`` is a concatenation of the tensors, each read with a new size-1 wire (``▮``) at ``dim``."""
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if len(tensors) < 2 or not any(_live(t) for t in tensors) or not all(_tensor(t) for t in tensors):
        raise Decline("stack of fewer than two tensors or of constants only")
    dim %= len(_shape(node))
    parts = []
    for t in tensors:
        part = Node(f"{t.name}_unsqueeze", "call", None, (), {}, value=t.value.unsqueeze(dim), stack=node.stack, live=t.live,
                    source=t.source if not t.live else "")
        if t.live:
            vid = conv.value(t)
            names = conv.names(vid)
            conv.bind(part, conv.view(vid, names[:dim] + ["1"] + names[dim:], _shape(part)))
        parts.append(part)
    joined = Node(node.name, "call", node.target, (parts, dim), {}, value=node.value, stack=node.stack, live=True)
    concat(conv, joined)
    conv.bind(node, conv.values[id(joined)])


@rule("aten.select")
def select(conv: Converter, node: Node) -> None:
    import sympy

    from ncd.prims.movement import IndexOp

    x, dim, index = node.args[:3]
    if not _live(x):
        raise Decline("not live")
    vid = conv.value(x)
    seg = conv.segs[vid]
    dim %= len(seg.axes)
    conv.bind(node, conv.apply(Box(IndexOp(seg.axes[dim], sympy.Integer(int(index)), seg.dtype, seg.range)), [vid]))


@rule("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d", "aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def pool(conv: Converter, node: Node) -> None:
    from ncd.prims.pooling import AvgPoolOp, MaxPoolOp

    x, kernel = node.args[:2]
    name = node.target.name()
    n = int(name[-2])
    extra = list(node.args[2:]) + [None] * 5
    kernel = _ints(kernel, n, 1)
    stride = _ints(extra[0] or kernel, n, 1)
    padding = _ints(extra[1], n, 0)
    divisor = None
    if "avg" in name:  # (ceil_mode, count_include_pad, divisor_override): a divisor d for every window is
        ceil_mode, divisor = extra[2], extra[4]  # the mean over the window (padding counted) times |window| / d
        unsupported = divisor is not None and (bool(ceil_mode) or isinstance(divisor, bool)
                                               or not isinstance(divisor, int) or divisor < 1)
    else:  # (dilation, ceil_mode)
        ceil_mode, unsupported = extra[3], _ints(extra[2], n, 1) != (1,) * n
    if not _live(x) or unsupported or ceil_mode not in (None, False, True):
        raise Decline("dilation, or a divisor with ceil mode")
    vid = conv.value(x)
    seg = conv.segs[vid]
    axes = Segment(seg.axes[len(seg.axes) - n:])
    out_shape = _shape(node)[-n:]
    positions = conv.namer.segment([a.name for a in axes.axes], out_shape)
    try:
        prim: MaxPoolOp | AvgPoolOp
        if "max" in name:
            prim = MaxPoolOp(axes, positions, kernel, stride, padding, (1,) * n, bool(ceil_mode))
        else:
            prim = AvgPoolOp(axes, positions, kernel, stride, padding, extra[3] is not False or divisor is not None,
                             bool(ceil_mode))
    except Exception as error:  # noqa: BLE001 - any rejection: keep the opaque box
        raise Decline(str(error)) from None
    out = conv.apply(Box(prim), [vid])
    if divisor is not None:
        out = _scale(conv, out, sympy.Rational(math.prod(kernel), divisor))
    conv.bind(node, out)


#: how many channels of a standardisation ``_standardise`` checks on the traced values
_CHECKED_CHANNELS = 4


def _standardise(conv: Converter, node: Node, x: Any, eps: float) -> None:
    """``batch_norm(x, training=True)`` with no running statistics and no affine parameters on a batch of one (BiT's
    weight standardisation, ``batch_norm(w.reshape(1, o, -1), None, None, training=True)``): each channel normalised
    over its entries — a layer norm over every wire after the channel, without weight or bias.  Checked on the traced
    values (the two kernels sum in another order) of the first channels: each channel is normalised on its own, by the
    same kernel as the others (checking all of a model's weights cost BiT's trace as much as its forward)."""
    from ncd.prims.normalization import LayerNormOp

    if not (_live(x) and isinstance(x.value, torch.Tensor) and x.value.is_floating_point() and x.value.dim() >= 3
            and x.value.shape[0] == 1):
        raise Decline("batch statistics over a batch of several")
    value = x.value
    if value.device.type != "meta":
        dims = tuple(int(s) for s in value.shape[2:])
        want = node.value[0] if isinstance(node.value, (tuple, list)) else node.value
        some = slice(0, _CHECKED_CHANNELS)
        if not torch.allclose(torch.nn.functional.layer_norm(value[:, some], dims, eps=eps), want[:, some], atol=1e-5,
                              rtol=1e-4):
            raise Decline("the standardisation differs from a layer norm on the traced values")
    vid = conv.value(x)
    seg = conv.segs[vid]
    out = conv.apply(Box(LayerNormOp(Segment(seg.axes[2:]), eps, False, False)), [vid])
    conv.bind(node, out)


@rule("aten.batch_norm")
def batch_norm(conv: Converter, node: Node) -> None:
    from ncd.prims.normalization import BatchNormOp

    x, weight, bias, mean, var, training, momentum, eps = (list(node.args) + [None] * 8)[:8]
    if training and weight is None and bias is None and mean is None and var is None:
        _standardise(conv, node, x, float(eps if eps is not None else 1e-5))
        return
    w, b = _weight(weight), _weight(bias)
    if not _live(x) or training or w is None or b is None or not isinstance(mean, Node) or not isinstance(var, Node):
        raise Decline("training mode or no affine parameters or running statistics")
    vid = conv.value(x)
    seg = conv.segs[vid]
    if len(seg.axes) < 2:
        raise Decline("no channel axis")
    box = Box(BatchNormOp(seg, 1, float(eps), float(momentum if momentum is not None else 0.1), True, True))
    conv.bind(node, conv.apply(box, [vid]))
    conv.emitted.tensors.append([mean.value, var.value, w, b])
