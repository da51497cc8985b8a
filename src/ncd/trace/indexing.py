"""Conversion rules for index computations: integer casts, comparisons, argmax, gathers.

HF's CLIP text model pools on the end-of-text token with
``x[arange(b), (ids.to(int) == eos).int().argmax(-1)]``.  Each step has a box
(:mod:`ncd.prims.gather`): a cast between integer dtypes a :class:`~ncd.prims.gather.CastOp` of the same
range in the model's type (its ``width``), ``bool -> int`` a :class:`~ncd.prims.gather.CastOp` (as is a cast between
float types, ``x.half()``: its backward casts the cotangent back; and floats truncated to integers, ranged by the traced
values), ``== eos`` a
:class:`~ncd.prims.gather.CompareOp`, ``argmax`` an :class:`~ncd.prims.gather.ArgMaxOp`
and the advanced index a :class:`~ncd.prims.gather.GatherOp` woven over ``b`` on both
inputs (``arange(b)`` is the diagonal) and over the feature wires on the tensor only.  Gathers and scatters along one
axis (``torch.gather``, ``torch.scatter``, ``scatter_add``, ``index_add``) are :mod:`ncd.trace.indexing_scatter`'s.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch

from ncd.ir.axes import SCALAR, Segment
from ncd.ir.diagram import Box
from ncd.prims.gather import WIDTHS, ArgMaxOp, CastOp, CompareOp, GatherOp
from ncd.prims.opaque import ViewOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.naming import PRIME, kept_units
from ncd.trace.values import kind_of

__all__ = ["cast", "float_cast"]

_RELATIONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def _fits(before: torch.Tensor, after: torch.Tensor, seg: Segment) -> bool:
    """Whether an integer cast keeps every value: a wider type, the values seen at trace time unchanged, or (recorded
    on meta) a known range the narrower signed type holds."""
    wide, narrow = torch.iinfo(before.dtype), torch.iinfo(after.dtype)
    if narrow.min <= wide.min and wide.max <= narrow.max:
        return True
    if before.device.type != "meta":
        return bool(torch.equal(before.to(torch.int64), after.to(torch.int64)))
    top = seg.range
    return (top is not None and not sympy.sympify(top).free_symbols and narrow.min < 0
            and int(top) - 1 <= narrow.max)


def cast(conv: Converter, node: Node) -> bool:
    """A dtype change of a live value drawn as a wire (integer to integer) or a cast box; False if neither."""
    source = node.args[0]
    if not (isinstance(source, Node) and source.live and isinstance(source.value, torch.Tensor)):
        return False
    before, after = source.value, node.value
    if tuple(before.shape) != tuple(after.shape):
        return False
    vid = conv.value(source)
    seg = conv.segs[vid]
    width = _width(after)
    if _integer(before) and _integer(after):
        if not _fits(before, after, seg):
            return False  # a narrower integer that may wrap around: an opaque cast, never the unwrapped value
        # the same positions in a wider integer, or a narrower one that holds them: a box all the same, so that the
        # lowered module computes on in the model's type (int32 arithmetic wraps around where int64's does not)
        same = Segment((), seg.dtype, seg.range)
        conv.bind(node, conv.apply(Box(CastOp(same, same, width)), [vid]))
        return True
    if before.dtype == torch.bool and _integer(after):
        target = Segment((), "index", sympy.Integer(2))
    elif _integer(before) and after.is_floating_point():
        target = SCALAR
    elif after.dtype == torch.bool and (_integer(before) or before.is_floating_point()):
        target = Segment((), "bool")
    elif before.dtype == torch.bool and after.is_floating_point():  # flags as 0./1. (XLM's mask)
        target = SCALAR
    elif before.is_floating_point() and _integer(after) and seg.dtype == "float":
        # floats truncated towards zero (T5's buckets: ``(log(n / e) * c).to(torch.long)``), as the box's ``.to`` does;
        # ranged by the traced values, as every integer the model computes is
        top = kind_of(after)[1]
        target = Segment((), "index", None if top is None else sympy.Integer(top))
    elif before.is_floating_point() and after.is_floating_point() and seg.dtype == "float":
        # another float type (x.half(), x.to(torch.float64)): rounded as the model rounds, computed on in that type,
        # and its gradient cast back to the type read
        conv.bind(node, conv.apply(float_cast(before.dtype, after.dtype), [vid]))
        return True
    else:
        return False
    cast_op = CastOp(Segment((), seg.dtype, seg.range), target, width)
    conv.bind(node, conv.apply(Box(cast_op), [vid]))
    return True


def float_cast(before: torch.dtype, after: torch.dtype) -> Box:
    """The box of a float read as another float type: its values rounded to ``after`` (exact when wider), its
    cotangent cast back to ``before`` as autograd casts it.  Both types are named, float32 too: the model's
    ``x.half().float()`` is float32 whatever torch's default type when the lowered module runs."""
    return Box(CastOp(SCALAR, SCALAR, str(after).removeprefix("torch."), str(before).removeprefix("torch.")))


