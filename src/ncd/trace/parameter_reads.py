"""How the converter reads a parameter (:mod:`ncd.trace.learned`): the operators that only view or copy it (a
parameter read through them is still the parameter, folded into the learned box that uses it), the argument positions
that are a learned box's own tensors, the views of a parameter's memory (:func:`_view_chain`), a table read at its
first rows (:func:`_reads_first_rows`), and which numbers are boxes of their own (:func:`number_box`)."""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.capture import Node, refs
from ncd.trace.registry import op_name

#: Roles a parameter's wire is named after when the config gives its size that role alone (:meth:`Converter._named`)
PARAMETER_ROLES = frozenset({"h", "g", "k", "e"})


#: Operators that only view their operand (no entry computed, none repeated): a parameter read through them is still
#: the parameter, folded into the learned box that uses it.
VIEWS = frozenset({
    "aten.t", "aten.transpose", "aten.permute", "aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze",
    "aten.squeeze", "aten.flatten", "aten.unflatten", "aten.contiguous", "aten.clone", "aten.alias",
    "aten.to", "aten._to_copy", "aten.lift_fresh_copy", "aten.numpy_T", "aten.type_as", "aten.view_as", "aten.reshape_as",
    "aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout",
    # pieces that partition the parameter (``in_proj_weight.split([e, 2 e])``): each piece is a weight of its own
    "aten.split", "aten.split_with_sizes", "aten.unsafe_split", "aten.chunk", "aten.unbind", "operator.getitem",
})

#: Argument positions that are a learned box's own tensors (its weight, bias, statistics): a parameter there stays the
#: parameter node (the rule folds it into the box), whatever the other operands are.
WEIGHTS: dict[str, tuple[int, ...]] = {
    "aten.embedding": (0,), "aten.linear": (1, 2), "aten.addmm": (0, 2), "aten.mm": (1,), "aten.matmul": (1,),
    "aten.convolution": (1, 2), "aten.conv1d": (1, 2), "aten.conv2d": (1, 2), "aten.conv3d": (1, 2),
    "aten.conv_transpose1d": (1, 2), "aten.conv_transpose2d": (1, 2), "aten.conv_transpose3d": (1, 2),
    "aten.layer_norm": (2, 3), "aten.native_layer_norm": (2, 3), "aten.group_norm": (2, 3), "aten.rms_norm": (2,),
    "aten.batch_norm": (1, 2, 3, 4), "aten.native_batch_norm": (1, 2, 3, 4),
    "aten._native_batch_norm_legit_no_training": (1, 2, 3, 4), "aten.instance_norm": (1, 2, 3, 4),
    "aten.prelu": (1,),
}


#: operators that copy their operand's entries as they are (no type change: :func:`_uncopied`)
_COPIES = frozenset({"aten.clone", "aten.contiguous", "aten.lift_fresh_copy", "aten.alias", "aten._to_copy",
                     "aten.to"})


