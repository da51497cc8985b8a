"""Conversion rules for selection entry by entry: ``where``, ``masked_fill`` and logic on boolean tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy
import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, op_name, rule

__all__: list[str] = []


# -- where / masked_fill: selection entry by entry -----------------------------------------------------
def _select(conv: Converter, node: Node, cond: Any, a: Any, b: Any) -> None:
    """``where(cond, a, b)`` as a :class:`WhereOp` box: a boolean tensor and two float operands (tensors of the output's
    dtype or numbers), broadcast by position as torch does."""
    from ncd.prims.selection import WhereOp

    out = node.value
    if not (isinstance(cond, Node) and isinstance(cond.value, torch.Tensor) and cond.value.dtype == torch.bool):
        raise Decline("the condition is not a boolean tensor")
    if isinstance(out, torch.Tensor) and not out.is_floating_point() and not out.is_complex() and out.dtype != torch.bool:
        _integer_select(conv, node, cond, a, b)
        return
    if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
        raise Decline("not a float selection")
    operands: list[Any] = [cond]
    for v in (a, b):
        if isinstance(v, Node) and isinstance(v.value, torch.Tensor):
            if v.value.dtype != out.dtype:
                raise Decline("a branch of another dtype")
            operands.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            operands.append(torch.tensor(float(v), dtype=out.dtype))
        elif isinstance(v, torch.Tensor) and v.dim() == 0:
            operands.append(v.to(out.dtype))
        else:
            raise Decline(f"a branch {type(v).__name__}")
    _broadcast(conv, node, Box(WhereOp()), operands)


def _integer_select(conv: Converter, node: Node, cond: Node, a: Any, b: Any) -> None:
    """``where(c, a, b)`` of integers (tensors or numbers; CPM-Ant's ``where(ids != 0, 2, 0)``, its buckets
    ``where(same_segment, absolute, relative)``) is ``a · c + b · ¬c``: exact on integers, checked to give torch's
    dtype and the recorded values."""
    from ncd.prims.arithmetic import ArithmeticOp
    from ncd.prims.integer import IndexArithmeticOp, combined_range
    from ncd.prims.selection import LogicOp
    from ncd.trace.idioms import cross_back, operand, out_names
    from ncd.trace.scalars import _number

    branches: list[Node | int] = []
    for v in (a, b):
        if isinstance(v, Node) and isinstance(v.value, torch.Tensor) and (v.live or v.value.dim()):
            if v.value.is_floating_point() or v.value.is_complex() or v.value.dtype == torch.bool:
                raise Decline("a branch that is not integers")
            branches.append(v)
            continue
        number = _number(v)
        if number is None or isinstance(number, bool) or isinstance(number, float) and not number.is_integer():
            raise Decline("a branch that is neither integers nor a whole number")
        branches.append(int(number))
    live = [v.value if isinstance(v, Node) else v for v in branches]
    c = cond.value
    expected = live[0] * c + live[1] * ~c
    if expected.dtype != node.value.dtype or not torch.equal(expected, node.value):
        raise Decline("a · c + b · ¬c is not torch's where here")
    names = out_names(conv, node, [cond, *branches])
    shape = tuple(int(s) for s in node.value.shape)
    flags = [operand(conv, cond, names, shape)]
    flags.append(conv.apply(Box(LogicOp("not")), [flags[0]]))
    condition = Segment((), "bool")
    terms: list[int] = []
    kinds: list[torch.Tensor] = []  # each term as the lowered module holds it: its dtype, 0-dim when it has no wires
    for v, flag in zip(branches, flags):
        if isinstance(v, Node):
            vid = operand(conv, v, names, shape)
            seg = conv.segs[vid]
            if seg.dtype != "index" or seg.range is None:
                raise Decline("a branch without a known range")
            scalar = Segment((), "index", seg.range)
            terms.append(conv.apply(Box(IndexArithmeticOp("*", scalar, condition, scalar)), [vid, flag]))
            kinds.append(torch.empty((1,) * bool(conv.segs[terms[-1]].axes), dtype=v.value.dtype))
        elif v:
            written = Segment((), "index", sympy.Integer(abs(v) + 1))
            terms.append(conv.apply(Box(ArithmeticOp("*", v, condition, written)), [flag]))
            kinds.append(torch.empty((1,) * bool(conv.segs[terms[-1]].axes), dtype=torch.int64))
    if not terms:
        raise Decline("zero on both branches")
    if len(kinds) == 2 and torch.result_type(*kinds) != node.value.dtype:  # (a 0-dim term does not promote the other)
        raise Decline("the terms' sum promotes otherwise than torch's where")
    out = terms[0]
    if len(terms) == 2:
        left, right = (Segment((), "index", conv.segs[t].range) for t in terms)
        # one term is 0 at every entry (its flag is c, the other's ¬c): the sum is the other term, within the larger
        # range (TimesFM's where(row_sum == 0, n - 1, argmax) stays positions of [n], not [2n - 1])
        lo, hi = left.range, right.range
        if lo is not None and hi is not None and lo.is_Integer and hi.is_Integer:
            total = Segment((), "index", lo if int(lo) >= int(hi) else hi)
        else:
            total = Segment((), "index", combined_range("+", left, right))
        out = conv.apply(Box(IndexArithmeticOp("+", left, right, total)), terms)
    conv.bind(node, cross_back(conv, out, names))


def _broadcast(conv: Converter, node: Node, box: Box | Callable[[list[Segment]], Box], operands: list[Any]) -> None:
    """``box`` (scalar domains) on ``operands`` broadcast by position as torch does, its wires in the output's order
    (``box`` may be made from the operands' converted segments)."""
    from ncd.trace.idioms import cross_back, operand, out_names
    from ncd.trace.idioms_arithmetic import promotes_alike

    if not any(isinstance(v, Node) and v.live for v in operands):
        raise Decline("nothing live")
    names = out_names(conv, node, operands)
    shape = tuple(int(s) for s in node.value.shape)
    vids = [operand(conv, v, names, shape, node.value.dtype) for v in operands]
    if not promotes_alike(conv, node, operands, vids):
        raise Decline("a tensor of size-1 dims promoting the result, lowered as a 0-dim one would not")
    if not isinstance(box, Box):
        box = box([conv.segs[v] for v in vids])
    conv.bind(node, cross_back(conv, conv.apply(box, vids), names))  # woven in the condition's order: crossed back


@rule("aten.where")
def where(conv: Converter, node: Node) -> None:
    """``torch.where(c, a, b)`` with a tensor or a number on either branch (``where(c)`` alone stays opaque); the
    branch selected everywhere by a constant ``c`` of one value (:func:`ncd.trace.idioms_fill.constant_fill`)."""
    from ncd.trace.idioms_fill import constant_fill

    if len(node.args) != 3:
        raise Decline("where(c): the positions")
    if not constant_fill(conv, node):
        _select(conv, node, *node.args)


@rule("aten.masked_fill")
def masked_fill(conv: Converter, node: Node) -> None:
    """``x.masked_fill(mask, v)`` is ``where(mask, v, x)``; on integers with a mask of their shape (Zaya's router
    ``indices.masked_fill(indices == e, 0)``) the where of :func:`_integer_where`, exact on integers; ``x`` itself by
    a constant mask all false (:func:`ncd.trace.idioms_fill.constant_fill`)."""
    from ncd.trace.idioms_fill import constant_fill
    from ncd.trace.scalars import _number

    x, mask, value = node.args[:3]
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor)) or x.value.is_floating_point():
        if not _causal(conv, node, x, mask, value) and not constant_fill(conv, node):
            _select(conv, node, mask, value, x)
        return
    if constant_fill(conv, node):
        return
    number = _number(value)
    if (number is None or x.value.is_complex() or x.value.dtype == torch.bool
            or isinstance(number, float) and not number.is_integer()):
        raise Decline("not a number written into integers")
    if not (isinstance(mask, Node) and isinstance(mask.value, torch.Tensor) and mask.value.dtype == torch.bool
            and mask.value.shape == x.value.shape):
        raise Decline("not a boolean mask of the integers' shape")
    if number != 0 and x.value.dtype != torch.long:
        raise Decline("a number written into integers of another width")
    _integer_where(conv, node, x, mask, int(number))


