"""Whether two layers correspond one to one (:mod:`ncd.trace.reuse`): their recorded operations, module structure,
values, readers and parameters, position by position; and the tensors of one layer's boxes mapped to the other's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node
from ncd.trace.registry import op_name
from ncd.trace.tensors import WORDS_ABOVE

if TYPE_CHECKING:
    from ncd.trace.convert import Converter
    from ncd.trace.reuse import Frame, _Record, _Span

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
        self.checked: set[tuple[Frame, Frame]] = set()  # pairs of frames found to correspond (class, path, mapping)
        #: (their path, ours): the layers' own, then their callers' (a part of a layer: the layers'), innermost first
        self.prefixes = [(first.frame[0], later.frame[0])] + \
            [(a[0], b[0]) for a, b in zip(reversed(first.within), reversed(later.within)) if a[0] != b[0]]
        #: a part's callers correspond (the layer's class may differ: sliding and full attention layers' MLPs)
        self.callers = len(first.within) == len(later.within) and \
            all(self.frames.setdefault(a, b) == b for a, b in zip(first.within, later.within))
        self.calling = set(zip(first.within, later.within))
        self.outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
        self.private = {id(node) for node, _ in record.private}
        #: pairs of memories (their addresses) found to hold the same bits, whole (:func:`_equal_entries`)
        self.proven: set[tuple[int, int]] = set()

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
        checked = self.checked
        for ft, fc in zip(t.stack, c.stack):
            if (ft, fc) in checked:
                continue  # (the frames of one module call: every node of it has them)
            if ft[1] != fc[1] and (ft, fc) not in self.calling or not self._path(ft[0], fc[0]) \
                    or self.frames.setdefault(ft, fc) != fc:
                return False
            checked.add((ft, fc))
        if not _same_value(t.value, c.value, exact=t.kind == "constant" or (t.kind == "call" and not t.live
                                                                            and not conv.learned(t)), proven=self.proven):
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
            if not _same_value(x.value, y.value, exact=not x.live, proven=self.proven) or (x.sized or y.sized) \
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
        views = self.record.views  # (the recorded layer's tensors' places: found once)
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
                        by_view = _by_view(pairs, views)
                    found = by_view.get(_place(x, views))
                    mine = None if found is None else found.detach()
                    if mine is None:  # a view a rule made of a node's value (a weight transposed): that view of ours
                        mine = _same_view(x, pairs, views)
                if mine is None:
                    return None
                mapped.append(mine)
            out.append(mapped)
        return out


def _same_view(x: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], views: dict[int, tuple[Any, ...]]
               ) -> torch.Tensor | None:
    """``x`` a view of a recorded value ``a`` (in its storage): the same view of ``a``'s counterpart ``b`` (laid out
    alike); None if no value holds that storage, or those that do do not tell one view.  ``views``: the recorded
    tensors' places found so far (:func:`_place`)."""
    found: list[torch.Tensor] = []
    where = _place(x, views)[0]
    if not where:
        return None
    for a, b in pairs:
        if a.device.type == "meta" or _place(a, views)[0] != where:
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


def _by_view(pairs: list[tuple[torch.Tensor, torch.Tensor]], views: dict[int, tuple[Any, ...]]
             ) -> dict[tuple[Any, ...], torch.Tensor | None]:
    """The corresponding value of each place (storage, offset, shape, strides, dtype) a recorded value has; ``None``
    where two values are at one place (ambiguous)."""
    by_view: dict[tuple[Any, ...], torch.Tensor | None] = {}
    for x, y in pairs:
        if x.device.type != "meta":
            key = _place(x, views)
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


def _place(x: torch.Tensor, views: dict[int, tuple[Any, ...]]) -> tuple[Any, ...]:
    """:func:`_view` of a recorded layer's tensor, found once: ``views`` is the record's (its tensors stay alive and
    unchanged while the walk goes on, so an id there is the tensor's)."""
    found = views.get(id(x))
    if found is None:
        found = views[id(x)] = _view(x)
    return found


def _same_value(a: Any, b: Any, exact: bool, proven: set[tuple[int, int]] | None = None) -> bool:
    """Values of the same kind, shape and dtype (and equal entries where ``exact``; ``proven``: see
    :func:`_equal_entries`)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
        if exact and a is not b:
            return a.device.type != "meta" and _equal_entries(a, b, proven)
        return True
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y, exact, proven) for x, y in zip(a, b))
    if isinstance(a, (bool, int, float, str, type(None))):
        return type(a) is type(b) and bool(a == b or (a != a and b != b))
    return False


def _equal_entries(a: torch.Tensor, b: torch.Tensor, proven: set[tuple[int, int]] | None) -> bool:
    """``torch.equal(a, b)`` (of one shape and dtype), or true where ``a`` and ``b`` sit alike (offsets, strides, lazy
    negation and conjugation) in memories holding the same bits, whole: compared once per pair of memories as 8-byte
    words and kept in ``proven`` (the match's: its values stay alive and unchanged while it runs).  A layer's large
    constant is read through several views (longformer: the (8, 2, 256, 513) zeros of the diagonal scores, then
    three slices of it), each compared entry by entry before.  Equal bits are equal values; a NaN the same NaN, where
    ``torch.equal`` would say unequal and the layer be walked: its walk reads the same values, so its copy is the same
    diagram.  Only where ``a`` is at least :data:`~ncd.trace.tensors.WORDS_ABOVE` bytes and a quarter of its memory.
    A memory not a whole number of words that ``a`` reads more than once (a number expanded: longformer's
    ``(8, 2, 256, 513)`` of strides 0 on 4 bytes, 1.3 ms entry by entry) is compared as bytes."""
    if proven is not None and type(a) is torch.Tensor and type(b) is torch.Tensor and a.layout == torch.strided \
            and b.layout == torch.strided and a.storage_offset() == b.storage_offset() and a.stride() == b.stride() \
            and a.is_neg() == b.is_neg() and a.is_conj() == b.is_conj() and not a.is_quantized:
        memory, other = a.untyped_storage(), b.untyped_storage()
        key = (memory.data_ptr(), other.data_ptr())
        if key in proven:
            return True
        size, read = memory.nbytes(), a.numel() * a.element_size()
        if size == other.nbytes() and (not size % 8 or size < read) and WORDS_ABOVE <= read and size <= 4 * read:
            unit = 8 if not size % 8 else 1

            def words(m: torch.UntypedStorage) -> torch.Tensor:
                kind = torch.int64 if unit == 8 else torch.uint8
                return torch.empty(0, dtype=kind, device=a.device).set_(m, 0, (size // unit,), (1,))

            if torch.equal(words(memory), words(other)):
                proven.add(key)
                return True
    return bool(torch.equal(a, b))
