"""Copying a recorded layer's steps to a later layer proven to correspond (:mod:`ncd.trace.reuse`): its values' ids,
its bindings, the tensors its boxes hold, and, for a part of a layer, boxes of its own."""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.weave import Weave
from ncd.trace.capture import Node
from ncd.trace.naming import frozen
from ncd.trace.reuse_match import _Match, _tensors

if TYPE_CHECKING:
    from ncd.trace.convert import Converter
    from ncd.trace.reuse import Repeats, _Record, _Span


def copy_steps(repeats: Repeats, record: _Record, span: _Span) -> bool:
    """Give ``span`` copies of ``record``'s steps if its nodes correspond to the recorded layer's; else False."""
    conv = repeats.conv
    if span.end - span.start != record.span.end - record.span.start:
        return False  # (as the match would tell, before asking the reads again)
    for fn, args, answer in record.reads:  # the namer and the notes read as they were: this layer's walk reads so
        if frozen(fn(*args)) != answer:
            return False
    match = _Match(conv, repeats.marked, repeats.emitters, record, span)
    if not match.run():
        return False
    ours = conv.captured.nodes[span.start:span.end]
    private = []
    for node, vid in record.private:
        counterpart = match.outside.get(id(node))
        if counterpart is None or id(counterpart) in conv.values or not repeats._private(counterpart, match.at_ours):
            return False
        private.append((counterpart, vid))
    # the values the recorded steps read from before the layer: the corresponding values here
    vids: dict[int, int] = {}
    for t, c in match.pairs():
        if id(t) in record.before:
            mine = conv.values.get(id(c))
            old = record.before[id(t)]
            if mine is None or vids.setdefault(old, mine) != mine or conv.segs[mine] != conv.segs[old]:
                return False  # (the copied steps take the recorded layer's wires: ours must be those)
    before_walk = _masks_read(conv, match)
    if before_walk is None:
        return False
    for step in record.steps:
        for v in step.ins:
            if v < record.first and v not in vids:
                if v not in before_walk:
                    return False
                vids[v] = v  # the mask input as booleans, made once before every layer: ours reads it too
    tensors = match.tensors(record.tensors)
    if tensors is None:
        return False
    ranges = []
    if record.ranges:
        mapped = {id(x): y for t, c in zip(match.theirs, match.ours) for x, y in zip(_tensors(t.value), _tensors(c.value))}
        for x, n in record.ranges:
            y = mapped.get(id(x))
            if y is None or conv.index_range.get(id(y), n) != n:
                return False
            ranges.append((id(y), n))
    frames = match.frames
    from ncd.trace.wiring import Step

    for step in record.steps:
        outs = []
        for v in step.outs:
            outs.append(conv.new_value(conv.segs[v]))
            vids[v] = outs[-1]
        stack = tuple(frames.get(f, f) for f in step.stack)
        diagram = _own(step.diagram) if span.within else step.diagram
        conv.steps.append(Step(diagram, [vids[v] for v in step.ins], outs, stack))
    for p, vid in record.bound:
        conv.bind(ours[p], vids[vid])
    for node, vid in private:
        conv.bind(node, vids[vid])
    for p, j, vid in record.picked:
        conv._picked[(id(ours[p]), j)] = vids[vid]
    conv.skip |= {id(ours[p]) for p in record.skipped}
    conv.emitted.tensors.extend(tensors)
    conv.index_range.update(ranges)
    for name, n in record.opaque.items():
        conv.emitted.opaque[name] = conv.emitted.opaque.get(name, 0) + n
    return True


def _own(diagram: Any) -> Any:
    """``diagram`` with boxes of its own (new objects, equal): a copied part's step is drawn at a place of its own, as
    the walk would make it.  The template's objects at two places of one page were laid out once (the page layout keeps
    columns by node) and placed twice, one footprint id at both places: T5's checker found the first norm's text
    spilling out of the second's box.  Identities are shared (they draw no box)."""
    kind = type(diagram)
    if kind is Box or kind is Weave:  # (a copy of its fields and kept values, without making its types again)
        new = object.__new__(kind)
        new.__dict__.update(diagram.__dict__)
        if kind is Box:
            prim = diagram.prim
            if hasattr(prim, "__dict__"):
                own = object.__new__(type(prim))
                own.__dict__.update(prim.__dict__)
                new.__dict__["prim"] = own
        else:
            new.__dict__["inner"] = _own(diagram.inner)
        return new
    if isinstance(diagram, Identity) or not is_dataclass(diagram):
        return diagram
    try:
        changes: dict[str, Any] = {}
        for f in fields(diagram):
            if not f.init:
                continue
            value = getattr(diagram, f.name)
            if isinstance(value, Diagram):
                changes[f.name] = _own(value)
            elif isinstance(value, tuple) and value and all(isinstance(v, Diagram) for v in value):
                changes[f.name] = tuple(_own(v) for v in value)
        return replace(diagram, **changes)  # type: ignore[type-var]
    except (TypeError, ValueError):  # (a node that cannot be made again so: shared, as before)
        return diagram


def _masks_read(conv: Converter, match: _Match) -> set[int] | None:
    """The values made before the walk that both layers' attentions read alike: the mask input as booleans
    (:func:`ncd.trace.attention.prepare`), for corresponding attentions whose masks were read from one input with one
    structure; None if a pair of corresponding attentions reads its masks otherwise."""
    from ncd.trace.attention import SDPA, _mask_arg, readings
    from ncd.trace.convert import op_name

    found = readings(conv)
    if not found.masks:
        return set()
    shared = set()
    for t, c in zip(match.theirs, match.ours):
        if t.kind != "call" or op_name(t.target)[0] != SDPA:
            continue
        mt, mc = _mask_arg(t), _mask_arg(c)
        rt = found.masks.get(id(mt)) if isinstance(mt, Node) else None
        rc = found.masks.get(id(mc)) if isinstance(mc, Node) else None
        if rt is None and rc is None:
            continue
        if rt is None or rc is None or rt.input is not rc.input or (id(mt) in found.skipped) != (id(mc) in found.skipped) \
                or rt.structure.shape != rc.structure.shape or not torch.equal(rt.structure, rc.structure):
            return None
        vid = found.cast.get(id(rt.input))
        if vid is not None:
            shared.add(vid)
    return shared