#: operators that view their operand's memory (:func:`_view_chain` takes them of the parameter itself)
_VIEWS = frozenset({"aten.t", "aten.transpose", "aten.permute", "aten.numpy_T", "aten.unsqueeze", "aten.squeeze",
                    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.flatten", "aten.unflatten"})


def _detached(node: Node) -> bool:
    """Whether ``node`` is ``w.detach()`` of floats: no view of the parameter (it takes no gradient), a wire through a
    stop-gradient box (:func:`ncd.trace.idioms_wires.alias`)."""
    return op_name(node.target)[0] == "aten.detach" and isinstance(node.value, torch.Tensor) \
        and node.value.is_floating_point()


def _uncopied(node: Node, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a folded view or copy of a parameter: ``node``'s) as the view of the parameter's own memory that holds
    the same entries, where the chain from the parameter is views and copies of no other type (``w.T.contiguous()``:
    ``w.T``); else ``value`` itself.  The lowered module's parameters are tied by memory
    (:func:`ncd.trace.params.tie`): a copy read beside its parameter (``x @ w.T.contiguous() + x @ w``) was a
    second parameter of the lowered module, trained apart from the first (twice the model's entries, with no word)."""
    found = _view_chain(node, 8)
    if found is None or found.shape != value.shape or found.dtype != value.dtype or found.data_ptr() == value.data_ptr() \
            or not torch.equal(found, value):
        return value
    return found


def _view_chain(node: Node, depth: int) -> torch.Tensor | None:
    """The parameter ``node`` is a chain of views and same-type copies of, through those views only (None if not)."""
    if node.kind == "parameter":
        return node.value if isinstance(node.value, torch.Tensor) else None
    if depth == 0 or node.kind != "call" or node.live or not isinstance(node.value, torch.Tensor) \
            or node.value.device.type == "meta":
        return None
    name = op_name(node.target)[0]
    sources = [r for r in refs((node.args, node.kwargs))]
    if len(sources) != 1 or not isinstance(node.args[0], Node) or node.args[0] is not sources[0]:
        return None
    base = _view_chain(sources[0], depth - 1)
    if base is None:
        return None
    if name in _COPIES:
        return base if base.dtype == node.value.dtype and base.shape == node.value.shape else None
    if name not in _VIEWS:
        return None
    try:
        viewed = node.target(base, *node.args[1:], **node.kwargs)
    except Exception:  # noqa: BLE001 - a view that cannot be taken of the parameter itself: the value stays as it is
        return None
    if not isinstance(viewed, torch.Tensor) or viewed.untyped_storage().data_ptr() != base.untyped_storage().data_ptr():
        return None
    return viewed


#: operators that only pick entries of their operand, of which a chain from a table can read its first rows
_PICKS = _COPIES | _VIEWS | frozenset({"aten.embedding", "aten.index_select", "aten.slice", "aten.narrow", "aten.select",
                                      "aten.index", "aten.expand"})


def _reads_first_rows(node: Node, table: torch.Tensor, n: int) -> bool:
    """Whether ``node`` (equal to the first ``n`` rows of ``table``, leading size-1 axes aside) reads those rows: a
    write into the table itself (``w.data.clamp_(-c, c)``: the table holds the result), or a chain of operators that
    only pick entries (:data:`_PICKS`) that picks them on a table of distinct entries in its place too.  Equal
    values alone are no proof: ``w.clamp(-100, 100)`` of a table inside the bounds, ``L * tril + eye`` of a unit
    triangular ``L``, or rows 9..5 of a table of zeros read as rows 0..4 gave the lowered module a constant, or other
    rows, in place of the model's computation on the table (its gradient lost or misplaced, with no word)."""
    value = node.value
    if value.untyped_storage().data_ptr() == table.untyped_storage().data_ptr():
        return True
    probe = torch.arange(table.numel(), dtype=torch.int64).reshape(table.shape)
    memo: dict[int, bool] = {}

    def reads(ref: Node) -> bool:  # whether ref's value is computed from the table (else it is its own value)
        if id(ref) not in memo:
            memo[id(ref)] = ref.kind == "parameter" or (ref.kind == "call" and not ref.live and any(
                reads(r) for r in refs((ref.args, ref.kwargs))))
        return memo[id(ref)]

    def picked(ref: Any) -> Any:
        if isinstance(ref, (list, tuple)):
            return type(ref)(picked(r) for r in ref)
        if isinstance(ref, dict):
            return {k: picked(v) for k, v in ref.items()}
        if not isinstance(ref, Node):
            return ref
        if ref.kind == "parameter":
            return probe
        if not reads(ref):
            return ref.value
        if op_name(ref.target)[0] not in _PICKS:
            raise _NotPicked
        return ref.target(*picked(ref.args), **picked(ref.kwargs))

    try:
        got = picked(node)
    except Exception:  # noqa: BLE001 - not a pick, or one the probe's type does not take: not proved
        return False
    if not isinstance(got, torch.Tensor) or got.numel() != value.numel():
        return False
    return torch.equal(got.reshape(-1), probe[:n].reshape(-1))


class _NotPicked(Exception):
    """An operator that computes entries, met reading a table's rows on a probe."""


def _recast(node: Node) -> bool:
    """Whether ``node`` casts a floating parameter (or a value computed from parameters) to another floating type
    (``w.float()`` of a float64 or bfloat16 ``w``): folded, its value was a constant of the lowered module, which the
    model's parameter trains through the cast (no gradient reached it, with no word); wired, it is the parameter's box
    and a cast box."""
    if not isinstance(node.value, torch.Tensor) or not node.value.is_floating_point():
        return False
    source = node.args[0] if node.args else None
    return isinstance(source, Node) and isinstance(source.value, torch.Tensor) \
        and source.value.is_floating_point() and source.value.dtype != node.value.dtype


def _read_as_data(node: Node, keep: tuple[int, ...]) -> list[Node]:
    """The nodes ``node`` reads other than as a learned box's own tensors (its arguments at ``keep``)."""
    return refs((tuple(a for k, a in enumerate(node.args) if k not in keep), node.kwargs))


def _tensors_in(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple)) and any(
        isinstance(v, torch.Tensor) for v in value))


def _buffer_of(node: Node, depth: int = 8) -> str:
    """The state-dict name of the buffer (or parameter) a constant is read from (``token_type_ids`` expanded and
    gathered), else ``""``."""
    for _ in range(depth):
        if node.source:
            return node.source
        tensors = [r for r in refs(node.args) if isinstance(r.value, torch.Tensor)]
        if node.kind != "call" or not tensors:
            return ""
        node = tensors[0]  # the data operand (a gather's source, not its index)
    return ""


def number_box(tensor: torch.Tensor) -> bool:
    """Whether a one-entry tensor is drawn and lowered as its number (:class:`~ncd.prims.opaque.ConstantOp`'s ``value``, a
    float): a real one whose entry that float holds exactly (NaN too; not an integer beyond 2**53, which would lower as
    another integer)."""
    if tensor.device.type == "meta" or tensor.is_complex():
        return False
    v = tensor.item()
    return float(v) == v or v != v
