"""A recording on real values within a work budget (:data:`ncd.trace.record.WORK_BUDGET`) that goes on on the meta
device where the budget runs out, instead of starting again there.

Before, the attempt was thrown away at its first call over the budget and the model recorded again on meta from its
first call (pocket_tts_audio_tokenizer_encoder, mimi: at the 12th call on values of the inputs; hubert, wav2vec2: the
5th; 8-13 ms of pocket's ~100).  Now the recording turns into one on meta there, as if it had been on meta from its
start: every value of the inputs recorded so far becomes what a recording on meta holds of it (its node's value a meta
tensor of its sizes, strides and dtype; an input's and a discrete output's value kept, as on meta), and the model, which
holds the real tensors, is run on from there with each of them replaced by its meta tensor at every call that reads it
(:meth:`Switch.as_meta`).

It switches only where the calls before did nothing the two regimes record differently (:func:`refused`): no write
(a write is recorded otherwise on meta, and a batch norm's statistics are not updated there), no ``as_strided`` of a
value of the inputs, no custom autograd.Function or experts decided on values, no random draw, no discrete value
computed from floating-point values of the inputs (on meta: not computable, recorded on real values instead), no
``nn.MultiheadAttention`` (its fast paths read their arguments' values outside the recorder).  After it, a write into
a value recorded before it stops the recording (:func:`check_written`).  Where it does not switch, or the recording stops
after it, the model is recorded again on meta from its first call, as before."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.refusals import _OverBudget
from ncd.trace.tensors import _discrete

if TYPE_CHECKING:
    from ncd.trace.capture import Node
    from ncd.trace.recording import _Recording

#: whether a recording over its budget goes on on meta (``False``: recorded again on meta from its first call)
ON = True

#: modules whose forwards the recorder replaces with code reading their arguments outside it
#: (:func:`ncd.trace.mha.lean_attention`, :mod:`ncd.trace.fastpath`): they tell meta tensors from real ones themselves
_READ_OUTSIDE = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer, torch.nn.TransformerEncoder,
                 torch.nn.TransformerDecoderLayer, torch.nn.TransformerDecoder, torch.nn.Transformer)


def refused(rec: _Recording) -> str | None:
    """Why ``rec`` (over its budget, on real values) cannot go on on meta, or ``None``."""
    if rec.meta or rec.budget is None:
        return "not a recording on real values within a budget"
    if not rec.plain:
        return "a call recorded otherwise on meta"
    if rec.kernel or rec.inside or rec.pending or rec.derived or rec.stale or rec.twins or rec.own or rec.transformed:
        return "inside a call, or after a write"
    if rec.random or rec.drawing or rec.functions or rec.addressed:
        return "random draws, custom Functions or addresses read before"
    if any(isinstance(m, _READ_OUTSIDE) for _, m in rec.walk.modules):
        return "modules read outside the recorder"
    return None


def discrete_of_values(rec: _Recording, real_args: Any) -> bool:
    """Whether a call with a discrete result reads a value of the inputs that a recording on meta would not hold
    (:meth:`~ncd.trace.recording._Recording.real_values`: only the inputs' and discrete results' values are)."""
    from ncd.trace.capture import held_tensors

    for t in held_tensors(real_args):
        node = rec.by_id.get(id(t))
        if node is not None and node.live and not (
                node.kind == "input" or node.target is not operator.getitem and isinstance(node.value, torch.Tensor)
                and _discrete(node.value)):
            return True
    return False


def switch(rec: _Recording) -> bool:
    """Turn ``rec`` into a recording on meta (see the module's docstring); ``False`` where it cannot (nothing changed)."""
    if not ON or refused(rec) is not None:
        return False
    made: dict[int, torch.Tensor] = {}  # a real tensor's id -> its meta tensor
    bases: dict[int, torch.Tensor] = {}  # the meta tensor of a base no node holds (a kernel's own, viewed)
    found: list[tuple[Node, torch.Tensor]] = []
    with torch._C._DisablePythonDispatcher():
        for t in rec.keep:
            if not isinstance(t, torch.Tensor) or id(t) in made:
                continue
            node = rec.by_id.get(id(t))
            if node is None or not node.live:
                continue
            if t.device.type == "meta" or t.layout != torch.strided:
                return False
            m = _meta_of(t, node, made, bases)
            if m is None:
                return False
            made[id(t)] = m
            found.append((node, t))
    values: dict[int, Any] = {}  # a live node's id -> its value as on meta
    for node in rec.nodes:
        v = node.value
        if not node.live or node.kind == "input":
            continue
        if isinstance(v, torch.Tensor):
            if node.target is not operator.getitem and _discrete(v):
                continue  # (a discrete result: computed on meta too)
            if id(v) not in made:
                return False
            values[id(node)] = made[id(v)]
        elif isinstance(v, (tuple, list)) and not _discrete(v):
            if any(isinstance(i, torch.Tensor) and id(i) not in made for i in v):
                return False
            values[id(node)] = type(v)(made.get(id(i), i) if isinstance(i, torch.Tensor) else i for i in v)
    for node, t in found:
        m = made[id(t)]
        rec.by_id[id(m)] = node
        rec.keep.append(m)
        if node.kind == "input":  # its value kept, the model's tensor on meta (as :meth:`_Recording._input` makes them)
            rec.input_of[id(m)] = rec.input_of.get(id(t), node.source)
            rec.real[id(m)] = rec.real.get(id(t), node.value)
        elif id(node) not in values and node.value is t:  # a discrete result: its value, as on meta
            rec.real[id(m)] = t
    for node in rec.nodes:
        if id(node) in values:
            node.value = values[id(node)]
    rec.meta = True
    rec.budget = None
    rec.switched = made
    rec.meta_made = {id(m) for m in made.values()} | {id(m) for m in bases.values()}
    rec.keep.extend(bases.values())  # (their ids stay theirs)
    return True


def _meta_of(t: torch.Tensor, node: Node, made: dict[int, torch.Tensor],
             bases: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """The meta tensor standing for ``t`` from here on: its sizes, strides, offset and dtype, a view of its base's."""
    if node.kind == "input":
        return t.to("meta")
    base = t._base
    if base is None:
        if t.storage_offset():
            return None
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    mb = made.get(id(base))
    if mb is None:
        mb = bases.get(id(base))
        if mb is None:
            if base.storage_offset() or base.layout != torch.strided:
                return None
            mb = bases[id(base)] = torch.empty_strided(base.shape, base.stride(), dtype=base.dtype, device="meta")
    if mb.stride() != base.stride() or mb.dtype != t.dtype:
        return None
    return mb.as_strided(t.shape, t.stride(), t.storage_offset() - base.storage_offset() + mb.storage_offset())


def check_written(rec: _Recording, func: Any, into: Any, args: tuple[Any, ...]) -> None:
    """After the switch: a write of ``func`` into a value recorded before it (or a view of one) stops the recording
    (the recorder's views of it are real tensors; recorded again on meta from the start).  ``into``: the tensors it
    writes into, with their bases (:func:`~ncd.trace.undo.writes_of`); ``args``: a mutating operator's arguments."""
    written = [t for t, _ in into]
    if args and isinstance(args[0], torch.Tensor):
        written.append(args[0])
    for t in written:
        if id(t) in rec.meta_made or (t._base is not None and id(t._base) in rec.meta_made):
            raise _OverBudget(f"{func} writes into a value recorded before the switch to meta")


def as_meta(switched: dict[int, torch.Tensor], value: Any) -> Any:
    """``value`` with every tensor recorded before the switch replaced by its meta tensor."""
    kind = type(value)
    if kind is tuple:
        return tuple([as_meta(switched, v) for v in value])
    if kind is list:
        return [as_meta(switched, v) for v in value]
    if kind is dict:
        return {k: as_meta(switched, v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return switched.get(id(value), value)
    return value