def _float_width(dtype: torch.dtype) -> str:
    return "" if dtype == torch.get_default_dtype() else str(dtype).removeprefix("torch.")


def _width(t: torch.Tensor) -> str:
    """:class:`CastOp`'s ``width`` of a tensor: an integer one's type unless ``int64``, a float one's unless torch's
    default (empty)."""
    if t.is_floating_point():
        return _float_width(t.dtype)
    name = str(t.dtype).removeprefix("torch.")
    return name if name in WIDTHS else ""


def _signed_integers(a: object, b: object) -> bool:
    """Two tensors of int32/int64 (their difference cannot wrap around at the sizes models use), one of them live."""
    return (isinstance(a, Node) and isinstance(b, Node) and (a.live or b.live)
            and all(isinstance(t.value, torch.Tensor) and t.value.dtype in (torch.int32, torch.int64) for t in (a, b))
            and not (not b.live and b.value.dim() == 0))  # a number held in a tensor: compared as that number


@rule(*(f"aten.{k}" for k in _RELATIONS))
def compare(conv: Converter, node: Node) -> None:
    x, other = node.args[:2]
    if isinstance(other, Node) and not other.live and isinstance(other.value, torch.Tensor) and other.value.dim() == 0:
        other = other.value.item()
    if isinstance(other, bool) and isinstance(x, Node) and isinstance(x.value, torch.Tensor) and x.value.dtype != torch.bool:
        other = int(other)  # numbers compared with a flag (CPM-Ant's ``mask == torch.tensor(False)``): with 0 or 1
    if _signed_integers(x, other):  # a ∘ b is (a − b) ∘ 0, exactly, on int32/int64 (XLM's arange(t) < lengths)
        from ncd.trace.boxes_integer import index_arithmetic

        relation = _RELATIONS[node.target.name().split("::")[1].split(".")[0]]
        difference = Node(f"{node.name}_difference", "call", torch.ops.aten.sub.Tensor, (x, other), {},
                          value=x.value - other.value, stack=node.stack, live=True, line=node.line)
        index_arithmetic(conv, difference)
        vid = conv.values[id(difference)]
        seg = conv.segs[vid]
        conv.bind(node, conv.apply(Box(CompareOp(relation, 0.0, Segment((), seg.dtype, seg.range))), [vid]))
        return
    if not (isinstance(x, Node) and x.live) or isinstance(other, (Node, bool)) or not isinstance(other, (int, float)):
        raise Decline("comparison of two tensors")
    vid = conv.value(x)
    seg = conv.segs[vid]
    relation = _RELATIONS[node.target.name().split("::")[1].split(".")[0]]
    if seg.dtype == "bool":  # m == 1, m != 0: m itself; m == 0, m != 1: not m (XLM's ``mask == 0``)
        if relation not in ("==", "!=") or other not in (0, 1):
            raise Decline("an order of bools, or bools compared with another number")
        if (relation == "==") == (other == 1):
            conv.bind(node, vid)
            return
        from ncd.prims.selection import LogicOp

        conv.bind(node, conv.apply(Box(LogicOp("not")), [vid]))
        return
    relation = _RELATIONS[node.target.name().split("::")[1].split(".")[0]]
    conv.bind(node, conv.apply(Box(CompareOp(relation, float(other), Segment((), seg.dtype, seg.range))), [vid]))


