"""Conversion rules for repeats, extrema and indexing: ``repeat``, ``repeat_interleave``, ``maximum``/``minimum``,
``unbind``, ``max``/``min`` along an axis, ``clamp`` by tensors.
"""

from __future__ import annotations

import math

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.trace.boxes import _dims, _live_ranked, _positions_axis, _used
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, rule
from ncd.trace.naming import PRIME, kept_units

__all__: list[str] = []


# -- repeat along size-1 wires: a broadcast copy -----------------------------------------------------
@rule("aten.repeat")
def repeat(conv: Converter, node: Node) -> None:
    """``x.repeat(...)`` that only repeats size-1 (or new leading) wires is ``x.expand(...)`` copied: the same entries."""
    from ncd.trace.attention import expand

    x, counts = node.args[:2]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not a live tensor")
    counts = [int(c) for c in counts]
    shape = [1] * (len(counts) - x.value.dim()) + [int(s) for s in x.value.shape]
    if len(shape) != len(counts):
        raise Decline("fewer counts than wires")
    if any(c != 1 and s != 1 for c, s in zip(counts, shape)):
        _tile(conv, node, x, counts)
        return
    expand(conv, node)


@rule("aten.tile")
def tile(conv: Converter, node: Node) -> None:
    """``x.tile(reps)``: ``x.repeat(reps)`` with ``reps`` padded on the left by ones to ``x``'s wires."""
    x, counts = node.args[:2]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not a live tensor")
    counts = [1] * (x.value.dim() - len(counts)) + [int(c) for c in counts]
    if len(counts) != x.value.dim():
        raise Decline("more counts than wires")
    if all(c == 1 for c in counts):
        conv.bind(node, conv.value(x))
        return
    _tile(conv, node, x, counts)


def _tile(conv: Converter, node: Node, x: Node, counts: list[int]) -> None:
    """``x`` repeated ``counts[k]`` times along each wire ``k`` (counts for new leading wires first, the wires of
    several entries among them): a broadcast copy onto a new wire before each repeated one, then the two merged
    (``c·n + i``); a repeated wire of size 1, or a new one, is broadcast onto a wire of ``c`` entries (Autoformer's
    ``w.view(-1, 1, 1).repeat(h, t, c)``: the batch tiled, the two others broadcast)."""
    from ncd.prims.derivative import ExpandOp
    from ncd.trace.idioms import regroup

    vid = conv.value(x)
    seg = conv.segs[vid]
    names = list(conv.names(vid))
    shape = [int(a.size) for a in seg.axes]
    lead = len(counts) - len(shape)
    if lead < 0 or any(c < 1 for c in counts):
        raise Decline("fewer counts than wires, or a count below one")
    kept = [(name, n) for name, n, c in zip(names, shape, counts[lead:]) if not (n == 1 and c != 1)]
    wires: list[str] = []
    sizes: list[int] = []
    taken = set(names)
    for k, c in enumerate(counts):
        name, n = (names[k - lead], shape[k - lead]) if k >= lead else (None, 1)
        if c != 1:
            copy = conv.namer.fresh(c)
            while copy in taken:
                copy += PRIME
            taken.add(copy)
            wires.append(copy)
            sizes.append(c)
        if name is not None and not (n == 1 and c != 1):
            wires.append(name)
            sizes.append(n)
    shape_out = tuple(int(s) for s in node.value.shape)
    if shape_out != tuple(([1] * lead + shape)[k] * c for k, c in enumerate(counts)):
        raise Decline("the tiles come out in another shape")
    bound = None if seg.range is None else int(seg.range)
    src = conv.view(vid, [name for name, _ in kept], tuple(n for _, n in kept))
    target = conv.namer.segment(wires, tuple(sizes), seg.dtype, bound)
    (copied,) = conv.emit(Box(ExpandOp(conv.segs[src], target)), [src], [target])
    conv.bind(node, conv.view(copied, regroup(conv, wires, tuple(sizes), shape_out), shape_out))


