"""Conversion rules for operators ATen itself composes from others, drawn as those parts (each read by the rule of its
own operator, as :mod:`ncd.trace.boxes_definitions` draws ``nansum``):

* ``var_mean(x, dims)`` / ``std_mean`` are ``var``/``std`` and ``mean`` over the same wires (two outputs);
* ``nanmean(x, dims)`` is ATen's ``nansum(x) / Σ ¬isnan(x)`` (the count summed one wire at a time);
* ``pairwise_distance(a, b, p, eps)`` is ATen's ``‖a − b + eps‖_p`` over the last wire;
* ``round(x, decimals=k)`` is ATen's ``round(x · 10ᵏ) / 10ᵏ`` (``k < 0``: ``round(x / 10⁻ᵏ) · 10⁻ᵏ``), float32 and
  float64 (half types round in float32 inside the kernel: they stay opaque);
* ``kron(a, b)`` is ``a`` and ``b`` with wires of size 1 between theirs, multiplied (broadcast) and merged pairwise;
* ``block_diag(t₁, …)`` is each block padded with zeros to the full width, joined along the rows;
* ``scatter_reduce(..., "mean")`` is ATen's sum then division by the count; ``index_add(..., alpha=a)`` the source
  scaled by ``a`` then added;
* ``isin(x, t)`` is ``x`` compared with every entry of ``t``, ``any`` over them;
* ``max_unpool2d(x, i, size)`` (``3d``) is zeros with each channel's spatial wires flattened, ``x`` scattered there.

Each part is a step whose value is computed from the recorded operands; where the recording holds values the last one
is checked against the recorded result (bit for bit, ``var_mean``'s mean to rounding: ATen's one-pass mean may round
otherwise than ``mean``) and the rule declines otherwise, so the operator stays an opaque box.
"""

from __future__ import annotations

from typing import Any

import torch

import ncd.trace.boxes  # noqa: F401  (the rule of round, which the decimals hook stands in front of)
import ncd.trace.indexing_scatter  # noqa: F401  (the rules of scatter_reduce and index_add, which hooks stand in front of)
from ncd.trace.boxes_losses import _call
from ncd.trace.boxes_pointwise import _finish
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, rule

__all__: list[str] = []

aten = torch.ops.aten


def _valued(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "meta"


def _same(got: Node, want: Any) -> None:
    """Decline unless ``got`` has ``want``'s dtype and shape and (where both hold values) its entries, bit for bit."""
    have = got.value
    if not (isinstance(have, torch.Tensor) and isinstance(want, torch.Tensor) and have.dtype == want.dtype
            and have.shape == want.shape):
        raise Decline("the parts give another dtype or shape")
    if _valued(have) and _valued(want) and not torch.equal(have, want):
        raise Decline("the parts do not give the recorded result")


def _float(x: Any) -> bool:
    return isinstance(x, Node) and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()


@rule("aten.var_mean", "aten.std_mean")
def statistic_mean(conv: Converter, node: Node) -> None:
    """``var_mean(x, dims, correction, keepdim)``: ``var`` (``std``) with the same arguments, and ``mean`` over the
    same wires (every wire when ``dims`` is none)."""
    name, overload = node.target.name().split("::")[1].split(".")[0], getattr(node.target, "_overloadname", "default")
    x = node.args[0]
    if not (_float(x) and x.live and isinstance(node.value, (tuple, list)) and len(node.value) == 2):
        raise Decline("not a live float tensor")
    rank = x.value.dim()
    if overload == "default":  # var_mean(x, unbiased): every wire
        args: list[Any] = [x, None, *node.args[1:2]]
        kwargs: dict[str, Any] = {"unbiased": node.kwargs["unbiased"]} if "unbiased" in node.kwargs else {}
        target = getattr(aten, name[: -len("_mean")]).dim
        keep = False
    else:
        args, kwargs = list(node.args), dict(node.kwargs)
        target = getattr(getattr(aten, name[: -len("_mean")]), overload)
        keep = kwargs.get("keepdim", args[3] if overload == "dim" and len(args) > 3 else False)
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    wires = list(range(rank)) if dims is None or dims == [] else [dims] if isinstance(dims, int) else list(dims)
    if not rank or not all(isinstance(d, int) for d in wires) or not isinstance(keep, bool):
        raise Decline("no wires to reduce over")
    spread = _call(conv, node, name[: -len("_mean")], target, *args, **kwargs)
    mean = _call(conv, node, "mean", aten.mean.dim, x, wires, keep)
    recorded = node.value
    _same(spread, recorded[0])
    if not (isinstance(mean.value, torch.Tensor) and mean.value.shape == recorded[1].shape
            and mean.value.dtype == recorded[1].dtype):
        raise Decline("the mean comes out in another shape")
    if _valued(mean.value) and _valued(recorded[1]) and not torch.allclose(mean.value, recorded[1], equal_nan=True):
        raise Decline("the mean does not give the recorded one")
    conv._picked[(id(node), 0)] = conv.value(spread)
    conv._picked[(id(node), 1)] = conv.value(mean)
    conv.forget(spread, mean)


@rule("aten.nanmean")
def nanmean(conv: Converter, node: Node) -> None:
    """``nanmean(x, dims, keepdim)`` of floats, as ATen computes it: ``nansum(x, dims) / sum(¬isnan(x), dims)``."""
    x = node.args[0]
    given = dict(zip(("dim", "keepdim", "dtype"), node.args[1:])) | dict(node.kwargs)
    if not (_float(x) and x.live) or given.get("dtype") not in (None, x.value.dtype) \
            or set(given) - {"dim", "keepdim", "dtype"}:
        raise Decline("not a live float tensor averaged in its own dtype")
    dims, keep = given.get("dim"), bool(given.get("keepdim", False))
    made = [_call(conv, node, "missing", aten.isnan.default, x)]
    made.append(_call(conv, node, "present", aten.logical_not.default, made[-1]))
    rank = x.value.dim()
    dims = list(range(rank)) if dims is None or dims == [] or dims == () else [dims] if isinstance(dims, int) else list(dims)
    if not rank:
        raise Decline("a number")
    for d in sorted({d % rank for d in dims}, reverse=True):  # one wire at a time (integers: exact in any order)
        made.append(_call(conv, node, f"count_{d}", aten.sum.dim_IntList, made[-1], [d], keep))
    count = made[-1]
    made.append(_call(conv, node, "total", aten.nansum.default, x, dims, keep))
    made.append(_call(conv, node, "mean", aten.div.Tensor, made[-1], count))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)