@rule("aten.argmax")
def argmax(conv: Converter, node: Node) -> None:
    x = node.args[0]
    extra = list(node.args[1:]) + [None, False]
    dim = node.kwargs.get("dim", extra[0])
    keep = node.kwargs.get("keepdim", extra[1])
    if not (isinstance(x, Node) and x.live):
        raise Decline("argmax of a constant")
    if dim is None:  # over every entry
        from ncd.trace.boxes_indexing import _arg_extreme

        _arg_extreme(conv, node, largest=True)
        return
    vid = conv.value(x)
    seg = conv.segs[vid]
    dim %= len(seg.axes)
    out = conv.apply(Box(ArgMaxOp(Segment((seg.axes[dim],), seg.dtype, seg.range))), [vid])
    if keep:
        names = kept_units(seg.names, [dim])
        out = _retag(conv, out, names, tuple(int(s) for s in node.value.shape))
    conv.bind(node, out)


def _retag(conv: Converter, vid: int, names: list[str], shape: tuple[int, ...], value_range: int | None = None) -> int:
    """``vid`` read with other wire names (and, for an index, a wider range)."""
    seg = conv.segs[vid]
    rng = value_range if value_range is not None else (None if seg.range is None else int(seg.range))
    target = conv.namer.segment(names, shape, seg.dtype, rng)
    if target.same(seg):
        return vid
    (out,) = conv.emit(Box(ViewOp(seg, target)), [vid], [target])
    return out


def _arange(value: Any, n: int) -> bool:
    return (isinstance(value, Node) and not value.live and isinstance(value.value, torch.Tensor)
            and value.value.device.type != "meta" and tuple(value.value.shape) == (n,)
            and torch.equal(value.value.cpu(), torch.arange(n, dtype=value.value.dtype)))


def _fixed_positions(x: Node, indices: list[Any]) -> int | None:
    """The dimension of the one index of ``x[..., i]`` when ``i`` is a constant integer tensor, last, whose recorded values
    all lie in ``[-size, size)`` (so it reads the same entries whatever the input); None otherwise."""
    given = [k for k, i in enumerate(indices) if i is not None]
    if len(given) != 1 or given[0] != len(indices) - 1:
        return None
    i = indices[given[0]]
    if not (isinstance(i, Node) and isinstance(i.value, torch.Tensor) and _integer(i.value) and i.value.device.type != "meta"):
        return None
    size = int(x.value.shape[given[0]])
    return given[0] if i.value.numel() and -size <= int(i.value.min()) and int(i.value.max()) < size else None


def _mask_positions(indices: list[Any]) -> list[Any]:
    """``indices`` with a constant one-axis boolean mask replaced by the positions it keeps (``x[:, keep]`` reads what
    ``x[:, keep.nonzero()[:, 0]]`` reads, in the same order): a mask fixed in the model (a buffer) selects fixed
    positions, a gather at constant positions (a mask that selects nothing stays a mask)."""
    out = list(indices)
    for k, i in enumerate(indices):
        if (isinstance(i, Node) and not i.live and isinstance(i.value, torch.Tensor) and i.value.dtype == torch.bool
                and i.value.dim() == 1 and i.value.device.type != "meta" and bool(i.value.any())):
            out[k] = Node(f"{i.name}_positions", "constant", None, (), {}, value=i.value.nonzero()[:, 0], stack=i.stack,
                          live=False, source=i.source)
    return out


