"""Copying a recorded layer's steps to a later layer proven to correspond (:mod:`ncd.trace.reuse`): its values' ids,
its bindings, the tensors its boxes hold, and, for a part of a layer, boxes of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq
from ncd.ir.repetition import Repeat
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
        conv.steps.append(Step(step.diagram, [vids[v] for v in step.ins], outs, stack))
    for p, vid in record.bound:
        conv.bind(ours[p], vids[vid])
    for node, vid in private:
        conv.bind(node, vids[vid])
    for p, j, vid in record.picked:
        conv._picked[(id(ours[p]), j)] = vids[vid]
    conv.skip |= {id(ours[p]) for p in record.skipped}
    conv.emitted.tensors.extend(tensors)
    conv.__dict__["_shared_steps"] = True  # (:func:`unshared` gives the places left of them their own)
    conv.index_range.update(ranges)
    for name, n in record.opaque.items():
        conv.emitted.opaque[name] = conv.emitted.opaque.get(name, 0) + n
    return True


#: the field holding the parts of each kind of node that has parts (a primitive's diagrams are found by type)
_PARTS: dict[type, str] = {Seq: "parts", Par: "parts", Block: "body", Repeat: "body", Weave: "inner"}


def unshared(diagram: Diagram) -> Diagram:
    """``diagram`` with every node at a second place of its own (:func:`_own`), the nodes above it made again: a copied
    layer's steps are the recorded layer's objects (equal: a run of copies folds into a repetition by identity, and
    what folds away is never copied); those left at two places of one page are drawn at each as the walk would make
    them.  The page layout keeps fragments by node: one object at two places was laid out once and placed twice, with
    one footprint id (T5's checker found the first norm's text spilling out of the second's box).  Identities are
    shared (they draw no box)."""
    seen: set[int] = set()

    def visit(node: Diagram) -> Diagram:
        kind = type(node)
        if kind is Identity:
            return node
        if id(node) in seen:
            return _own(node)  # type: ignore[no-any-return]
        seen.add(id(node))
        field = _PARTS.get(kind)
        if field is None:  # a box (its primitive's diagrams, a scan's body, are its own with it) or a node of no parts
            return node
        value = getattr(node, field)  # (a composition grown a part at a time joins its parts: kept in its fields)
        if field == "parts":
            parts = [visit(part) for part in value]
            if list(map(id, parts)) == list(map(id, value)):
                return node
            changed: Any = tuple(parts)
        else:
            changed = visit(value)
            if changed is value:
                return node
        new = object.__new__(kind)
        new.__dict__.update(node.__dict__)
        new.__dict__[field] = changed
        new.__dict__.pop("_tail", None)
        return new

    return visit(diagram)


def _own(diagram: Any) -> Any:
    """``diagram`` with nodes of its own (new objects, equal: their fields and kept values copied, without making their
    types again), down to its boxes and their primitives (a scan's body too).  Identities are shared."""
    kind = type(diagram)
    if kind is Identity:
        return diagram
    field = _PARTS.get(kind)
    if field is None and kind is not Box:
        return diagram  # (a node of a kind not known here: shared, as before)
    value: Any = getattr(diagram, field) if field is not None else None  # (joined first: a composition grown a part at a time)
    new = object.__new__(kind)
    new.__dict__.update(diagram.__dict__)
    if kind is Box:
        prim = diagram.prim
        if hasattr(prim, "__dict__"):
            own = object.__new__(type(prim))
            own.__dict__.update(prim.__dict__)
            for key, value in prim.__dict__.items():
                if isinstance(value, Diagram):
                    own.__dict__[key] = _own(value)
            new.__dict__["prim"] = own
    elif field == "parts":
        new.__dict__["parts"] = tuple([_own(part) for part in value])
        new.__dict__.pop("_tail", None)
    else:
        new.__dict__[field] = _own(value)
    return new


def _masks_read(conv: Converter, match: _Match) -> set[int] | None:
    """The values made before the walk that both layers' attentions read alike: the mask input as booleans
    (:func:`ncd.trace.attention_readings.prepare`), for corresponding attentions whose masks were read from one input with one
    structure; None if a pair of corresponding attentions reads its masks otherwise."""
    from ncd.trace.attention_readings import SDPA, _mask_arg, readings
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
                or rt.negated != rc.negated or rt.structure.shape != rc.structure.shape \
                or not torch.equal(rt.structure, rc.structure):
            return None
        vid = found.cast.get((id(rt.input), rt.negated))
        if vid is not None:
            shared.add(vid)
    return shared