@rule("aten.repeat_interleave")
def repeat_interleave(conv: Converter, node: Node) -> None:
    """``x.repeat_interleave(r, dim)`` with a whole number ``r``: each entry copied ``r`` times in place — a broadcast copy
    onto a new wire ``r`` right after ``dim``, then the two wires merged (``i·r + k``), as ``unsqueeze``/``expand``/
    ``flatten`` compute it."""
    from ncd.prims.derivative import ExpandOp
    from ncd.trace.idioms import regroup

    x, repeats = node.args[:2]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not a live tensor")
    if isinstance(repeats, Node) or isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise Decline("repeats given per entry")
    if dim is None and x.value.dim() != 1:
        raise Decline("a repeat of every entry, flattened")
    vid = conv.value(x)
    seg = conv.segs[vid]
    names = list(conv.names(vid))
    d = 0 if dim is None else int(dim) % len(names)
    if repeats == 1:
        conv.bind(node, vid)
        return
    copy = conv.namer.fresh(repeats)
    while copy in names:
        copy += PRIME
    shape = [int(a.size) for a in seg.axes]
    wires, sizes = names[:d + 1] + [copy] + names[d + 1:], shape[:d + 1] + [repeats] + shape[d + 1:]
    target = conv.namer.segment(wires, tuple(sizes), seg.dtype, None if seg.range is None else int(seg.range))
    (copied,) = conv.emit(Box(ExpandOp(seg, target)), [vid], [target])
    shape_out = tuple(int(s) for s in node.value.shape)
    conv.bind(node, conv.view(copied, regroup(conv, wires, tuple(sizes), shape_out), shape_out))



# -- the larger or smaller of two tensors ------------------------------------------------------------------------------
@rule("aten.maximum", "aten.minimum")
def extremum(conv: Converter, node: Node) -> None:
    """``torch.maximum(a, b)`` / ``torch.minimum(a, b)`` of two float tensors (broadcast by position, as torch does)."""
    from ncd.prims.extremum import ExtremumOp
    from ncd.trace.idioms import bind_product, operand, out_names

    a, b = node.args[:2]
    tensors = [v for v in (a, b) if isinstance(v, Node) and isinstance(v.value, torch.Tensor)]
    if (len(tensors) != 2 or not any(v.live for v in tensors) or not node.value.is_floating_point()
            or any(v.value.dtype != node.value.dtype for v in tensors)):
        raise Decline("not two float tensors of one dtype")
    names = out_names(conv, node, [a, b])
    shape = tuple(int(s) for s in node.value.shape)
    va, vb = operand(conv, a, names, shape), operand(conv, b, names, shape)
    smaller = node.target.name().split("::")[1].split(".")[0] in ("minimum", "min")  # torch.min(a, b): min.other
    bind_product(conv, node, ExtremumOp(smaller), va, vb, names)


@rule("aten.unbind")
def unbind(conv: Converter, node: Node) -> None:
    """``x.unbind(dim)``: the pieces read (``q, k, v = qkv.unbind(0)``), each the entry at its index along ``dim``; the
    pieces of indices stay indices of the same range (``for i, codes in enumerate(stacked_codes)``: EnCodec's decode)."""
    import sympy

    from ncd.prims.movement import IndexOp

    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)) or not isinstance(dim, int):
        raise Decline("not a live tensor")
    vid = conv.value(x)
    seg = conv.segs[vid]
    d = dim % len(seg.axes)
    for k in sorted({c.args[1] for c in conv.consumers.get(id(node), []) if "getitem" in str(c.target)}):
        conv._picked[(id(node), k)] = conv.apply(Box(IndexOp(seg.axes[d], sympy.Integer(int(k)), seg.dtype, seg.range)), [vid])