@rule("aten.index")
def index(conv: Converter, node: Node) -> None:
    """``x[..., i, ...]`` with one live index tensor ``i`` and, before it, full slices or ``arange`` (a diagonal); ``x`` may
    be a constant read at live positions (the identity's rows at the experts a router chose); a constant boolean mask
    on one axis is the positions it keeps.  A negative position counts from the end.  Constant ``arange`` indices
    placed on their own axes in order (transformers' mask functions: ``mask[batch[:, None, None, None],
    kv[None, None, None, :]]``) read every entry where it is: ``x`` with axes of size 1 between, a reshape."""
    windows = _placed_windows(node)
    if windows is not None:
        from ncd.trace.idioms_slicing import emit_slice
        from ncd.trace.idioms_wires import reshape

        x = node.args[0]
        if windows:  # each axis read at start:stop (a sliding window's keys: ``kv_arange + kv_offset``), then placed
            vid = conv.value(x)
            cut = x.value
            for k, start, stop in windows:
                _window_held(conv, node, x, k, start, stop)
                vid = emit_slice(conv, vid, k, start, stop)
                cut = cut.narrow(k, start, stop - start)
            x = Node(f"{node.name}_window", "call", torch.ops.aten.slice.Tensor, (x,), {}, value=cut, stack=node.stack,
                     live=True, line=node.line)
            conv.bind(x, vid)
        view = Node(f"{node.name}_reshaped", "call", torch.ops.aten.reshape.default,
                    (x, list(node.value.shape)), {}, value=node.value, stack=node.stack, live=True, line=node.line)
        reshape(conv, view)
        conv.bind(node, conv.values[id(view)])
        if windows:
            conv.forget(x)  # made for this call, read by no other node
        return
    read_at(conv, node, wraps=True)


def _window_held(conv: Converter, node: Node, x: Node, k: int, start: int, stop: int) -> None:
    """A window's positions are numbers the model computed at the traced sizes (``kv_offset`` from the cache's length):
    the sizes ``x``'s axis ``k`` follows are held (a ``fixed`` entry: lowering at another value of them is refused,
    also read back from JSON, as the constant index it replaces was)."""
    from ncd.trace.registry import where
    from ncd.trace.shape_expressions import _atom, _follows

    held = _follows(conv, _atom(conv, x, k))
    if held:
        conv.__dict__.setdefault("_size_fixed", []).append(
            (tuple(sorted(held)), f"index {where(node)}: axis {k} read at the positions {start}:{stop} recorded at the"
                                  " traced sizes"))


def _placed_windows(node: Node) -> list[tuple[int, int, int]] | None:
    """Whether ``x[i_0, …, i_{n-1}]`` (a live ``x``, constant integer indices of one rank) reads each entry of ``x`` in
    place: ``i_k`` is ``arange`` of ``x``'s size along one axis of its own and 1 on the others (all zeros where that
    size is 1), those axes in the order of ``k`` — so the result is ``x`` with axes of size 1 inserted (exact).  An
    ``i_k`` that is ``arange(start, stop)`` inside ``x``'s size reads the slice ``start:stop`` of axis ``k`` in place
    (transformers' padding mask read at a sliding window's keys: ``mask[batch_idx, kv_idx]``, ``kv_idx = arange(4) +
    2``): those ``(k, start, stop)`` (none: every index reads its whole axis); None when it is not that."""
    x, indices = node.args[:2]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and isinstance(node.value, torch.Tensor)):
        return None
    if not indices or len(indices) > x.value.dim() or any(
            not (isinstance(i, Node) and not i.live and isinstance(i.value, torch.Tensor) and _integer(i.value)
                 and i.value.device.type != "meta") for i in indices):
        return None
    rank = indices[0].value.dim()
    last = -1
    windows: list[tuple[int, int, int]] = []
    want = [1] * rank
    for k, i in enumerate(indices):
        shape, size = tuple(int(s) for s in i.value.shape), int(x.value.shape[k])
        if len(shape) != rank:
            return None
        along = [a for a, s in enumerate(shape) if s != 1]
        if size == 1 and not along:
            if int(i.value.reshape(()).item()) != 0:
                return None
            continue
        if len(along) != 1 or along[0] <= last:
            return None
        n, values = shape[along[0]], i.value.reshape(-1).cpu()
        start = int(values[0])
        if not 0 <= start <= size - n or not torch.equal(values, torch.arange(start, start + n, dtype=values.dtype)):
            return None
        if n != size:
            windows.append((k, start, start + n))
        want[along[0]] = n
        last = along[0]
    if tuple(want) + tuple(int(s) for s in x.value.shape[len(indices):]) != tuple(int(s) for s in node.value.shape):
        return None
    return windows


