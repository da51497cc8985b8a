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

Here: which layers (and parts) are planned, and what a first layer's walk did; whether a later one corresponds is
:mod:`ncd.trace.reuse_match`'s, and giving it copies of the steps :mod:`ncd.trace.reuse_copy`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node
from ncd.trace.reuse_copy import copy_steps
from ncd.trace.reuse_match import _tensors

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
    #: id(tensor) -> its place (:func:`~ncd.trace.reuse_match._view`), for its tensors and its nodes' values, found
    #: once for every later layer matched against it (they stay alive, unchanged, while the walk goes on)
    views: dict[int, tuple[Any, ...]] = field(default_factory=dict)


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
                    or any(self.conv.whole_at(d, path, cls) for d, (path, cls) in enumerate(part.within)):
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
        """Give ``span`` copies of ``record``'s steps if its nodes correspond to the recorded layer's; else False
        (:func:`~ncd.trace.reuse_copy.copy_steps`)."""
        return copy_steps(self, record, span)