@rule("aten.pairwise_distance")
def pairwise_distance(conv: Converter, node: Node) -> None:
    """``F.pairwise_distance(a, b, p, eps, keepdim)``: ``linalg.vector_norm(a − b + eps, p, -1, keepdim)``, as ATen
    composes it (its gradient too)."""
    a, b = node.args[:2]
    given = dict(zip(("p", "eps", "keepdim"), node.args[2:])) | dict(node.kwargs)
    p, eps, keep = given.get("p", 2.0), given.get("eps", 1e-6), bool(given.get("keepdim", False))
    if not (_float(a) and _float(b) and (a.live or b.live) and a.value.dtype == b.value.dtype):
        raise Decline("not two float tensors of one dtype")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (p, eps)):
        raise Decline("an order or eps that is not a number")
    made = [_call(conv, node, "difference", aten.sub.Tensor, a, b)]
    made.append(_call(conv, node, "shifted", aten.add.Tensor, made[-1], float(eps)))
    made.append(_call(conv, node, "distance", aten.linalg_vector_norm.default, made[-1], float(p), [-1], keep))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)


def _round_decimals(conv: Converter, node: Node) -> bool:
    """``round(x, decimals=k)`` of float32/float64: ATen's ``nearbyint(x · 10ᵏ) / 10ᵏ`` in the tensor's own type."""
    decimals = node.kwargs.get("decimals")
    if getattr(node.target, "_overloadname", "") != "decimals" or not isinstance(decimals, int):
        return False
    x = node.args[0]
    if not (_float(x) and x.live and x.value.dtype in (torch.float32, torch.float64)):
        raise Decline("decimals of another type than float32/float64")
    if abs(decimals) > 300:  # 10ᵏ no Python float holds (ATen's is infinite: NaN or the input)
        raise Decline(f"decimals={decimals}")
    if decimals == 0:
        made = [_call(conv, node, "rounded", aten.round.default, x)]
    else:
        scale = float(10 ** abs(decimals))
        first, last = (aten.mul.Tensor, aten.div.Tensor) if decimals > 0 else (aten.div.Tensor, aten.mul.Tensor)
        made = [_call(conv, node, "shifted", first, x, scale)]
        made.append(_call(conv, node, "rounded", aten.round.default, made[-1]))
        made.append(_call(conv, node, "back", last, made[-1], scale))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)
    return True


hook(("aten.round",), _round_decimals)