def read_at(conv: Converter, node: Node, wraps: bool) -> None:
    """:func:`index`; a negative position counts from the end if ``wraps`` (``index_select`` raises on it instead)."""
    x, indices = node.args[:2]
    indices = _mask_positions(indices)
    live = [k for k, i in enumerate(indices) if isinstance(i, Node) and i.live]
    if not (isinstance(x, Node) and (x.live or live) and isinstance(x.value, torch.Tensor)
            and (x.value.is_floating_point() or _integer(x.value) or x.value.dtype == torch.bool)):
        raise Decline("not a float, integer or bool tensor")
    fixed = _fixed_positions(x, indices) if not live else None
    if fixed is None and (len(live) != 1 or live[0] != len(indices) - 1):
        raise Decline("not one index tensor, last")
    d = live[0] if fixed is None else fixed
    positions = indices[d]
    pshape = tuple(int(s) for s in positions.value.shape)
    if positions.value.dtype == torch.bool or not _integer(positions.value):
        raise Decline("a boolean mask")
    size = int(x.value.shape[d])
    if fixed is not None:  # a constant index (a relative-position table read at a buffer of positions): its values' range
        if int(positions.value.min()) < 0:  # counted from the end (Falcon's fused_qkv[..., [-2], :]): from the start
            positions = Node(f"{positions.name}_from_start", "constant", None, (), {}, value=positions.value % size,
                             stack=positions.stack, live=False, source=positions.source)
        conv.index_range[id(positions.value)] = size
    vx = conv.value(x)
    nx = conv.names(vx)
    diagonal = [k for k in range(d) if indices[k] is not None]
    rows = bool(diagonal) and _batched_rows(x, indices, diagonal, d, pshape)
    if diagonal and not rows and (len(diagonal) != 1 or len(pshape) != 1 or not _arange(indices[diagonal[0]], pshape[0])
                                  or int(x.value.shape[diagonal[0]]) != pshape[0]):
        raise Decline("indices other than arange before the index tensor")
    vi = conv.value(positions)
    seg = conv.segs[vi]
    if seg.range is None or int(seg.range) > size:
        raise Decline("positions without a known range")
    if rows:  # the positions' first wire is x's batch wire (woven), the others their own
        names = [nx[diagonal[0]]]
        for n in conv.names(vi)[1:]:
            while n in nx or n in names:
                n += PRIME
            names.append(n)
    elif diagonal:
        names = [nx[diagonal[0]]]
    else:
        names = []
        for n in conv.names(vi):
            while n in nx or n in names:
                n += PRIME
            names.append(n)
    vi = _retag(conv, vi, names, pshape, size)
    axis, held = conv.segs[vx].axes[d], conv.segs[vx]
    if held.dtype not in ("float", "index", "bool"):
        raise Decline(f"entries drawn as '{held}'")
    own = conv.segs[vi].axes[1:] if rows else conv.segs[vi].axes if not diagonal else ()
    # integers keep their range (LayoutLM's and Bros's box coordinates read at constant columns: ``bbox[:, :, [0, 1, 2, 1]]``)
    out = conv.apply(Box(GatherOp(axis, Segment(own, "index", axis.size), held.dtype, held.range, wraps=wraps)), [vx, vi])
    if rows:
        from ncd.trace.idioms_arithmetic import cross_back

        out = cross_back(conv, out, nx[:d] + names[1:] + nx[d + 1:])
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


