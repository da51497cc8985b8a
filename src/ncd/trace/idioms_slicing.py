"""Conversion rules for slicing and joining: ``split``/``chunk``, ``slice``, ``narrow``, ``select``, ``cat``, ``stack``.

A slice is a :class:`~ncd.prims.movement.SliceOp` on one named axis (:func:`emit_slice`; a slice of a fused
projection's queries, keys and values names its part after the config), a concatenation a
:class:`~ncd.prims.movement.ConcatOp` of the parts (``stack``: each read with a new size-1 wire).
"""

from __future__ import annotations

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, Axis, Type
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, apart, rule
from ncd.trace.idioms_linear import _fused_projection
from ncd.trace.idioms_wires import _live, _shape, _tensor, note
from ncd.trace.naming import PRIME, noted

__all__ = ["emit_slice", "split", "slice_", "narrow", "concat", "stack", "select", "as_strided_scatter", "slice_scatter",
           "put_region"]


def _slice_role(conv: Converter, size: int, kept: int, item: bool) -> str | None:
    """The role of a slice of a fused projection (queries, keys and values of ``size``): head features ``k`` for a
    key's or a value's part when the config gives ``kept`` that role (multi-query attention; a head's own fused
    ``q k v``, GPT-NeoX's ``3k``), else none."""
    config = conv.namer.config
    per_head = size in (2 * kept, 3 * kept) and "k" in config.get(kept, ())
    if item or not (per_head or _fused_projection(config, size)) or "m" in config.get(kept, ()):
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
    if not axis.is_item and kept > 1:  # a part of the wire: a concat of its parts is the wire again (rotary halves)
        conv.__dict__.setdefault("_sliced", {}).setdefault(name.rstrip(PRIME), (axis.name.rstrip(PRIME), n))
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
    if node.sized and start == 0 and step == 1 and (stop is None or stop >= n):  # ``x[:, :t]``: the whole wire, a
        conv.sized_drawn.add(id(node))  # bound its size (not held: check_node)
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


def _as_float(conv: Converter, vid: int, node: Node) -> int:
    """``vid`` read as the floats of ``node``: integers in a range or flags (a segment of kind index or bool) cast as
    torch's type promotion casts them in a concat of floats."""
    from ncd.ir.axes import Segment
    from ncd.prims.gather import CastOp
    from ncd.trace.indexing import _width

    seg = conv.segs[vid]
    if seg.dtype == "float":
        return vid
    return conv.apply(Box(CastOp(Segment((), seg.dtype, seg.range), SCALAR, _width(node.value))), [vid])


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
    if node.value.is_floating_point() and len({conv.segs[v].dtype for v in vids}) > 1 \
            and all(t.value.dtype == node.value.dtype or not (t.value.is_floating_point() or t.value.is_complex())
                    for t in tensors):
        # integers or flags among floats (TimesFM's integer pads beside its patches): torch promotes them to the
        # result's floats, a cast box here
        vids = [_as_float(conv, v, node) for v in vids]
    axes = tuple(conv.segs[v].axes[dim] for v in vids)
    if len({conv.segs[v].dtype for v in vids}) != 1:
        raise Decline("concat of tensors holding different kinds of values: "
                      + ", ".join(f"'{conv.segs[v]}'" for v in vids))
    try:
        kind = joined_range(conv.segs[vids[0]].dtype, tuple(conv.segs[v].range for v in vids), "concat")
    except ParseError as error:
        raise Decline(str(error)) from None
    parents = {noted(conv.namer, note, conv, "_sliced", a.name.rstrip(PRIME)) for a in axes}
    parent = parents.pop() if len(parents) == 1 else None
    if parent is not None and parent[1] == out_shape[dim] \
            and noted(conv.namer, conv.namer.size_of.get, parent[0]) == parent[1]:
        name = parent[0]  # the parts of one wire joined again (a rotation's halves): that wire
    else:
        name = conv.namer.fresh(out_shape[dim], None, "item" if axes[0].is_item or axes[-1].is_item else "feature")
    name = apart(name, set(template) - {template[dim]})
    box = Box(ConcatOp(axes, conv.namer.axis(name, out_shape[dim]), SCALAR, SCALAR, *kind))
    dom = Type(tuple(conv.segs[v] for v in vids))
    from ncd.ir.compose import fit

    woven, mapping = fit(box, dom)
    if mapping or list(woven.cod[0].names) != template[:dim] + [name] + template[dim + 1:]:
        raise Decline("concat does not weave")
    (vid,) = conv.emit(woven, vids, list(woven.cod))
    conv.bind(node, vid)