def _causal(conv: Converter, node: Node, x: Any, mask: Any, value: Any) -> bool:
    """``scores.masked_fill(mask, -inf)`` with a constant ``mask`` that is, on the scores' last two wires ``y x``
    (``|y| <= |x|``) and alike across the others, exactly the table above the diagonal ending at the last query and key
    (``~torch.ones(y, x).tril(x - y)``: a decoding step's queries after ``|x| - |y|`` cached keys; for ``|y| = |x|`` the
    causal mask) is that :class:`~ncd.prims.attention.CausalMaskOp`, whose lowering fills those very entries with
    ``-inf``: bound and ``True``, else ``False`` (nothing emitted).  The mask's entries are compared one by one."""
    from ncd.prims.attention import CausalMaskOp
    from ncd.trace.scalars import _number

    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()
            and isinstance(mask, Node) and not mask.live and isinstance(mask.value, torch.Tensor)
            and mask.value.dtype == torch.bool and mask.value.device.type != "meta" and x.value.device.type != "meta"):
        return False
    number = _number(value)
    m, shape = mask.value, tuple(int(n) for n in x.value.shape)
    if not (isinstance(number, float) and number == float("-inf")) or not 2 <= m.dim() <= len(shape) \
            or any(int(n) != 1 for n in m.shape[:-2]) or tuple(int(n) for n in m.shape[-2:]) != shape[-2:]:
        return False
    rows, cols = shape[-2:]
    blocked = torch.ones(rows, cols, dtype=torch.bool, device=m.device).triu(1 + cols - rows)
    if rows > cols or not torch.equal(m.reshape(rows, cols), blocked):
        return False
    if not _softmax_only(conv, node, len(shape)):
        return False
    vid = conv.value(x)
    axes = conv.segs[vid].axes
    if tuple(int(a.size) for a in axes) != shape or axes[-2].name == axes[-1].name:
        return False
    conv.bind(node, conv.apply(Box(CausalMaskOp(axes[-2], axes[-1], None, rows != cols)), [vid]))
    return True