@rule("aten.max", "aten.min")
def extreme_along(conv: Converter, node: Node) -> None:
    """``x.max(dim, keepdim)`` (``min``): the largest (smallest) entry along ``dim`` — a top-1 with its unit wire
    dropped — and, when read, its position (an argmax of ``x`` or ``−x``: the first on ties, as torch gives it)."""
    import sympy

    from ncd.prims.elementwise import ScaleOp
    from ncd.prims.gather import ArgMaxOp

    if getattr(node.target, "_overloadname", "") == "other":  # torch.max(a, b): the larger of two tensors
        extremum(conv, node)
        return
    if getattr(node.target, "_overloadname", "") == "default" and len(node.args) == 1 and not node.kwargs:
        extreme_over(conv, node)  # x.max(): the amax of every entry (torch shares a tie's gradient evenly, as amax)
        return
    if getattr(node.target, "_overloadname", "") != "dim" or not isinstance(node.value, (tuple, list)):
        raise Decline("the extreme of every entry, or of two tensors")
    largest = "max" in node.target.name().split("::")[1]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    vid = _live_ranked(conv, node.args[0])
    seg = conv.segs[vid]
    (d,) = _dims(conv, vid, dim)
    names = kept_units(seg.names, [d]) if keep else \
        [a.name for k, a in enumerate(seg.axes) if k != d]
    used = _used(conv, node)
    if 0 in used:
        top = _top1(conv, vid, d, largest, "first")
        conv._picked[(id(node), 0)] = conv.view(top, names, tuple(int(s) for s in node.value[0].shape))
    if 1 in used:
        source = vid
        if not largest:
            if seg.dtype != "float":
                raise Decline("the position of the smallest index")
            source = conv.apply(Box(ScaleOp(sympy.Integer(-1))), [vid])
        at = conv.apply(Box(ArgMaxOp(Segment((seg.axes[d],), seg.dtype, seg.range))), [source])
        conv._picked[(id(node), 1)] = conv.view(at, names, tuple(int(s) for s in node.value[1].shape))


def _top1(conv: Converter, vid: int, d: int, largest: bool, ties: str) -> int:
    """The largest (smallest) entry of ``vid`` along its axis ``d``: a top-1 with its unit wire and positions dropped,
    its gradient at ties as the recorded call gives it (``ties``: ``"first"`` for ``max(dim)``, ``"even"`` for amax)."""
    from ncd.ir.compose import fit
    from ncd.ir.diagram import Identity, Par
    from ncd.prims.ranking import TopKOp
    from ncd.prims.structure import DeleteOp

    seg = conv.segs[vid]
    box = Box(TopKOp(seg.axes[d], _positions_axis(conv, seg, d, 1), largest, seg.dtype, seg.range, ties=ties))
    woven, mapping = fit(box, Type((seg,)))
    if mapping:
        raise Decline(f"sizes would need unifying: {mapping}")
    values, positions = woven.cod
    (top,) = conv.emit(woven >> Par.of(Identity(Type((values,))), Box(DeleteOp(Type((positions,))))), [vid], [values])
    return top


@rule("aten.amax", "aten.amin")
def extreme_over(conv: Converter, node: Node) -> None:
    """``x.amax(dim, keepdim)`` (``amin``): the largest (smallest) entry along one axis, a top-1 lowered as that amax
    (its gradient shared evenly among ties); over several adjacent axes, one amax of them read as one axis.  Over axes
    apart, a transpose first brings them together behind the others (not a maximum of maxima: that has the value but
    not the gradient, each row's ties would share theirs before the rows do)."""
    largest = node.target.name().split("::")[1] in ("amax", "max")  # (x.max() of every entry comes here too)
    given = dict(zip(("dim", "keepdim"), node.args[1:])) | dict(node.kwargs)
    dims, keep = given.get("dim", ()), bool(given.get("keepdim", False))
    vid = _live_ranked(conv, node.args[0])
    seg = conv.segs[vid]
    picked = sorted(_dims(conv, vid, dims)) if dims not in ((), [], None) else list(range(len(seg.axes)))
    if not picked:
        raise Decline("the extreme of a number")
    if len(picked) > 1 and seg.dtype == "float":  # several axes read as one: one amax, as recorded
        shape = tuple(int(s) for s in node.args[0].value.shape)
        names, together = list(seg.names), picked
        if picked != list(range(picked[0], picked[-1] + 1)):  # axes apart: moved behind the others, in their order
            from ncd.prims.structure import TransposeOp

            perm = [d for d in range(len(shape)) if d not in picked] + picked
            box = Box(TransposeOp(seg, tuple(perm)))
            (vid,) = conv.emit(box, [vid], list(box.cod))
            shape, names = tuple(shape[d] for d in perm), [names[d] for d in perm]
            together = list(range(len(shape) - len(picked), len(shape)))
        lo, hi = together[0], together[-1] + 1
        n = math.prod(shape[lo:hi])
        merged = conv.namer.fresh(n, None, "feature", tuple(names[lo:hi]))
        vid = conv.view(vid, names[:lo] + [merged] + names[hi:], shape[:lo] + (n,) + shape[hi:])
        vid = _top1(conv, vid, lo, largest, "even")
    else:
        for d in reversed(picked):  # the later axes first (of indices: no gradient): the earlier keep their positions
            vid = _top1(conv, vid, d, largest, "even")
    names = kept_units(seg.names, picked) if keep else \
        [a.name for k, a in enumerate(seg.axes) if k not in picked]
    conv.bind(node, conv.view(vid, names, tuple(int(s) for s in node.value.shape)))


