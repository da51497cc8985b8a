"""Repeated layers converted once: a layer proven identical to one converted before it takes that layer's steps.

A model's layers (``encoder.layer.0``, ``encoder.layer.1``, …: the children of one module list, of one class) record
the same operations.  :class:`Repeats` watches the :class:`~ncd.trace.convert.Converter`'s walk: the first layer of
each class under a parent is converted as usual, and what its conversion did is kept (the steps it emitted, the values
it bound, the tensors it handed to boxes).  A later layer whose recorded operations correspond one to one — the same
operators with the same arguments, the same module structure, values of the same shapes and dtypes (constants equal),
parameters of the same relative names, read by the same kinds of operations, and the same idiom marks — gets copies of
those steps over its own values and parameters instead of its own walk.  Whatever does not correspond, or a first
layer whose conversion reached outside itself (it bound or skipped operations of other layers, or failed), is
converted as usual: sharing changes the speed, never the diagram.

A first layer's walk reads state that grows as the walk goes on: the namer's names and the converter's notes (the splits
and merges of reshapes, the wholes of slices, the sizes a scale is read as).  While it is walked, each such read is
logged with its answer (:attr:`~ncd.trace.naming.Namer.reads`: :func:`~ncd.trace.idioms_wires.regroup` and the scale's
name as whole calls, asked again without writing; the notes' and names' single reads).  A later layer is a copy only
where every logged read, asked again when it comes, answers the same: its walk would read what the first one read, and
write nothing the first did not (the notes are only ever added to, with the same entries).  The live copies of
parameters only the layer reads (:meth:`~ncd.trace.learned.Learned._wire_learned_chains`) and the index ranges its walk
gives its own values are given to the later layer's counterparts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.weave import Weave
from ncd.trace.capture import Node
from ncd.trace.module_idioms import whole
from ncd.trace.naming import frozen

if TYPE_CHECKING:
    from ncd.trace.convert import Converter
    from ncd.trace.wiring import Step

__all__ = ["Repeats", "ENABLED"]

#: Whether repeated layers share one conversion (off: every layer is walked; the diagrams are the same).
ENABLED = True

#: Layers smaller than this many recorded nodes are walked: matching them costs about what it saves.
SMALLEST = 8

#: Whether the parts of a layer that does not correspond as a whole (its child modules, theirs in turn) are matched on
#: their own: a layer of full attention after one of sliding attention still copies the first one's MLP.
SUBMODULES = True

#: How many layers walked (of one class, under one parent) a later one is matched against, the latest first: the
#: kinds of layers a model alternates (sliding and global attention, linear and full).
KINDS = 3

Frame = tuple[str, str]


@dataclass
class _Span:
    start: int  # index of the layer's first node in ``captured.nodes``
    end: int  # one past its last node
    depth: int  # its frame's depth in the module stacks
    frame: Frame  # (path, class)
    within: tuple[Frame, ...] = ()  # the frames of the modules calling it (its nodes' stacks above ``depth``)


@dataclass
class _Record:
    """What converting a layer did (taken from the converter's state before and after its walk)."""

    span: _Span
    steps: list[Step]
    first: int  # first value id the layer made
    last: int  # last value id it made
    before: dict[int, int]  # the converter's bindings when the layer's walk began
    bound: list[tuple[int, int]]  # (position in the span, value id) of the nodes it bound
    picked: list[tuple[int, int, int]]  # (position of the source node, output index, value id)
    skipped: list[int]  # positions of the nodes it marked skipped
    skip: set[int]  # the nodes marked skipped when its walk began
    tensors: list[list[torch.Tensor]]
    opaque: dict[str, int]
    reads: list[tuple[Any, tuple[Any, ...], Any]]  # what its walk read of the namer and the notes (``Namer.reads``)
    private: list[tuple[Node, int]]  # (node, value id) of the live parameter copies only this layer reads, bound
    ranges_before: dict[int, int]  # the converter's index ranges when its walk began
    ranges: list[tuple[torch.Tensor, int]]  # the ranges its walk gave its nodes' values


def _layers(nodes: list[Node]) -> list[_Span]:
    """Every module call whose path ends in a number (a module list's child), outermost first where they nest."""
    spans: dict[tuple[int, Frame], _Span] = {}
    order: list[tuple[int, Frame]] = []
    for k, node in enumerate(nodes):
        if node.kind != "call":
            continue
        for depth, frame in enumerate(node.stack):
            if not frame[0].rpartition(".")[2].isdigit():
                continue
            key = (depth, frame)
            span = spans.get(key)
            if span is None:
                spans[key] = _Span(k, k + 1, depth, frame)
                order.append(key)
            else:
                span.end = k + 1
    for span in spans.values():  # the parameters and constants its first call reads were recorded just before it
        while span.start > 0 and nodes[span.start - 1].kind in ("parameter", "constant"):
            span.start -= 1
    return [spans[key] for key in order]


class Repeats:
    """Plans, per layer, whether it is a first layer (recorded) or a later one (copied where it corresponds)."""

    def __init__(self, conv: Converter, rotary: dict[int, Any], emitters: dict[int, Any]) -> None:
        self.conv = conv
        self.marked = set(rotary)  # rotary embeddings read before the walk: the same nodes marked in both layers
        self.emitters = set(emitters)  # idioms emitted by functions prepared for their nodes (experts): walked
        self.starts: dict[int, list[_Span]] = {}  # the layers (and their parts) starting at a node, outermost first
        self.group: dict[int, tuple[Any, ...]] = {}  # id(span) -> (depth, parent path, class) or a part's key
        #: id(span) -> (the path of the layer it is or is a part of, and "."; the key its parts' keys extend)
        self.prefix: dict[int, tuple[str, tuple[Any, ...]]] = {}
        self.through: set[int] = set()  # id(span) of parts only walked through (holding prepared idioms)
        #: per key, the layers walked last (a span until its walk ends, then what it did), the latest first
        self.templates: dict[tuple[Any, ...], list[_Record | _Span]] = {}
        self.open: list[tuple[_Span, tuple[Any, ...]]] = []  # first layers being walked, with the state they began in
        if not ENABLED or not conv.captured.nodes:
            return
        import logging

        from ncd.trace.convert import LOG

        if LOG.isEnabledFor(logging.DEBUG):  # every node's own walk is reported
            return
        nodes = conv.captured.nodes
        covered = -1
        for span in _layers(nodes):
            if span.start < covered or span.end - span.start < SMALLEST:
                continue  # inside a layer already planned (its own layers are walked or copied with it)
            if any(n.kind == "call" and (len(n.stack) <= span.depth or n.stack[span.depth] != span.frame)
                   for n in nodes[span.start:span.end]):
                continue  # not one contiguous call
            self.starts.setdefault(span.start, []).append(span)
            self.group[id(span)] = key = (span.depth, span.frame[0].rpartition(".")[0], span.frame[1])
            self.prefix[id(span)] = (span.frame[0] + ".", key[:2])  # its parts: of any class of layer there
            covered = span.end

    def _parts(self, span: _Span) -> None:
        """Plan the child modules of ``span`` (each one contiguous call of at least :data:`SMALLEST` nodes), keyed by
        their path within the layer and their class: when ``span`` is walked, for the later layers it is a part of."""
        prefix, key = self.prefix[id(span)]
        nodes = self.conv.captured.nodes
        depth = span.depth + 1
        parts: dict[Frame, _Span] = {}
        for k in range(span.start, span.end):
            node = nodes[k]
            if node.kind != "call" or len(node.stack) <= depth:
                continue
            frame = node.stack[depth]
            part = parts.get(frame)
            if part is None:
                parts[frame] = _Span(k, k + 1, depth, frame, node.stack[:depth])
            else:
                part.end = k + 1
        for frame, part in parts.items():
            while part.start > span.start and nodes[part.start - 1].kind in ("parameter", "constant"):
                part.start -= 1
            if part.end - part.start < SMALLEST or not frame[0].startswith(prefix) \
                    or any(whole(cls) for _, cls in part.within):
                continue  # (inside a module that may be drawn as one box, decided at its first call: walked)
            if any(n.kind == "call" and (len(n.stack) <= depth or n.stack[depth] != frame or n.stack[:depth] != part.within)
                   for n in nodes[part.start:part.end]):
                continue  # not one contiguous call of this module, in one caller
            self.starts.setdefault(part.start, []).append(part)
            self.group[id(part)] = inner = key + (frame[0][len(prefix):], frame[1])
            self.prefix[id(part)] = (prefix, inner)
            if any(id(n) in self.emitters for n in nodes[part.start:part.end]):
                self.through.add(id(part))  # idioms emitted by prepared functions (experts): walked, never copied

    def at(self, k: int) -> int:
        """Called by the walk before node ``k``: where the walk goes on (``k``, or past a layer just copied)."""
        while self.open and self.open[-1][0].end <= k:
            span, state = self.open.pop()
            kept = self.templates[self.group[id(span)]]
            kept[:] = [self._record(span, state) if t is span else t for t in kept]
            if not self.open:
                self.conv.namer.reads = None
        for span in self.starts.get(k, ()):  # a layer, then its first part (and that part's, planned as it is walked)
            if id(span) in self.through:
                self._parts(span)  # walked, a template of nothing; its own parts may be copies
                continue
            key = self.group[id(span)]
            kept = self.templates.setdefault(key, [])
            for template in kept:
                if isinstance(template, _Record) and self._copy(template, span):
                    if self.conv.namer.reads is not None:  # within a layer walked: its copy read what this one read
                        self.conv.namer.reads.extend(template.reads)
                    return span.end
            kept.insert(0, span)  # walked: a template of the layers after it (alternating kinds: each kind's)
            del kept[KINDS:]
            conv = self.conv
            if conv.namer.reads is None:
                conv.namer.reads = []
            state = (len(conv.steps), conv.counter, dict(conv.values), len(conv.emitted.tensors),
                     dict(conv.emitted.opaque), len(conv.failures), set(conv.skip), dict(conv._picked),
                     dict(conv.index_range), len(conv.namer.reads))
            self.open.append((span, state))
            if SUBMODULES:
                self._parts(span)
        return k

    def _record(self, span: _Span, state: tuple[Any, ...]) -> _Record | _Span:
        """What walking ``span`` did, or the span itself if its walk cannot be copied."""
        conv = self.conv
        steps0, counter0, before, tensors0, opaque0, failures0, skip0, picked0, ranges0, reads0 = state
        nodes = conv.captured.nodes
        position = {id(n): p for p, n in enumerate(nodes[span.start:span.end])}
        if len(conv.failures) != failures0:
            return span
        ranges = []  # the index ranges its walk gave its values (positions read from a table): given ours alike
        changed = {key: n for key, n in conv.index_range.items() if ranges0.get(key) != n}
        if changed:
            held = {id(x): x for node in nodes[span.start:span.end] for x in _tensors(node.value)}
            for key, n in changed.items():
                if key in ranges0 or key not in held:
                    return span  # a range changed, or given to a value that is none of the layer's nodes'
                ranges.append((held[key], n))
        reads = conv.namer.reads[reads0:] if conv.namer.reads is not None else []
        if any(args and hasattr(args[0], "captured") and args[0] is not conv for _, args, _ in reads):
            return span  # another converter's notes (a loop's body): not this walk's to replay
        if any(before.get(key, vid) != vid for key, vid in conv.values.items() if key in before):
            return span  # a binding made before the layer changed
        bound = []
        private = []
        wires = None
        for key, vid in conv.values.items():
            if key not in before:
                if key not in position:
                    if wires is None:
                        wires = {id(n): n for n in conv._wires}
                    copy = wires.get(key)
                    if copy is None or not self._private(copy, position):
                        return span  # it bound a value outside itself
                    private.append((copy, vid))
                    continue
                bound.append((position[key], vid))
        if not skip0 <= conv.skip or any(key not in position for key in conv.skip - skip0):
            return span
        picked = []
        for (source, j), vid in conv._picked.items():
            if (source, j) in picked0:
                if picked0[(source, j)] != vid:
                    return span
                continue
            if source not in position:
                return span
            picked.append((position[source], j, vid))
        steps = conv.steps[steps0:]
        if any(s.title or s.members for s in steps):
            return span
        opaque = {name: n - opaque0.get(name, 0) for name, n in conv.emitted.opaque.items() if n != opaque0.get(name, 0)}
        return _Record(span, list(steps), counter0 + 1, conv.counter, before, bound, picked,
                       sorted(position[key] for key in conv.skip - skip0), skip0,
                       [list(t) for t in conv.emitted.tensors[tensors0:]], opaque, list(reads), private, ranges0,
                       ranges)

    def _private(self, copy: Node, position: dict[int, int]) -> bool:
        """Whether ``copy`` (a live copy of a parameter, read as a wire: :meth:`Learned._wire_learned_chains`) is read
        by the layer's nodes alone."""
        readers = self.conv.consumers.get(id(copy), [])
        return copy.kind == "parameter" and copy.live and bool(readers) and all(id(n) in position for n in readers)

    def _copy(self, record: _Record, span: _Span) -> bool:
        """Give ``span`` copies of ``record``'s steps if its nodes correspond to the recorded layer's; else False."""
        conv = self.conv
        if span.end - span.start != record.span.end - record.span.start:
            return False  # (as the match would tell, before asking the reads again)
        for fn, args, answer in record.reads:  # the namer and the notes read as they were: this layer's walk reads so
            if frozen(fn(*args)) != answer:
                return False
        match = _Match(conv, self.marked, self.emitters, record, span)
        if not match.run():
            return False
        ours = conv.captured.nodes[span.start:span.end]
        private = []
        for node, vid in record.private:
            counterpart = match.outside.get(id(node))
            if counterpart is None or id(counterpart) in conv.values or not self._private(counterpart, match.at_ours):
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


#: what a layer may read from before it, made otherwise in another layer: a model input or an operation's value (the
#: first layer reads the input, the next one the first one's output)
_READ = ("call", "input")

#: operations a value read by one of them alone may be fused with (a view into a projection, a projection of a view)
_FUSED = ("view", "mm", "matmul")


class _Match:
    """The one-to-one correspondence of two layers' nodes (position by position), checked."""

    def __init__(self, conv: Converter, marked: set[int], emitters: set[int], record: _Record, later: _Span) -> None:
        self.conv = conv
        self.marked = marked
        self.emitters = emitters
        self.record = record
        first = record.span
        nodes = conv.captured.nodes
        self.theirs = nodes[first.start:first.end]
        self.ours = nodes[later.start:later.end]
        self.at_theirs = {id(n): p for p, n in enumerate(self.theirs)}
        self.at_ours = {id(n): p for p, n in enumerate(self.ours)}
        self.outside: dict[int, Node] = {}  # id(their node outside the layer) -> our node outside it
        self.outside_back: dict[int, Node] = {}
        self.kept: list[tuple[Node, Node]] = []
        self.inner: dict[int, Node] = {}  # id(a node of a loop's body, or its input) -> the corresponding loop's
        self.inner_back: dict[int, Node] = {}
        self.frames: dict[Frame, Frame] = {first.frame: later.frame}
        #: (their path, ours): the layers' own, then their callers' (a part of a layer: the layers'), innermost first
        self.prefixes = [(first.frame[0], later.frame[0])] + \
            [(a[0], b[0]) for a, b in zip(reversed(first.within), reversed(later.within)) if a[0] != b[0]]
        #: a part's callers correspond (the layer's class may differ: sliding and full attention layers' MLPs)
        self.callers = len(first.within) == len(later.within) and \
            all(self.frames.setdefault(a, b) == b for a, b in zip(first.within, later.within))
        self.calling = set(zip(first.within, later.within))
        self.outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
        self.private = {id(node) for node, _ in record.private}

    def pairs(self) -> list[tuple[Node, Node]]:
        return list(zip(self.theirs, self.ours)) + self.kept

    def run(self) -> bool:
        if len(self.theirs) != len(self.ours) or not self.callers:
            return False
        try:
            return all(self._node(t, c) for t, c in zip(self.theirs, self.ours))
        except Exception:  # noqa: BLE001 - values that cannot be compared: the layer is walked
            return False

    def _path(self, path: str, other: str) -> bool:
        for mine, ours in self.prefixes:
            if path == mine:
                return other == ours
            if path.startswith(mine) and path[len(mine)] == ".":
                return other == ours + path[len(mine):]
        return other == path

    def _node(self, t: Node, c: Node) -> bool:
        conv = self.conv
        if (t.kind, t.live, t.guard) != (c.kind, c.live, c.guard) or t.guard and t.line != c.line \
                or id(t) in self.emitters or id(c) in self.emitters:
            return False
        if t.target != c.target and not self._loops(t.target, c.target):
            return False
        if len(t.stack) != len(c.stack) or (t.source or c.source) and not self._path(t.source, c.source):
            return False
        for ft, fc in zip(t.stack, c.stack):
            if ft[1] != fc[1] and (ft, fc) not in self.calling or not self._path(ft[0], fc[0]) \
                    or self.frames.setdefault(ft, fc) != fc:
                return False
        if not _same_value(t.value, c.value, exact=t.kind == "constant" or (t.kind == "call" and not t.live
                                                                            and not conv.learned(t))):
            return False
        if (id(t) in self.record.skip, id(t) in self.record.before, id(t) in self.marked) != \
                (id(c) in conv.skip, id(c) in conv.values, id(c) in self.marked):
            return False
        if isinstance(t.value, torch.Tensor) and \
                self.record.ranges_before.get(id(t.value)) != conv.index_range.get(id(c.value)):
            return False
        if (t.sized or c.sized) and not self._same(t.sized or {}, c.sized or {}):
            return False  # arguments computed from the input's sizes: the same expressions of corresponding values
        if not self._readers(t, c):
            return False
        return self._same(t.args, c.args) and self._same(t.kwargs, c.kwargs)

    def _loops(self, a: Any, b: Any) -> bool:
        """Whether ``a`` and ``b`` are folded loops (:class:`~ncd.trace.loops.Loop`, each call its own object) with
        bodies that correspond one to one: the same operators on corresponding arguments (their inputs, earlier calls
        of the body, or corresponding values of the layers), values alike, the same inputs, results and time axes."""
        from ncd.trace.loops import Loop

        if not isinstance(a, Loop) or not isinstance(b, Loop):
            return False
        if (len(a.body), len(a.consts), len(a.states), len(a.slices), len(a.next_states), len(a.outputs), a.dims,
                a.stack_dims, a.reverse, a.count) != (len(b.body), len(b.consts), len(b.states), len(b.slices),
                                                      len(b.next_states), len(b.outputs), b.dims, b.stack_dims,
                                                      b.reverse, b.count):
            return False
        for x, y in zip(a.consts + a.states + a.slices, b.consts + b.states + b.slices):
            if (x.kind, x.source, x.live) != (y.kind, y.source, y.live) or not _same_value(x.value, y.value, False):
                return False
            self._inner(x, y)
        for x, y in zip(a.body, b.body):
            if (x.kind, x.live, x.guard, x.source) != (y.kind, y.live, y.guard, y.source) or x.guard \
                    or len(x.stack) != len(y.stack) or x.target != y.target and not self._loops(x.target, y.target):
                return False
            for fx, fy in zip(x.stack, y.stack):
                if fx[1] != fy[1] or not self._path(fx[0], fy[0]) or self.frames.setdefault(fx, fy) != fy:
                    return False
            if not _same_value(x.value, y.value, exact=not x.live) or (x.sized or y.sized) \
                    or not self._same(x.args, y.args) or not self._same(x.kwargs, y.kwargs):
                return False
            self._inner(x, y)
        return all(self.inner.get(id(x)) is y for x, y in zip(a.next_states + a.outputs, b.next_states + b.outputs))

    def _inner(self, x: Node, y: Node) -> None:
        """``x`` and ``y`` (a loop's input or body call, each loop's own) correspond."""
        self.inner[id(x)], self.inner_back[id(y)] = y, x
        self.kept.append((x, y))

    def _readers(self, t: Node, c: Node) -> bool:
        """The operations reading ``t`` and ``c``: the corresponding ones inside the layers, alike outside them."""
        from ncd.trace.convert import op_name

        inside_t, inside_c, outside_t, outside_c = [], [], [], []
        picks_t, picks_c = [], []
        for n in self.conv.consumers.get(id(t), []):
            p = self.at_theirs.get(id(n))
            (inside_t.append(p) if p is not None else outside_t.append(op_name(n.target)[1]))
            if p is None and "getitem" in str(n.target):
                picks_t.append(n.args[1])
        for n in self.conv.consumers.get(id(c), []):
            p = self.at_ours.get(id(n))
            (inside_c.append(p) if p is not None else outside_c.append(op_name(n.target)[1]))
            if p is None and "getitem" in str(n.target):
                picks_c.append(n.args[1])
        if inside_t != inside_c:
            return False
        # Read outside the layers by other operations (the next layer, the model's head): a walk asks of a value's
        # readers only whether one is outside a module (or the value is an output: module idioms, experts), which parts
        # of a tuple are read, and of a value read once, what reads it (a view fused into a projection)
        if sorted(outside_t) == sorted(outside_c):
            return (id(t) in self.outputs) == (id(c) in self.outputs)
        for node in (t, c):
            readers = self.conv.consumers.get(id(node), [])
            if len(readers) == 1 and any(mark in str(readers[0].target) for mark in _FUSED):
                return False
        return (bool(outside_t) or id(t) in self.outputs) == (bool(outside_c) or id(c) in self.outputs) \
            and sorted(map(repr, picks_t)) == sorted(map(repr, picks_c))

    def _same(self, a: Any, b: Any) -> bool:
        kind = type(a)
        if kind is not type(b):
            return False
        if kind is Node:
            if id(a) in self.inner or id(b) in self.inner_back:  # a loop body's own nodes
                return self.inner.get(id(a)) is b
            p, q = self.at_theirs.get(id(a)), self.at_ours.get(id(b))
            if p is not None or q is not None:
                return p == q
            known = self.outside.get(id(a))
            if known is not None:
                return known is b
            if id(b) in self.outside_back:
                return False
            # read from outside the layer: the same node (a shared table, the mask), or values made before it alike
            if a is not b and not (a.kind in _READ and b.kind in _READ and a.live and b.live
                                   and _same_value(a.value, b.value, exact=False)) \
                    and not (id(a) in self.private and b.kind == "parameter" and b.live and not a.args and not b.args
                             and _same_value(a.value, b.value, exact=False) and self._path(a.source, b.source)):
                return False  # (a parameter's live copy read by the recorded layer alone: its counterpart's here)
            self.outside[id(a)], self.outside_back[id(b)] = b, a
            self.kept.append((a, b))
            return True
        if kind is tuple or kind is list:
            return len(a) == len(b) and all(self._same(x, y) for x, y in zip(a, b))
        if kind is dict:
            return a.keys() == b.keys() and all(self._same(a[k], b[k]) for k in a)
        if isinstance(a, torch.Tensor):
            return a is b
        if kind is float and a != a:
            return bool(b != b)
        return bool(a == b)

    def tensors(self, recorded: list[list[torch.Tensor]]) -> list[list[torch.Tensor]] | None:
        """The tensors the copied boxes hold: for each one the recorded layer's boxes hold, the corresponding value
        here (the same tensor, or the same view of it); None if one is not a value of a corresponding node."""
        pairs = [(x, y) for t, c in self.pairs() for x, y in zip(_tensors(t.value), _tensors(c.value))]
        by_id = {id(x): y for x, y in pairs}
        by_view: dict[tuple[Any, ...], torch.Tensor | None] | None = None  # made when a tensor is not a node's value
        made = self.conv.__dict__.get("_from_arguments", {})
        out = []
        for group in recorded:
            mapped = []
            for x in group:
                mine = by_id.get(id(x))
                if mine is None and made.get(id(x)) is x:
                    mine = x.clone()  # a constant made of the operation's arguments (the number a mask fills in):
                    # they correspond (equal), so ours is equal; a tensor of its own, as our walk would make
                if mine is None and x.device.type != "meta":
                    if by_view is None:
                        by_view = _by_view(pairs)
                    found = by_view.get(_view(x))
                    mine = None if found is None else found.detach()
                    if mine is None:  # a view a rule made of a node's value (a weight transposed): that view of ours
                        mine = _same_view(x, pairs)
                if mine is None:
                    return None
                mapped.append(mine)
            out.append(mapped)
        return out


def _same_view(x: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
    """``x`` a view of a recorded value ``a`` (in its storage): the same view of ``a``'s counterpart ``b`` (laid out
    alike); None if no value holds that storage, or those that do do not tell one view."""
    found: list[torch.Tensor] = []
    where = x.untyped_storage().data_ptr()
    if not where:
        return None
    for a, b in pairs:
        if a.device.type == "meta" or a.untyped_storage().data_ptr() != where:
            continue
        if a.dtype != x.dtype or b.dtype != x.dtype or a.shape != b.shape or a.stride() != b.stride() \
                or a.untyped_storage().nbytes() != b.untyped_storage().nbytes():
            return None
        offset = b.storage_offset() + x.storage_offset() - a.storage_offset()
        if offset < 0:
            return None
        found.append(b.detach().as_strided(x.shape, x.stride(), offset))
    if not found or any(_view(f) != _view(found[0]) for f in found[1:]):
        return None
    return found[0]


def _by_view(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[tuple[Any, ...], torch.Tensor | None]:
    """The corresponding value of each place (storage, offset, shape, strides, dtype) a recorded value has; ``None``
    where two values are at one place (ambiguous)."""
    by_view: dict[tuple[Any, ...], torch.Tensor | None] = {}
    for x, y in pairs:
        if x.device.type != "meta":
            key = _view(x)
            if key in by_view and by_view[key] is not y:
                by_view[key] = None
            else:
                by_view[key] = y
    return by_view


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


def _view(x: torch.Tensor) -> tuple[Any, ...]:
    return (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype)


def _same_value(a: Any, b: Any, exact: bool) -> bool:
    """Values of the same kind, shape and dtype (and equal entries where ``exact``)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
        if exact and a is not b:
            return a.device.type != "meta" and bool(torch.equal(a, b))
        return True
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y, exact) for x, y in zip(a, b))
    if isinstance(a, (bool, int, float, str, type(None))):
        return type(a) is type(b) and bool(a == b or (a != a and b != b))
    return False