_SOFTMAX = frozenset({"aten._softmax", "aten.softmax"})


def _softmax_only(conv: Converter, node: Node, rank: int) -> bool:
    """Whether the masked scores are read, and only by softmaxes over their last axis (attention's): a table masking
    what is read otherwise (a chunked linear attention's decays, exponentiated) is drawn as the selection it is."""
    readers = [n for n in conv.consumers.get(id(node), []) if n.kind == "call"]
    return bool(readers) and all(op_name(n.target)[0] in _SOFTMAX and len(n.args) > 1 and isinstance(n.args[1], int)
                                 and n.args[1] % rank == rank - 1 for n in readers)


_LOGIC = {"bitwise_not": "not", "logical_not": "not", "__and__": "and", "bitwise_and": "and", "logical_and": "and",
          "__or__": "or", "bitwise_or": "or", "logical_or": "or", "__xor__": "xor", "bitwise_xor": "xor", "logical_xor": "xor"}


@rule(*(f"aten.{name}" for name in _LOGIC))
def logic(conv: Converter, node: Node) -> None:
    """``~m``, ``m & n``, ``m | n``, ``m ^ n`` (and the ``logical_*`` forms) on boolean tensors."""
    from ncd.prims.selection import LOGIC, LogicOp

    operator = _LOGIC[node.target.name().split("::")[1].split(".")[0]]
    operands = list(node.args[:LOGIC[operator][0]])
    if isinstance(node.value, torch.Tensor) and node.value.dtype != torch.bool and operator in ("and", "or"):
        _integer_flags(conv, node, operator, operands)
        return
    if (not isinstance(node.value, torch.Tensor) or node.value.dtype != torch.bool or node.kwargs
            or any(not (isinstance(v, Node) and isinstance(v.value, torch.Tensor) and v.value.dtype == torch.bool)
                   for v in operands)):
        raise Decline("not boolean tensors")
    _broadcast(conv, node, Box(LogicOp(operator)), operands)  # type: ignore[arg-type]