def _batched_rows(x: Node, indices: list[Any], diagonal: list[int], d: int, pshape: tuple[int, ...]) -> bool:
    """Whether ``x[arange(n)[:, None], i]`` reads row ``r`` of ``x`` at the positions ``i[r]`` (Informer's
    ``query_states[torch.arange(b).unsqueeze(-1), top_u]``): one constant ``arange`` of ``x``'s first wire's size,
    as many wires as ``i`` with the others of size 1, at the wire just before ``i``'s (so the result keeps ``x``'s
    order: the rows, ``i``'s other wires, the wires after), and ``i``'s first wire of that size."""
    if len(diagonal) != 1 or diagonal[0] != d - 1 or len(pshape) < 2:
        return False
    rows = indices[diagonal[0]]
    n = int(x.value.shape[diagonal[0]])
    if not (isinstance(rows, Node) and not rows.live and isinstance(rows.value, torch.Tensor) and _integer(rows.value)
            and rows.value.device.type != "meta") or pshape[0] != n:
        return False
    if tuple(int(s) for s in rows.value.shape) != (n,) + (1,) * (len(pshape) - 1):
        return False
    return bool(torch.equal(rows.value.reshape(-1).cpu(), torch.arange(n, dtype=rows.value.dtype)))


def write_rows(conv: Converter, node: Node) -> bool:
    """``x[arange(n)[:, None], i] = s`` (``index_put`` without accumulation; Informer's ``context[arange(b)[:, None],
    top_u, :] = attn_output``): row ``r`` of ``x`` written at the positions ``i[r]`` with ``s[r]`` — a
    :class:`~ncd.prims.writes.ScatterWriteOp` along ``x``'s second wire, woven over the rows; False when it is not that."""
    from ncd.prims.writes import ScatterWriteOp

    x, indices, value = node.args[:3]
    accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
    if accumulate or not isinstance(indices, (list, tuple)) or len(indices) != 2 or any(i is None for i in indices):
        return False
    positions = indices[1]
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()
            and x.value.dim() >= 2 and isinstance(positions, Node) and isinstance(positions.value, torch.Tensor)
            and _integer(positions.value) and positions.value.device.type != "meta"
            and isinstance(value, Node) and isinstance(value.value, torch.Tensor) and value.value.dtype == x.value.dtype):
        return False
    pshape = tuple(int(s) for s in positions.value.shape)
    if not _batched_rows(x, list(indices), [0], 1, pshape) \
            or tuple(int(s) for s in value.value.shape) != pshape + tuple(int(s) for s in x.value.shape[2:]):
        return False
    size = int(x.value.shape[1])
    if not positions.live and int(positions.value.min()) < 0:  # counted from the end, as index_put counts: from the start
        positions = Node(f"{positions.name}_from_start", "constant", None, (), {}, value=positions.value % size,
                         stack=positions.stack, live=False, source=positions.source)
        conv.index_range[id(positions.value)] = size
    vx = conv.value(x)
    nx = conv.names(vx)
    vi = conv.value(positions)
    seg = conv.segs[vi]
    if seg.range is None or int(seg.range) > size:
        return False
    names = [nx[0]]
    for n in conv.names(vi)[1:]:
        while n in nx or n in names:
            n += PRIME
        names.append(n)
    vi = _retag(conv, vi, names, pshape, size)
    wires = names + nx[2:]
    shape = tuple(int(s) for s in value.value.shape)
    vs = conv.view(conv.value(value), wires, shape) if value.live else conv.value(value, wires)
    axis = conv.segs[vx].axes[1]
    out = conv.apply(Box(ScatterWriteOp(axis, Segment(conv.segs[vi].axes[1:], "index", axis.size))), [vx, vi, vs])
    if conv.names(out) != nx:
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)
    return True