@rule("aten.kron")
def kron(conv: Converter, node: Node) -> None:
    """``kron(a, b)``: ``a`` viewed ``(a₀, 1, a₁, 1, …)`` times ``b`` viewed ``(1, b₀, 1, b₁, …)`` (the shorter
    shape padded in front with ones), the pairs of wires merged: one product per entry, as ATen's."""
    a, b = node.args[:2]
    if not (_float(a) and _float(b) and (a.live or b.live) and a.value.dtype == b.value.dtype == node.value.dtype):
        raise Decline("not two float tensors of one dtype")
    rank = max(a.value.dim(), b.value.dim())
    sa = [1] * (rank - a.value.dim()) + [int(s) for s in a.value.shape]
    sb = [1] * (rank - b.value.dim()) + [int(s) for s in b.value.shape]
    if not rank or 0 in sa + sb:
        raise Decline("numbers or empty tensors")
    made = [_call(conv, node, "left", aten.reshape.default, a, [s for n in sa for s in (n, 1)])]
    made.append(_call(conv, node, "right", aten.reshape.default, b, [s for n in sb for s in (1, n)]))
    made.append(_call(conv, node, "products", aten.mul.Tensor, made[0], made[1]))
    made.append(_call(conv, node, "kron", aten.reshape.default, made[-1], [m * n for m, n in zip(sa, sb)]))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)


@rule("aten.block_diag")
def block_diag(conv: Converter, node: Node) -> None:
    """``block_diag(t₁, …, tₙ)`` of float matrices of one dtype: each padded with zeros left and right to the sum of
    the widths, joined along the rows (vectors and numbers are rows of one block)."""
    (blocks,) = node.args[:1]
    if not (isinstance(blocks, (list, tuple)) and blocks and all(_float(t) and t.value.dtype == node.value.dtype
                                                                  and t.value.dim() <= 2 for t in blocks)
            and any(t.live for t in blocks)):
        raise Decline("not float matrices of one dtype")
    made: list[Node] = []
    shapes = [tuple(int(s) for s in t.value.shape) for t in blocks]
    if any(0 in shape for shape in shapes):
        raise Decline("an empty block")
    rows = []
    for k, (t, shape) in enumerate(zip(blocks, shapes)):
        if len(shape) < 2:
            t = _call(conv, node, f"row_{k}", aten.reshape.default, t, [1, shape[0] if shape else 1])
            made.append(t)
            shape = (1, shape[0] if shape else 1)
        rows.append((t, shape))
    width = sum(s[1] for _, s in rows)
    padded, left = [], 0
    for k, (t, shape) in enumerate(rows):
        if shape[0] == 0:
            left += shape[1]
            continue
        right = width - left - shape[1]
        if left or right:
            t = _call(conv, node, f"block_{k}", aten.constant_pad_nd.default, t, [left, right], 0.0)
            made.append(t)
        padded.append(t)
        left += shape[1]
    if not padded:
        raise Decline("no rows")
    if len(padded) > 1:
        made.append(_call(conv, node, "blocks", aten.cat.default, padded, 0))
    last = made[-1] if made else padded[0]
    _same(last, node.value)
    if last is padded[0] and not made:
        conv.bind(node, conv.value(last))
        return
    _finish(conv, node, last, made)


def _scatter_mean(conv: Converter, node: Node) -> bool:
    """``scatter_reduce(x, d, i, s, "mean" | "sum", include_self)`` (the sum only without ``x``'s own entries), as ATen
    computes it: ``x`` (zeros written at the positions without ``include_self``) with ``s`` added there
    (``scatter_add``), divided (a mean) by the count of entries reduced into each position — ``1`` (``0`` without
    ``include_self``) plus the ones scattered there, ``1`` where none is."""
    given = dict(zip(("reduce", "include_self"), node.args[4:])) | dict(node.kwargs)
    reduce, include_self = given.get("reduce"), given.get("include_self", True)
    if "scatter_reduce" not in node.target.name() or len(node.args) < 4 or set(given) - {"reduce", "include_self"} \
            or not (reduce == "mean" or reduce == "sum" and include_self is False) or not isinstance(include_self, bool):
        return False
    x, dim, positions, source = node.args[:4]
    if not (_float(x) and _float(source) and x.value.dtype == source.value.dtype == node.value.dtype
            and isinstance(dim, int) and (x.live or source.live)):
        raise Decline("not a float tensor and a source of its dtype")
    made = [] if include_self else [_call(conv, node, "cleared", aten.scatter.value, x, dim, positions, 0.0)]
    made.append(_call(conv, node, "total", aten.scatter_add.default, made[-1] if made else x, dim, positions, source))
    if reduce == "mean":
        total = made[-1]
        ones = Node(f"{node.name}_ones", "constant", value=torch.ones_like(source.value), source=node.source)
        start = (torch.ones_like if include_self else torch.zeros_like)(x.value)
        start_node = Node(f"{node.name}_start", "constant", value=start, source=node.source)
        made.append(_call(conv, node, "count", aten.scatter_add.default, start_node, dim, positions, ones))
        if not include_self:
            made.append(_call(conv, node, "none", aten.eq.Scalar, made[-1], 0))
            made.append(_call(conv, node, "counted", aten.masked_fill.Scalar, made[-2], made[-1], 1.0))
        made.append(_call(conv, node, "mean", aten.div.Tensor, total, made[-1]))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)
    return True