def _integer_flags(conv: Converter, node: Node, operator: str, operands: list[Any]) -> None:
    """``m & n`` (``m | n``) where an operand is integers holding flags (entries in ``[0, 2)``: CPM-Ant's int32
    attention mask ``mask_1d & attention_mask``) and the other bools or such integers: ``m · n`` (``max(m, n)``),
    exact on 0 and 1, checked to give torch's dtype and the recorded values."""
    from ncd.prims.integer import IndexArithmeticOp

    flags = []
    for v in operands:
        if not (isinstance(v, Node) and isinstance(v.value, torch.Tensor) and (v.live or v.value.dim())):
            raise Decline("not two tensors")
        if v.value.is_floating_point() or v.value.is_complex():
            raise Decline("float operands")
        flags.append(v)
    a, b = (v.value for v in flags)
    if bool(((a != 0) & (a != 1)).any()) or bool(((b != 0) & (b != 1)).any()):
        raise Decline("entries other than 0 and 1")
    expected = a * b if operator == "and" else torch.maximum(a, b)
    if expected.dtype != node.value.dtype or not torch.equal(expected, node.value):
        raise Decline("the product (maximum) is not torch's result here")
    segments: list[Segment] = []

    def box(segs: list[Segment]) -> Box:
        for seg in segs:
            if seg.dtype == "index" and (seg.range is None or int(seg.range) > 2) or seg.dtype not in ("index", "bool"):
                raise Decline(f"an operand '{seg}' that is not flags")
            segments.append(Segment((), seg.dtype, seg.range))
        return Box(IndexArithmeticOp("*" if operator == "and" else "max", segments[0], segments[1],
                                     Segment((), "index", sympy.Integer(2))))

    _broadcast(conv, node, box, flags)


@rule("aten.index_put")
def index_put(conv: Converter, node: Node) -> None:
    """``x[mask] = v`` (``index_put`` with one boolean mask, no accumulation) is ``where(mask, v, x)`` when the mask is
    ``x``'s shape or a leading part of it (rows: T5Gemma2's ``embeddings[ids == eoi] = eoi_embedding``) and ``v`` a
    number or a tensor each selected entry or row takes whole (broadcast to the row, as ``index_put`` does); on
    integers (a vision-language model's ``llm_input_ids[image_mask] = 0``) the where is ``x · ¬mask + v · mask`` (the
    boxes of :class:`~ncd.prims.integer.IndexArithmeticOp`), exact on integers."""
    from ncd.trace.scalars import _number

    x, indices, value = node.args[:3]
    accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
    if accumulate or not isinstance(indices, (list, tuple)) or not indices or any(i is not None for i in indices[:-1]):
        from ncd.trace.indexing import write_rows

        if write_rows(conv, node):  # rows written each at its own positions
            return
        raise Decline("not one mask, written without accumulation")
    lead, mask = len(indices) - 1, indices[-1]  # x[:, :, mask] = v: the mask on the wires after `lead` full ones
    if not (isinstance(x, Node) and isinstance(x.value, torch.Tensor)
            and isinstance(mask, Node) and isinstance(mask.value, torch.Tensor) and mask.value.dtype == torch.bool):
        raise Decline("not a boolean mask of a tensor")
    shape, rows = tuple(x.value.shape), tuple(mask.value.shape)
    if shape[lead:lead + len(rows)] != rows:
        raise Decline(f"a mask of shape {list(rows)} on a tensor of shape {list(shape)} after {lead} full axes")
    row = shape[lead + len(rows):]
    number = _number(value)
    if lead:  # the selected entries of each leading position, all set to one number: where(mask[None, ...], v, x)
        if number is None or not x.value.is_floating_point():
            raise Decline("a mask after full axes, written with a tensor or into integers")
        _select(conv, node, _widened(conv, node, mask, len(row), lead), number, x)
        return
    if number is None and not (isinstance(value, Node) and isinstance(value.value, torch.Tensor)
                               and value.value.dim() <= len(row) and _broadcasts(tuple(value.value.shape), row)):
        raise Decline("a value that is not a number or one row for every selected position")
    if x.value.is_floating_point():
        _select(conv, node, _widened(conv, node, mask, len(row)), number if number is not None else value, x)
        return
    if number is None or row:
        raise Decline("integers written from a tensor or by rows")
    if x.value.is_complex() or x.value.dtype == torch.bool or isinstance(number, float) and not number.is_integer():
        raise Decline("not integers")
    if number != 0 and x.value.dtype != torch.long:
        raise Decline("a number written into integers of another width")  # x * ~m + v * m would widen them
    _integer_where(conv, node, x, mask, int(number))