@rule("aten.argmin")
def argmin(conv: Converter, node: Node) -> None:
    """``x.argmin(dim, keepdim)`` of a float tensor: the argmax of ``−x`` (the first on ties, as torch gives it)."""
    _arg_extreme(conv, node, largest=False)


def _arg_extreme(conv: Converter, node: Node, largest: bool) -> None:
    """argmax / argmin along ``dim`` (``keepdim``), or over every entry (the tensor read as one wire, flattened)."""
    import sympy

    from ncd.prims.elementwise import ScaleOp
    from ncd.prims.gather import ArgMaxOp

    given = dict(zip(("dim", "keepdim"), node.args[1:])) | dict(node.kwargs)
    dim, keep = given.get("dim"), bool(given.get("keepdim", False))
    vid = _live_ranked(conv, node.args[0])
    seg = conv.segs[vid]
    if not seg.axes:
        raise Decline("the position in a number")
    if dim is None:  # over every entry: one wire of all of them
        n = int(node.args[0].value.numel())
        if len(seg.axes) > 1:
            vid = conv.view(vid, [conv.namer.fresh(n, None, "feature", tuple(seg.names))], (n,))
        d = 0
    else:
        (d,) = _dims(conv, vid, dim)
    if not largest:
        if conv.segs[vid].dtype != "float":
            raise Decline("the position of the smallest index")
        vid = conv.apply(Box(ScaleOp(sympy.Integer(-1))), [vid])
    seg_now = conv.segs[vid]
    at = conv.apply(Box(ArgMaxOp(Segment((seg_now.axes[d],), seg_now.dtype, seg_now.range))), [vid])
    if dim is None:
        names = ["1"] * len(seg.axes) if keep else []
    else:
        names = kept_units(seg.names, [d]) if keep else \
            [a.name for k, a in enumerate(seg.axes) if k != d]
    conv.bind(node, conv.view(at, names, tuple(int(s) for s in node.value.shape)))


def _unbounding(conv: Converter, bound: Node, smaller: bool) -> bool:
    """Whether ``bound`` is a constant (no input's, no parameter's: a buffer, a number tensor) of one entry, ``-inf``
    as the lower bound of a clamp or ``inf`` as its upper (``smaller``): no value passes it, so the clamp does not
    have it (Gemma 4's ``ClippableLinear`` holds ``±inf`` buffers until a checkpoint sets them).  The constant is
    the diagram's, as a ``Constant`` box's is: the exact identity for every input, whatever its values."""
    value = bound.value
    if bound.live or conv.learned(bound) or value.numel() != 1 or value.device.type == "meta":
        return False
    return bool(value.reshape(()).item() == (math.inf if smaller else -math.inf))