def _scaled_index_add(conv: Converter, node: Node) -> bool:
    """``x.index_add(d, i, s, alpha=a)``: ``x.index_add(d, i, s · a)``, once bit for bit the recorded result (ATen's
    kernel fuses ``x + a·s`` into one rounding where ``x`` has other wires: an ``a`` no power of two stays opaque)."""
    x, dim, index, source = (list(node.args) + [None] * 4)[:4]
    alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
    if alpha == 1 or isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or set(node.kwargs) - {"alpha"}:
        return False
    if not (_float(source) and _float(x) and source.value.dtype == x.value.dtype):
        raise Decline("not a float tensor and a source of its dtype")
    made = [_call(conv, node, "scaled", aten.mul.Tensor, source, float(alpha))]
    made.append(_call(conv, node, "added", aten.index_add.default, x, dim, index, made[-1]))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)
    return True


hook(("aten.scatter_reduce",), _scatter_mean)
hook(("aten.index_add",), _scaled_index_add)


@rule("aten.isin")
def isin(conv: Converter, node: Node) -> None:
    """``torch.isin(x, t)`` (``invert``: its negation): ``x`` compared with every entry of ``t`` on a wire of their own,
    ``any`` over it (GroundingDINO's special tokens among the ids)."""
    overload = getattr(node.target, "_overloadname", "")
    x, tests = node.args[:2]
    given = dict(zip(("assume_unique", "invert"), node.args[2:])) | dict(node.kwargs)
    if set(given) - {"assume_unique", "invert"} or not isinstance(given.get("invert", False), bool):
        raise Decline("other arguments")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dim() > 0
            and not x.value.is_complex()):
        raise Decline("not a live tensor with wires")
    if overload == "Tensor_Scalar":
        if isinstance(tests, bool) or not isinstance(tests, (int, float)):
            raise Decline("a test element that is not a number")
        made = [_call(conv, node, "found", aten.eq.Scalar, x, tests)]
    elif overload == "Tensor_Tensor" and isinstance(tests, Node) and isinstance(tests.value, torch.Tensor) \
            and tests.value.numel() > 0 and not tests.value.is_complex():
        made = [_call(conv, node, "entries", aten.unsqueeze.default, x, -1)]
        if tests.value.dim() != 1:
            made.append(_call(conv, node, "tests", aten.reshape.default, tests, [-1]))
        made.append(_call(conv, node, "equal", aten.eq.Tensor, made[0], made[-1] if tests.value.dim() != 1 else tests))
        made.append(_call(conv, node, "found", aten.any.dim, made[-1], -1))
    else:
        raise Decline("no tensor of test elements")
    if given.get("invert", False):
        made.append(_call(conv, node, "absent", aten.logical_not.default, made[-1]))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)



@rule("aten.max_unpool2d", "aten.max_unpool3d")
def max_unpool(conv: Converter, node: Node) -> None:
    """``F.max_unpool2d(x, i, output_size)`` (3d alike), as ATen computes it: zeros of the output's shape with each
    channel's spatial wires flattened, ``x``'s entries written at the positions ``i`` (``scatter`` along them), viewed
    back as the image."""
    x, positions, size = (list(node.args) + [None] * 3)[:3]
    if not (_float(x) and isinstance(positions, Node) and isinstance(positions.value, torch.Tensor)
            and positions.value.dtype == torch.int64 and positions.value.shape == x.value.shape and x.value.dim() >= 3
            and isinstance(node.value, torch.Tensor) and node.value.dtype == x.value.dtype):
        raise Decline("not floats and their int64 positions of one shape")
    n = 3 if "3d" in node.target.name() else 2
    lead = tuple(int(s) for s in x.value.shape[:-n])
    inner = int(torch.Size(x.value.shape[-n:]).numel())
    outer = int(torch.Size(node.value.shape[-n:]).numel())
    if tuple(int(s) for s in node.value.shape[:-n]) != lead:
        raise Decline("another batch out")
    made = [_call(conv, node, "values", aten.view.default, x, [*lead, inner]),
            _call(conv, node, "positions", aten.view.default, positions, [*lead, inner])]
    zeros = Node(f"{node.name}_zeros", "constant", value=torch.zeros(*lead, outer, dtype=x.value.dtype),
                 source=node.source)
    made.append(_call(conv, node, "unpooled", aten.scatter.src, zeros, -1, made[1], made[0]))
    made.append(_call(conv, node, "image", aten.view.default, made[-1], [int(s) for s in node.value.shape]))
    _same(made[-1], node.value)
    _finish(conv, node, made[-1], made)
