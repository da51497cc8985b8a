"""Conversion rules for softmax, elementwise maps and arithmetic.

``softmax`` lands on the named axis; unary functions (:data:`UNARY`) and powers are elementwise boxes; sums, differences
and products of broadcast operands keep their wires' names (:func:`operand`, :func:`out_names`, :func:`bind_product`);
a scaling by a number is a ``*c`` box whose factor reads as a size where it is one (``k**-0.5``:
:mod:`ncd.trace.scale_factors`);
``mean``/``sum`` are einsum reductions (a mean scaled by one over the reduced sizes: :func:`count_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Primitive
from ncd.prims.elementwise import ElementwiseOp, MultiplyOp, ScaleOp
from ncd.prims.linear import EinsumOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp, TransposeOp
from ncd.trace import idioms_norms
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms_fill import constant_fill
from ncd.trace.idioms_wires import _live, _shape, _tensor
from ncd.trace.indexing import float_cast
from ncd.trace.naming import PRIME, kept_units, noted, unique
from ncd.trace.scale_factors import SYMBOLIZED, _factor, _scale, _single, count_of, size_constant, written

__all__ = ["softmax", "UNARY", "unary", "power", "SYMBOLIZED", "size_constant", "count_of", "written",
           "operand", "number_tensor", "promotes_alike", "out_names", "arithmetic", "bind_product", "cross_back", "reduce"]


@rule("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax", "aten.special_softmax")
def softmax(conv: Converter, node: Node) -> None:
    x = node.args[0]
    vid = conv.value(x)
    seg = conv.segs[vid]
    if not seg.axes or seg.dtype != "float":
        raise Decline("not a float softmax")
    before, after = x.value.dtype, node.value.dtype
    if after != before:
        # ``softmax(x, dim, dtype=d)`` is defined by torch as ``_softmax(x.to(d), dim)``: a cast box, then the
        # softmax computed in that type (exact by construction; its gradient cast back to x's type, as autograd's)
        asked = _asked_dtype(node)
        if asked != after or not after.is_floating_point or not before.is_floating_point:
            raise Decline("a softmax changing the dtype otherwise than asked")
        vid = conv.apply(float_cast(before, after), [vid])
    dim = node.args[1] % len(seg.axes)
    box = Box(SoftmaxOp(seg.axes[dim], "log" in node.target.name()))
    conv.bind(node, conv.apply(box, [vid]))


def _asked_dtype(node: Node) -> torch.dtype | None:
    """The result type a softmax call asks for with its ``dtype`` argument (``_softmax``'s half_to_float, a CUDA
    kernel's own rounding, asks none: it stays opaque)."""
    if node.target.name().split("::")[1].startswith("_"):
        return None
    asked = node.args[2] if len(node.args) > 2 else node.kwargs.get("dtype")
    return asked if isinstance(asked, torch.dtype) else None


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
    if idioms_norms.root_mean_square(conv, node) or idioms_norms.l2_norm(conv, node):  # (an RMS or L2 norm: RMS box)
        return
    x, e = node.args[:2]
    if not _live(x) or e not in (2, 2.0, 0.5):
        raise Decline("other power")
    conv.bind(node, conv.apply(Box(ElementwiseOp("square" if e in (2, 2.0) else "sqrt")), [conv.value(x)]))


def number_tensor(value: Any, result: torch.dtype | None = None) -> torch.Tensor:
    """A Python number as the 0-dim tensor an operand holds: torch's own (``as_tensor``: int64, bool, the default
    float type), but a float in float64 when the result is float64 (``x + 0.1`` of float64 ``x`` adds the double
    0.1, not its float32 rounding).  Kept 0-dim when lowered (:attr:`~ncd.ir.primitive.Primitive.zero_dim_operands`),
    it promotes and rounds as the number does: float16 ``x + 0.1`` is float16, computed with float32's 0.1."""
    if isinstance(value, float) and result == torch.float64:
        return torch.tensor(value, dtype=torch.float64)
    return torch.as_tensor(value)


def promotes_alike(conv: Converter, node: Node, operands: Sequence[Any], vids: Sequence[int]) -> bool:
    """Whether the lowered operation's type promotion gives ``node``'s dtype: an operand whose wires are all dropped
    (:func:`operand`) is lowered as a 0-dim tensor, which torch promotes otherwise than the tensor of size-1 dims it
    was in the model (int32 values plus an int64 tensor of shape (1,) are int64; plus an int64 0-dim tensor, int32).
    The last two operands are the ones promoted (``torch.where(c, a, b)``: ``a`` and ``b``)."""
    reps = []
    for value, vid in zip(operands[-2:], vids[-2:]):
        tensor = value.value if isinstance(value, Node) else number_tensor(value, node.value.dtype)
        if not isinstance(tensor, torch.Tensor):
            return False
        reps.append(torch.empty((1,) * bool(conv.segs[vid].axes), dtype=tensor.dtype))
    return len(reps) < 2 or torch.result_type(reps[0], reps[1]) == node.value.dtype


def operand(conv: Converter, value: Any, out_names: list[str], out_shape: tuple[int, ...],
            result: torch.dtype | None = None) -> int:
    """An operand of a broadcasting op, with wires named like the output's (size-1 wires dropped); a number is held
    as :func:`number_tensor` makes it for an operation whose result has the type ``result``."""
    tensor = value.value if isinstance(value, Node) else number_tensor(value, result)
    shape = tuple(int(s) for s in tensor.shape)
    tail = out_names[len(out_names) - len(shape):] if shape else []
    out_tail = out_shape[len(out_shape) - len(shape):] if shape else ()
    keep = [not (s == 1 and o != 1) for s, o in zip(shape, out_tail)]  # drop only the wires that broadcast
    if any(s == 1 and n.rstrip(PRIME) != "1" for s, n in zip(shape, tail)):  # a wire of size 1 the output names
        # (a batch of one): the operand's own when it names it so, else it broadcasts there (a constant's 1)
        own = conv.names(conv.value(value)) if isinstance(value, Node) and value.live else ["1"] * len(shape)
        keep = [k and not (s == 1 and n.rstrip(PRIME) != "1" and o != n) for k, s, n, o in zip(keep, shape, tail, own)]
    names = [n for n, k in zip(tail, keep) if k]
    kept = tuple(s for s, k in zip(shape, keep) if k)
    if isinstance(value, Node) and value.live:
        vid = conv.value(value)
        return conv.view(vid, names, kept)
    from ncd.trace.parameter_reads import number_box

    if not isinstance(value, Node) and not kept and number_box(tensor):  # a number among the arguments (the 0 a
        return conv.value(tensor.reshape(()), names)  # mask fills in): its number box, not a buffer named const
    squeezed = Node("operand", "constant", value=tensor.reshape(kept)) if not isinstance(value, Node) else value
    if not isinstance(value, Node):  # a number or a tensor among the operation's arguments (or one made of them)
        conv.__dict__.setdefault("_from_arguments", {})[id(squeezed.value)] = squeezed.value
    else:
        squeezed = Node(value.name, value.kind, value.target, value.args, value.kwargs, tensor.reshape(kept),
                        value.stack, value.source, value.live)
        if conv.learned(value):
            squeezed.kind = "parameter"
        elif value.kind == "call":
            squeezed.kind = "call"
    return conv.value(squeezed, names)


def _given_back(conv: Converter, name: str | None, other: str, size: int) -> bool:
    """Whether a wire named ``name`` is the wire ``other`` given back: ``name`` was derived from ``other`` by a change
    of size (a pad's ``t2`` of ``t + 2`` positions, :func:`ncd.trace.boxes._claim`) and a convolution, which keeps its
    positions' names, brought it back to ``other``'s size (``size``, the namer's for ``other`` and not for ``name``).
    Where the two meet, the output takes ``other`` (the sequence stays ``t``)."""
    if name is None or PRIME in name or PRIME in other or name.rstrip("0123456789") != other or name == other:
        return False
    return bool(noted(conv.namer, _size_of, conv.namer.size_of, other) == size
                and noted(conv.namer, _size_of, conv.namer.size_of, name) != size)


def _merge_only(conv: Converter, name: str | None, other: str) -> bool:
    """Whether ``name`` is the name of a merge of its own (parts merged with no wire they were cut from) and
    ``other`` is not: where the two meet, the output takes ``other``."""
    if name is None or PRIME in name or PRIME in other or conv.namer.roles.get(name) == "item" \
            or conv.namer.roles.get(other) == "item":
        return False
    return bool(noted(conv.namer, _merges_own, conv.namer.generated, name)
                and not noted(conv.namer, _merges_own, conv.namer.generated, other))


def _items_back(conv: Converter, name: str | None, other: str) -> bool:
    """Whether ``name`` is a wire named by its size alone (a feature the config gives no letter) and ``other`` items
    (positions, patches): where the two are summed, the output takes ``other`` — the items given back by a map across
    them (PatchTSMixer's patch mixer maps its patches ``t`` to a hidden width and back, then adds the patches: ``t``,
    not the map's ``n``, whichever operand comes first; else layer 0 took ``t`` to ``n`` and did not fold with layer 1)."""
    if name is None or PRIME in name or PRIME in other or name in conv.namer.declared:
        return False
    return bool(noted(conv.namer, _item_over_size, conv.namer.roles, conv.namer.generated, name, other))


def _item_over_size(roles: dict[str, str], generated: dict[Any, str], name: str, other: str) -> bool:
    return roles.get(other) == "item" and roles.get(name) == "feature" \
        and any(v == name and len(k) == 3 and k[2] is None for k, v in generated.items())


def _merges_own(generated: dict[Any, str], name: str) -> bool:
    return any(v == name and len(k) == 4 for k, v in generated.items())


def _size_of(sizes: dict[str, int], name: str) -> int | None:
    return sizes.get(name)


def out_names(conv: Converter, node: Node, operands: list[Any]) -> list[str]:
    shape = _shape(node)
    # a sum of two values of its shape (a residual): the items it gives back keep their name (:func:`_items_back`)
    summed = str(node.target) == "aten.add.Tensor" and len(operands) == 2 and all(
        _live(v) and _shape(v) == shape for v in operands)
    names: list[str | None] = [None] * len(shape)
    units: dict[int, set[str]] = {}  # a wire of size 1 in the output -> the names (other than "1") operands give it
    for value in operands:
        if not _live(value):
            continue
        own = conv.names(conv.value(value))
        vshape = _shape(value)
        for k in range(1, len(vshape) + 1):
            if vshape[-k] == shape[-k] and names[-k] is None and shape[-k] != 1:
                names[-k] = own[-k]
            elif vshape[-k] == shape[-k] != 1 and names[-k] != own[-k] and (_given_back(conv, names[-k], own[-k], shape[-k])
                                                                           or _merge_only(conv, names[-k], own[-k])
                                                                           or summed and _items_back(conv, names[-k], own[-k])):
                names[-k] = own[-k]
            elif shape[-k] == 1 and own[-k] != "1":
                units.setdefault(k, set()).add(own[-k])
    for k, found in units.items():  # one name given (a batch of one named b): kept, else a unit wire "1"
        if len(found) == 1:
            names[-k] = found.pop()
    done = [n if n is not None else ("1" if s == 1 else conv.namer.fresh(s)) for n, s in zip(names, shape)]
    return unique(done)


@rule("aten.add", "aten.sub", "aten.mul", "aten.div", "aten.rsub")
def arithmetic(conv: Converter, node: Node) -> None:
    name = node.target.name().split("::")[1].split(".")[0]
    a, b = node.args[:2]
    alpha = node.kwargs.get("alpha", 1)
    if node.kwargs.get("rounding_mode") is not None or not node.value.is_floating_point() or name == "rsub":
        raise Decline("not float arithmetic")
    if name == "mul" and constant_fill(conv, node):  # x * ones made in the forward: x
        return
    if any(_tensor(v) and v.value.dtype != node.value.dtype for v in (a, b)):
        _widened(conv, node, a, b)
        return
    if name == "mul" and a is b and idioms_norms.l2_norm(conv, node):  # x * rsqrt(sum(x * x) + eps): RMS, then 1/√n
        return
    scalar_b = not _tensor(b)
    if _live(a) and scalar_b and name in ("mul", "div"):
        factor = float(b) if name == "mul" else 1.0 / float(b)
        vid = conv.value(a)
        if tuple(int(x.size) for x in conv.segs[vid].axes) != _shape(node):
            raise Decline("broadcast")
        by = float(b) if name == "div" else None  # (lowered as the model's division: :func:`divisor`)
        conv.bind(node, _scale(conv, vid, factor, conv.names(vid) if not written(factor) else (), by))
        return
    sized = sized_scalar(conv, node, a, b, name)
    if sized is not None:
        conv.bind(node, sized)
        return
    if name == "div":
        raise Decline("division by a tensor")
    names = out_names(conv, node, [a, b])
    shape = _shape(node)
    va = operand(conv, a, names, shape, node.value.dtype)
    vb = operand(conv, b, names, shape, node.value.dtype)
    if name == "sub" or alpha != 1:
        factor = (-1.0 if name == "sub" else 1.0) * float(alpha)  # (baddbmm's alpha: bloom's 1/√k)
        vb = _scale(conv, vb, factor, conv.names(vb) if not written(factor) else ())
    bind_product(conv, node, AddOp(2) if name in ("add", "sub") else MultiplyOp(2), va, vb, names)


def _widened(conv: Converter, node: Node, a: Any, b: Any) -> None:
    """``a ∘ b`` with a float operand of a narrower type than the result (``x * rsqrt(…).half()`` of a float32 ``x``,
    ``x + w`` of a float64 ``w``): that operand cast to the result's type (a ``Cast`` box), then the operation, as torch
    computes it (widening a float is exact).  An operand of a wider type than the result (a float64 number tensor
    against float16 values: torch rounds it otherwise) or not a float declines."""
    from ncd.trace.boxes_losses import _call

    wanted = node.value.dtype
    if any(_tensor(v) and v.value.dtype != wanted and not (
            v.value.is_floating_point() and torch.promote_types(v.value.dtype, wanted) == wanted) for v in (a, b)):
        raise Decline("mixed dtypes")
    made: list[Node] = []

    def widened(v: Any) -> Any:
        if not _tensor(v) or v.value.dtype == wanted:
            return v
        made.append(_call(conv, node, f"widened_{len(made)}", torch.ops.aten._to_copy.default, v, dtype=wanted))
        return made[-1]

    wide = (widened(a), widened(b)) if a is not b else (widened(a),) * 2
    done = _call(conv, node, "widened", node.target, *wide, *node.args[2:], **node.kwargs)
    if tuple(done.value.shape) != tuple(node.value.shape) or done.value.dtype != wanted or id(done) not in conv.values:
        raise Decline("the widened operation comes out otherwise")
    conv.bind(node, conv.values[id(done)])
    conv.forget(*made, done)


def sized_scalar(conv: Converter, node: Node, a: Any, b: Any, name: str) -> int | None:
    """A live value times (or over) a one-number constant tensor whose number is a power of the size of one of the
    value's wires (Gemma's ``embed_scale`` buffer, ``hidden_size ** 0.5`` stored in float32; GPT-2's eager attention
    over ``torch.full([], k ** 0.5)``): the scaling by that power (``m**0.5``, ``k**-0.5``), not the number 5.657.
    Only float32 (the number compared as torch rounded the power: the lowered ``x * m**0.5`` multiplies by that
    float32) and float64 tensors, a number no one writes (:func:`written`); None otherwise (drawn as before)."""
    if name not in ("mul", "div"):
        return None
    live, other = (a, b) if _live(a) else (b, a)
    if not _live(live) or not _tensor(other) or _live(other) or name == "div" and other is not b:
        return None
    tensor = other.value
    if tensor.dim() != 0 or tensor.dtype not in (torch.float32, torch.float64) or tensor.device.type == "meta" \
            or node.value.dtype != tensor.dtype or node.kwargs.get("rounding_mode") is not None or conv.learned(other):
        return None
    value = float(tensor)
    single = tensor.dtype == torch.float32
    if value <= 0 or not math.isfinite(value) or (_single if single else float)(float(f"{value:.6g}")) == value:
        return None  # a number as written (``torch.tensor(0.1)`` in float32 too) is drawn as itself
    vid = conv.value(live)
    if tuple(int(x.size) for x in conv.segs[vid].axes) != _shape(node):
        return None
    expr = _factor(conv, value, conv.names(vid), single)
    if not expr.free_symbols:
        return None
    if name == "mul":
        return _scale(conv, vid, expr)
    return _scale(conv, vid, 1 / expr, by=value, single=single)  # (over k**0.5: lowered as that division)


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
    if idioms_norms.layer_norm(conv, node):  # (x - mean) * rsqrt(mean((x - mean) ** 2) + eps) in a layer norm: one LN box
        return
    x = node.args[0]
    dtype = node.kwargs.get("dtype")
    if _live(x) and isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype != x.value.dtype \
            and x.value.dtype != torch.bool:  # x.sum(dtype=torch.float64): torch casts x to it first, then reduces
        from ncd.trace.boxes_losses import _call

        x = _call(conv, node, "cast", torch.ops.aten._to_copy.default, x, dtype=dtype)
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
    mean = "mean" in node.target.name()
    # in half precision torch's mean sums in float32 and divides before rounding to the input's type once: the scale
    # says so (``mean``) and lowers as ``torch.mean`` of the sum's operand (ncd.torch.means), where a half sum then
    # divided rounds twice, or overflows to inf where the mean does not (float16: 8 values of 1e4)
    half = mean and x.value.dtype in (torch.float16, torch.bfloat16)
    box = Box(EinsumOp(Type((seg,)), out))
    (vid2,) = conv.emit(box, [vid], [out])
    if mean:  # 1 over the reduced wires' sizes: their symbols where the names hold them; lowered as
        # torch's mean computes it, its sum divided by their count (``* b**-1 * m**-1`` rounded twice)
        count = count_of(conv, [seg.axes[d] for d in dims])
        if count != 1:  # (over wires of one entry: no box; a number of entries a power of two: exact times 1/n)
            exact = not count.free_symbols and abs(math.frexp(int(count))[0]) == 0.5
            vid2 = conv.apply(Box(ScaleOp(1 / count, None if exact else count, mean=half)), [vid2])
    if keep:
        names = kept_units(seg.names, dims)
        vid2 = conv.view(vid2, names, _shape(node))
    conv.bind(node, vid2)