def _broadcasts(shape: tuple[int, ...], to: tuple[int, ...]) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, to)) == to  # type: ignore[no-untyped-call]
    except RuntimeError:
        return False


def _widened(conv: Converter, node: Node, mask: Node, k: int, lead: int = 0) -> Node:
    """``mask`` read with ``k`` trailing size-1 wires (a mask of rows, broadcast over each row's entries) and ``lead``
    leading ones (a mask of the wires after ``lead`` full ones, broadcast over them)."""
    if not k and not lead:
        return mask
    value = mask.value.reshape((1,) * lead + tuple(mask.value.shape) + (1,) * k)
    widened = Node(f"{mask.name}_rows", "call" if mask.live else "constant", None, (), {}, value=value,
                   stack=node.stack, live=mask.live, source=mask.source)
    if mask.live:
        vid = conv.value(mask)
        names = ["1"] * lead + conv.names(vid) + ["1"] * k
        conv.bind(widened, conv.view(vid, names, tuple(int(n) for n in value.shape)))
    return widened


def _integer_where(conv: Converter, node: Node, x: Node, mask: Node, number: int) -> None:
    from ncd.prims.arithmetic import ArithmeticOp
    from ncd.prims.integer import IndexArithmeticOp, combined_range
    from ncd.prims.selection import LogicOp

    vx, vm = conv.value(x), conv.value(mask)
    seg, condition = conv.segs[vx], Segment((), "bool")
    if seg.dtype != "index" or list(conv.names(vm)) != list(seg.names):
        raise Decline("the mask's wires are not the tensor's")
    scalar = Segment((), "index", seg.range)
    kept = conv.apply(Box(LogicOp("not")), [vm])
    out = conv.apply(Box(IndexArithmeticOp("*", scalar, condition, scalar)), [vx, kept])
    if number:
        written = Segment((), "index", sympy.Integer(abs(number) + 1))
        filled = conv.apply(Box(ArithmeticOp("*", number, condition, written)), [vm])
        total = combined_range("+", scalar, written)
        out = conv.apply(Box(IndexArithmeticOp("+", scalar, written, Segment((), "index", total))), [out, filled])
    if list(conv.names(out)) != list(seg.names):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


def _flags_product(conv: Converter, node: Node) -> bool:
    """``m * n`` of two boolean tensors (a bool, as torch gives it: Mask2Former's ``attention_mask * where``) is
    ``m & n``, exactly; other products go on to the arithmetic rules."""
    from ncd.prims.selection import LogicOp

    operands = list(node.args[:2])
    if len(operands) != 2 or node.kwargs or not (isinstance(node.value, torch.Tensor) and node.value.dtype == torch.bool) \
            or any(not (isinstance(v, Node) and isinstance(v.value, torch.Tensor) and v.value.dtype == torch.bool)
                   for v in operands):
        return False
    _broadcast(conv, node, Box(LogicOp("and")), operands)
    return True


hook(("aten.mul",), _flags_product)