@rule("aten.stack")
def stack(conv: Converter, node: Node) -> None:
    """``stack`` is a concatenation of the tensors, each read with a new size-1 wire (``▮``) at ``dim``; the stack of
    one tensor (EnCodec's one audio frame) is that tensor read with the new wire."""
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if len(tensors) == 1 and _live(tensors[0]) and _tensor(tensors[0]):
        vid = conv.value(tensors[0])
        names = conv.names(vid)
        dim %= len(_shape(node))
        conv.bind(node, conv.view(vid, names[:dim] + ["1"] + names[dim:], _shape(node)))
        return
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
    conv.forget(*parts, joined)


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


def put_region(shape: tuple[int, ...], size: list[int], stride: list[int],
               offset: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int | None, ...]] | None:
    """The region ``as_strided(size, stride, offset)`` of a contiguous tensor of ``shape`` is, when it is one (per dim:
    a start, a step and the region's length there, None for one entry, dropped; the region's dims in the tensor's
    order): read back and checked to give exactly those arguments; else None."""
    n = len(shape)
    contiguous = [1] * n
    for d in range(n - 2, -1, -1):
        contiguous[d] = contiguous[d + 1] * shape[d + 1]
    starts, rest = [0] * n, offset
    for d in range(n):
        if shape[d] > 1:
            starts[d] = min(rest // contiguous[d], shape[d] - 1)
            rest -= starts[d] * contiguous[d]
    if rest:
        return None
    steps, lengths = [1] * n, [None] * n  # type: list[int], list[int | None]
    d = 0
    for length, st in zip(size, stride):
        while d < n and not (st % contiguous[d] == 0 and st // contiguous[d] >= 1 and length > 1
                             and starts[d] + st // contiguous[d] * (length - 1) < shape[d]):
            d += 1
        if d == n:
            return None
        steps[d], lengths[d] = st // contiguous[d], length
        d += 1
    kept = [k for k in range(n) if lengths[k] is not None]
    if [lengths[k] for k in kept] != list(size) or [steps[k] * contiguous[k] for k in kept] != list(stride) \
            or sum(s * c for s, c in zip(starts, contiguous)) != offset:
        return None
    return tuple(starts), tuple(steps), tuple(lengths)


@rule("aten.as_strided_scatter")
def as_strided_scatter(conv: Converter, node: Node) -> None:
    """``x`` with a region written (:func:`ncd.trace.writes.write_back` records a write through a view so): one
    :class:`~ncd.prims.writes.PutOp`, when the region is ranges and entries of a contiguous ``x`` in its order."""
    x, v = node.args[0], node.args[1]
    size, stride = list(node.args[2]), list(node.args[3])
    offset = node.args[4] if len(node.args) > 4 else node.kwargs.get("storage_offset", 0)
    if not (_tensor(x) and _tensor(v)) or not x.value.is_floating_point() or v.value.dtype != x.value.dtype \
            or not x.value.is_contiguous() \
            or not isinstance(offset, int) or not all(isinstance(s, int) for s in size + stride):
        raise Decline("a region of numbers of one dtype, of a tensor laid out contiguously (the region's strides are"
                      " read against that layout)")
    found = put_region(tuple(int(s) for s in x.value.shape), size, stride, offset)
    if found is None or tuple(int(s) for s in v.value.shape) != tuple(size):
        raise Decline("not a region of ranges and entries in the tensor's order")
    _put(conv, node, x, v, *found)


@rule("aten.slice_scatter", "aten.select_scatter")
def slice_scatter(conv: Converter, node: Node) -> None:
    """``x.slice_scatter(v, dim, start, end, step)`` / ``x.select_scatter(v, dim, index)`` (``torch.export``'s form of a
    write through a view, ``s[:, 1:3] = s[:, 2:4]``): one :class:`~ncd.prims.writes.PutOp`."""
    x, v = node.args[0], node.args[1]
    if not (_tensor(x) and _tensor(v)) or not x.value.is_floating_point() or v.value.dtype != x.value.dtype:
        raise Decline("a region of numbers of one dtype")
    shape = tuple(int(s) for s in x.value.shape)
    n = len(shape)
    names = ("dim", "start", "end", "step") if "slice" in str(node.target) else ("dim", "index")
    args = dict(zip(names, node.args[2:]))
    args.update({k: val for k, val in node.kwargs.items() if k in names})
    dim = args.get("dim", 0)
    if not isinstance(dim, int) or not n:
        raise Decline("no dimension")
    dim %= n
    starts, steps, lengths = [0] * n, [1] * n, list(shape)  # type: list[int], list[int], list[int | None]
    if "index" in names:
        index = args.get("index")
        if not isinstance(index, int) or not -shape[dim] <= index < shape[dim]:
            raise Decline("no index")
        starts[dim], lengths[dim] = index % shape[dim], None
    else:
        step = args.get("step", 1)
        start, end = args.get("start"), args.get("end")
        if not isinstance(step, int) or step < 1 or not all(b is None or isinstance(b, int) for b in (start, end)):
            raise Decline("bounds that are not whole numbers")
        kept = range(shape[dim])[slice(start, end, step)]
        if not len(kept):
            raise Decline("an empty region")
        starts[dim], steps[dim], lengths[dim] = kept.start, step, len(kept)
    if tuple(int(s) for s in v.value.shape) != tuple(length for length in lengths if length is not None):
        raise Decline("a source of another shape")
    _put(conv, node, x, v, tuple(starts), tuple(steps), tuple(lengths))


def _put(conv: Converter, node: Node, x: Node, v: Node, starts: tuple[int, ...], steps: tuple[int, ...],
         lengths: tuple[int | None, ...]) -> None:
    """``node`` as one put box: ``x`` with its region (per dim: a start, a step and a length, None for one entry)
    written with ``v`` (the region's shape, its dims in ``x``'s order)."""
    import sympy

    from ncd.prims.writes import PutOp

    size = [length for length in lengths if length is not None]
    vx = conv.value(x)
    seg = conv.segs[vx]
    if seg.dtype != "float":
        raise Decline("not numbers")
    vv = conv.value(v)
    names = list(conv.names(vv))
    kept = [d for d in range(len(lengths)) if lengths[d] is not None]
    for j, d in enumerate(kept):
        if starts[d] == 0 and steps[d] == 1 and lengths[d] == int(seg.axes[d].size):
            names[j] = seg.axes[d].name  # the whole axis: x's wire
    for j, d in enumerate(kept):
        if names[j] != seg.axes[d].name:
            names[j] = apart(names[j], set(names[:j]) | set(names[j + 1:]))
    vv = conv.view(vv, names, tuple(size))
    vseg = conv.segs[vv]
    outputs: list[Axis | None] = [None] * len(lengths)
    for j, d in enumerate(kept):
        outputs[d] = seg.axes[d] if vseg.axes[j].name == seg.axes[d].name else vseg.axes[j]
    prim = PutOp(seg.axes, tuple(sympy.Integer(s) for s in starts), tuple(sympy.Integer(s) for s in steps),
                 tuple(outputs))
    out = conv.apply(Box(prim), [vx, vv])
    if conv.names(out) != conv.names(vx):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)