def _hook_clamp() -> None:
    """``torch.clamp(x, min, max)`` with tensor bounds (``clamp.Tensor``) beside the rule for numbers: one clamp box
    of the three when both bounds are tensors (whatever wires ``x`` lacks: a chain gave ``x < lo = hi``'s gradient to
    ``lo``, torch's clamp to nobody), else the larger of ``x`` and ``min`` or the smaller of ``x`` and ``max``."""
    import ncd.trace.scalars  # noqa: F401  (the rule for numbers registers first; this one wraps it)

    def clamp_by_tensors(conv: Converter, node: Node) -> bool:
        if not any(isinstance(v, Node) for v in list(node.args[1:3]) + [node.kwargs.get("min"), node.kwargs.get("max")]):
            return False
        from ncd.prims.extremum import ClampOp, ExtremumOp
        from ncd.trace.idioms import operand, out_names
        from ncd.trace.idioms_arithmetic import cross_back

        args = list(node.args) + [None, None]
        x = args[0]
        lo, hi = node.kwargs.get("min", args[1]), node.kwargs.get("max", args[2])
        bounds = [(smaller, v) for smaller, v in ((False, lo), (True, hi)) if v is not None]
        if not all(isinstance(v, Node) and isinstance(v.value, torch.Tensor) for _, v in bounds) or not bounds:
            raise Decline("clamp by a number and a tensor")
        if isinstance(x, Node) and x.live and x.value.is_floating_point() and node.value.dtype == x.value.dtype:
            # a number held in a 0-dim tensor of another type (T5's float32 bounds on float16 values): torch's clamp
            # reads it in the result's type, as the bound rounded to it is (not a learned bound: its gradient)
            bounds = [(smaller, Node(v.name, "constant", value=v.value.to(x.value.dtype))
                       if not v.live and v.value.dim() == 0 and v.value.dtype != x.value.dtype
                       and v.value.device.type != "meta" and not conv.learned(v) else v) for smaller, v in bounds]
        tensors = [x] + [v for _, v in bounds]
        if not (isinstance(x, Node) and x.live and node.value.is_floating_point()) or any(
                v.value.dtype != node.value.dtype for v in tensors):
            raise Decline("not float tensors of one dtype")
        if tuple(x.value.shape) == tuple(node.value.shape):  # a constant bound of -inf below or inf above: no bound
            bounds = [(smaller, v) for smaller, v in bounds if not _unbounding(conv, v, smaller)]
            tensors = [x] + [v for _, v in bounds]
        names = out_names(conv, node, tensors)
        shape = tuple(int(s) for s in node.value.shape)
        vid = operand(conv, x, names, shape)
        if len(bounds) == 2:  # one clamp: its gradient is no chain's (x < lo = hi)
            vid = conv.apply(Box(ClampOp()), [vid] + [operand(conv, v, names, shape) for _, v in bounds])
            bounds = []
        for smaller, bound in bounds:
            vb = operand(conv, bound, names, shape)
            # clamp gives a tie's gradient to the clamped tensor, as the lowering's clamp does (maximum would halve it)
            first, second, ties = (vid, vb, "first") if len(conv.segs[vid].axes) >= len(conv.segs[vb].axes) \
                else (vb, vid, "second")
            vid = conv.apply(Box(ExtremumOp(smaller, ties)), [first, second])
        conv.bind(node, cross_back(conv, vid, names))  # (an x lacking the leading wires: woven after them)
        return True

    hook(("aten.clamp", "aten.clip"), clamp_by_tensors)


_hook_clamp()


@rule("aten.index_select")
def index_select(conv: Converter, node: Node) -> None:
    """``x.index_select(dim, i)`` with a 1-d ``i`` is ``x[:, .., :, i]`` (``dim`` full slices first): read by the rule
    of ``aten.index`` (a gather along ``dim`` at live positions of a known range, or at constant positions)."""
    from ncd.trace.capture import Node as Recorded
    from ncd.trace.indexing import read_at

    x, dim, positions = node.args[:3]
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor) and isinstance(positions, Node)
            and (x.live or positions.live) and isinstance(positions.value, torch.Tensor) and positions.value.dim() == 1):
        raise Decline("not a tensor read at a 1-d index")
    d = int(dim) % x.value.dim()
    as_index = Recorded(node.name, "call", torch.ops.aten.index.Tensor, (x, [None] * d + [positions]), {}, node.value,
                        node.stack, node.source, node.live, node.line)
    read_at(conv, as_index, wraps=False)  # index_select raises on a negative position
    conv.bind(node, conv.values[id(as_index)])
    conv.forget(as_index)  # made for this call, read by no other node
