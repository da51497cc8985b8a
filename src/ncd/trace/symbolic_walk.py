"""The passes of :func:`ncd.trace.symbolic.symbolize` over one diagram (:class:`_Walk`): each original value rebuilt once
with the names and ranges followed so far sized by symbols, the boxes fixed at the traced sizes, what a failed junction
teaches the next pass, and the state a pass hands over when the passes are made again without renames.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ncd.errors import NCDError, SizeError, TypeMismatchError
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Par, Seq, Weave
from ncd.ir.primitive import Primitive
from ncd.ir.sharing import rebuilt
from ncd.ir.size import symbol
from ncd.prims.movement import SliceOp
from ncd.trace.symbolic_learn import (
    Follow,
    _aligned,
    _base,
    _derived,
    _fed_back,
    _learn,
    _merged,
    _NotPlain,
    _value_at,
)
from ncd.trace.symbolic_values import (
    _ATOM,
    _AXIS,
    _EXPR,
    _KINDS,
    _PRIMITIVE,
    _SEGMENT,
    _TUPLE,
    _TYPE,
    _boxed,
    _fields,
    _kind,
    _mark_stale,
    _sequenced,
    _symbols,
    _weave,
    indexed_stale,
)

__all__ = ["SIZED_BY_TRACE", "PASSES"]

#: primitives holding traced tensors or calls whose shapes are fixed by the trace
SIZED_BY_TRACE = ("constant", "parameter", "opaque")


#: passes :func:`symbolize` makes at most, each following the names and ranges the junctions of the last one learned
PASSES = 8


class _Held(NamedTuple):
    """What a walk holds between passes (:attr:`_Walk._state`: the walk's own containers, by name; :meth:`_Walk.save`:
    copies of them)."""

    done: dict[int, Any]
    kept: list[Any]
    order: list[int]
    placed: set[int]
    notes: dict[int, tuple[tuple[str, ...], str]]
    axes: dict[Axis, Axis]
    names: dict[tuple[str, int], Any]
    ranges: dict[int, Any]


class _Walk:
    """The passes of :func:`symbolize` over one diagram: the rebuilt values, kept from pass to pass (by the id of the
    original: equal parts of a diagram are often one object, and each original is rebuilt as one object), the order in
    which boxes were first rebuilt (the order of ``fixed``), and the names and ranges followed."""

    def __init__(self, body: Diagram, sizes: dict[str, int], renames: bool = True,
                 follow: dict[tuple[str, int], Any] | None = None, found: set[Any] | None = None,
                 at_once: bool = True) -> None:
        """``at_once``: a box's lessons that only its own new values hold are followed within the pass (``prim``'s
        :func:`lesson`); without it, each one fails the pass (the walks the tests compare against)."""
        self._sizes, self._renames, self._at_once = sizes, renames, at_once
        self._symbols = {n: symbol(n) for n in sizes}
        self._met: set[Any] = found if found is not None else set()  # the symbols of every size met or made
        self._given = {(_base(a.name), int(a.size)) for seg in body.dom.segments for a in seg.axes
                       if a.size.is_Integer and _base(a.name) not in sizes}  # the inputs' other axes keep their sizes
        self._traced_values = {self._symbols[n]: sizes[n] for n in self._symbols}
        self._done: dict[int, Any] = {}  # id -> rebuilt value
        self._kept: list[Any] = []  # the originals rebuilt, in the order they were (indexed by ``_stale`` past ``_indexed_upto``)
        self._order: list[int] = []  # ids of the primitives in the order a whole walk rebuilds them first
        self._placed: set[int] = set()  # ... the same ids
        self._notes: dict[int, tuple[tuple[str, ...], str]] = {}  # id of a primitive -> its ``fixed`` entry
        self.where: dict[int, str] = {}  # id of a primitive -> where the model made what it holds (:func:`symbolize`)
        self._axes: dict[Axis, Axis] = {}
        self._by_id: dict[int, Axis] = {}  # id of an original axis -> ``_axes[it]``
        self._names: dict[tuple[str, int], Any] = dict(follow) if follow else {}  # the names followed
        self._ranges: dict[int, Any] = {}  # the ranges followed
        self.body = body
        self.learned: Follow = ({}, {})
        self._taught: set[int] = set()  # ids of the primitives whose rebuilding learned (rebuilt again on the next pass)
        self._renamed: list[bool] = []  # a True per view that renamed a wire as a symbol's (none: ``renames`` changed nothing)
        self._renamers: set[int] = set()  # ids of the views that did (rebuilt without ``renames``, they differ)
        # for :meth:`_stale`: id of an original -> ids of the kept originals holding it; axis -> ids of the kept
        # originals holding it; traced range -> ids of the kept segments of that range; ids indexed
        self._index: tuple[dict[int, list[int]], dict[Axis, list[int]], dict[int, list[int]], set[int]] = ({}, {}, {}, set())
        self._indexed_upto = 0  # kept[:_indexed_upto] are indexed
        self._follows = 0  # the times :meth:`follow_learned` was called
        self.budget = PASSES  # the lessons a pass may still follow at once (the passes left: :func:`_passes`)
        self.saved: list[Any] | None = None  # :func:`_passes`' ``saved`` (a lesson followed at once before a rename)
        self._state = _Held(self._done, self._kept, self._order, self._placed, self._notes, self._axes, self._names,
                            self._ranges)

    def traced(self, size: Any) -> Any:
        """``size``'s exact value at the traced sizes: a whole number, or (never truncated) a fraction — a
        window count the stride does not divide (``t/12 + 11/12`` at ``t = 8``) does not hold the traced 1."""
        if size.is_Integer:
            return int(size)
        traced_values = self._traced_values
        found = traced_values.get(size)  # a bare symbol
        if found is not None:
            return found
        try:  # most other sizes are products and sums of symbols: their value without sympy building new numbers
            value = _value_at(size, traced_values)
            return value if isinstance(value, int) or value.denominator != 1 else int(value)
        except (_NotPlain, ZeroDivisionError):
            exact = size.xreplace(traced_values)
            return int(exact) if exact.is_Integer else exact

    def _axis(self, a: Axis) -> Axis:
        by_id = self._by_id
        found = by_id.get(id(a))  # (an original's axes live as long as the walk: no hash of the axis asked)
        if found is None:
            axes = self._axes
            found = axes.get(a)
            if found is None:
                sizes, follow_names = self._sizes, self._names
                base = a.name if a.name in sizes else _base(a.name) if _base(a.name) in sizes else None
                symbolic = base in sizes and a.size.is_Integer and int(a.size) == sizes[base]
                followed = (follow_names.get((_base(a.name), int(a.size))) if follow_names and a.size.is_Integer
                            else None)
                found = axes[a] = (dataclasses.replace(a, size=self._symbols[base]) if symbolic  # type: ignore[index]
                                   else dataclasses.replace(a, size=followed) if followed is not None else a)
            by_id[id(a)] = found
            size = found.size
            if not size.is_Integer:
                if size.is_Symbol:
                    self._met.add(size)
                else:
                    self._met.update(size.free_symbols)
        return found

    def value(self, v: Any) -> Any:
        """``v`` (a node, primitive, type, segment, axis, size or tuple of them) rebuilt, once per original."""
        kind = _KINDS.get(type(v))
        if kind is None:
            kind = _kind(type(v))
        if kind is _ATOM:
            return v
        if kind is _AXIS:
            return self._axis(v)
        if kind is _EXPR:
            if not v.is_Integer:
                self._met.update(v.free_symbols)
            return v
        key = id(v)
        done = self._done
        found = done.get(key, done)
        if found is done:
            found = done[key] = self._value(v, kind)
            self._kept.append(v)
        return found

    def _value(self, v: Any, kind: str) -> Any:
        if kind is _SEGMENT:
            axis = self._axis
            axes = tuple([axis(a) for a in v.axes])
            rng = v.range
            follow_ranges = self._ranges
            if follow_ranges and rng is not None and rng.is_Integer:
                rng = follow_ranges.get(int(rng), rng)
            if rng is not None and not rng.is_Integer:
                self._met.update(rng.free_symbols)
            if rng is v.range and all(a is b for a, b in zip(axes, v.axes)):
                return v
            if rng is not v.range:
                return dataclasses.replace(v, axes=axes, range=rng)
            # dataclasses.replace, spelt out: the dtype and range are the checked ones of ``v``
            return Segment(axes, v.dtype, v.range) if type(v) is Segment else dataclasses.replace(v, axes=axes)
        value = self.value
        if kind is _TYPE:
            segments = tuple([value(s) for s in v.segments])
            return v if all(a is b for a, b in zip(segments, v.segments)) else Type(segments)
        if kind is _TUPLE:
            items = tuple([x if _KINDS.get(type(x)) is _ATOM else value(x) for x in v])
            return v if all(a is b for a, b in zip(items, v)) else items
        if kind is _PRIMITIVE:
            new = self._prim(v)
            key = id(v)
            if key not in self._placed:
                self._placed.add(key)
                self._order.append(key)
            return new
        return self.node(v)

    def _prim(self, p: Primitive) -> Primitive:
        names = _fields(type(p))
        while self._at_once and self.budget > 0:  # (each lesson followed at once counts as a pass)
            new = self._prim_once(p, names, len(self._kept), len(self._axes))
            if new is not None:
                return new
            self.budget -= 1
        return self._prim_once(p, names, -1, -1)  # type: ignore[return-value]

    def _prim_once(self, p: Primitive, names: tuple[str, ...], start: int, made: int) -> Primitive | None:
        """``p`` rebuilt; None when it refused its traced sizes and what it taught was followed at once
        (:meth:`_lesson`: it is rebuilt again).  ``start``, ``made``: ``len(kept)``, ``len(axes)`` before it."""
        value, traced, learned = self.value, self.traced, self.learned
        changes: dict[str, Any] = {}
        changed = False
        for name in names:
            old = getattr(p, name)
            new = old if _KINDS.get(type(old)) is _ATOM else value(old)
            changes[name] = new
            changed = changed or new is not old
        if not changed:
            return p  # nothing sized by a symbol: the box as it was
        if isinstance(p, SliceOp) and changes["output"] is not p.output and p.step == 1:
            changes["stop"] = p.start + changes["output"].size  # (t + 1)[1:] keeps t: 1:t+1
        if p.op == "view":  # a merge of symbolised axes: the product
            renamed, renames = self._renamed, self._renames
            was = len(renamed)
            changes["target"] = dataclasses.replace(changes["target"], axes=_merged(
                changes["source"].axes, changes["target"].axes, traced, renames, renamed))
            for a, b in _aligned(changes["source"].axes, changes["target"].axes, traced) if renames else ():
                # an input's axis renamed as a symbol's (a loss's (b,) positions named y:2 read beside b t): the
                # model holds them equal, so the input is sized by the symbol (followed on a next pass)
                if a.size.is_Integer and b.size.is_Symbol and (_base(a.name), int(a.size)) in self._given:
                    renamed.append(True)
                    learned[0].setdefault((_base(a.name), int(a.size)), b.size)
                    self._taught.add(id(p))  # (kept, it would not teach the next pass: rebuilt, it teaches in walk order)
            if len(renamed) > was:
                self._renamers.add(id(p))
        try:
            new = type(p)(**changes)  # dataclasses.replace, every field given
        except SizeError as error:  # a size the box derives from symbols where it holds the traced number
            if start >= 0 and p.op != "view" and error.derived and self._lesson(error, start, made):
                return None
            _derived(error, traced, learned, self._given)
            raise
        except TypeMismatchError:  # a scan's state leaving its body sized otherwise than it enters
            _fed_back(changes, traced, learned)
            raise
        if (p.op in SIZED_BY_TRACE or getattr(p, "fit", False)) and (held := new.free_symbols()):
            self._notes[id(p)] = (tuple(sorted(str(x) for x in held)),
                                  f"{p.op} {p.label()} '{new.signature()[1]}'{self.where.get(id(p), '')}")
        elif p.op == "view" and (held := _symbols(changes["target"]) - _symbols(changes["source"])):
            # a tensor of fixed sizes read as one sized by the input (T5's relative-position buckets, computed at
            # the traced length): its entries are those of the traced sizes only
            self._notes[id(p)] = (tuple(sorted(str(x) for x in held)),
                                  f"view '{changes['source']}' -> '{changes['target']}'")
        return new

    def _lesson(self, error: SizeError, start: int, made: int) -> bool:
        """Follow at once the names a box refusing its traced sizes derives (a convolution's output ``t:11`` as
        ``t + 3``), when only values rebuilt for that box hold them: the wires of those names and sizes were all
        first met since the box's rebuilding began (``made``: the axes before), and no range is taught.  Those
        values are forgotten (the box is rebuilt again, as the next pass would rebuild it: a value is a function
        of the original and of the followed names its wires have); False (nothing changed): the pass fails."""
        follow_names, axes, kept, done, notes = self._names, self._axes, self._kept, self._done, self._notes
        taught_now: Follow = ({}, {})
        _derived(error, self.traced, taught_now, self._given)
        news = {k: v for k, v in taught_now[0].items() if follow_names.get(k) != v}
        if not news or taught_now[1]:
            return False
        changed: set[Axis] = set()
        for n, a in enumerate(axes):
            if a.size.is_Integer and (_base(a.name), int(a.size)) in news:
                if n < made:
                    return False  # a value before this box holds it: the next pass rebuilds that too
                changed.add(a)
        stale: set[int] = set()
        if changed:
            since = kept[start:]
            _mark_stale(since, changed, {}, stale)
            for key in stale:
                del done[key]
                notes.pop(key, None)
            if stale:
                kept[start:] = [v for v in since if id(v) not in stale]
            for a in changed:
                del axes[a]
            self._by_id.clear()
        follow_names.update(news)
        if self.saved is not None and not self._renamed:  # the state a next pass would start from: saved as that pass
            self.saved[:] = [PASSES - self.budget + 1, self.save()]
        return True

    def node(self, d: Diagram) -> Diagram:
        """The diagram ``d`` rebuilt (its parts through :meth:`value`)."""
        value = self.value
        cls = type(d)
        if cls is Box:  # the label and source are kept: only the primitive may change
            new_prim = value(d.prim)  # type: ignore[attr-defined]
            return d if new_prim is d.prim else _boxed(d, new_prim)  # type: ignore[arg-type,attr-defined]
        if cls is Seq or cls is Par:
            parts = d.parts  # type: ignore[attr-defined]
            new_parts = tuple([value(x) for x in parts])
            if all(a is b for a, b in zip(new_parts, parts)):
                return d
            if cls is Par:
                return rebuilt(d, parts=new_parts)
            try:
                return _sequenced(d, new_parts)  # type: ignore[arg-type]
            except NCDError:
                for left, right in zip(new_parts, new_parts[1:]):
                    if not left.cod.same(right.dom):
                        _learn(left.cod, right.dom, self.traced, self.learned)
                raise
        if cls is Weave:
            inner, ax = value(d.inner), self._axis(d.axis)  # type: ignore[attr-defined]
            if inner is d.inner and ax is d.axis:  # type: ignore[attr-defined]
                return d
            if ax.name == d.axis.name:  # type: ignore[attr-defined]
                return _weave(inner, ax, d)  # type: ignore[arg-type]
            return Weave(inner, ax, d.dom_pos, d.cod_pos)  # type: ignore[attr-defined]
        if cls is Block:
            body = value(d.body)  # type: ignore[attr-defined]
            meta = value(d.meta)  # type: ignore[attr-defined]
            if body is d.body and meta is d.meta:  # type: ignore[attr-defined]
                return d
            return rebuilt(d, body=body) if meta is d.meta else Block(body, d.name, meta)  # type: ignore[attr-defined]
        changes = {name: value(getattr(d, name)) for name in _fields(cls)}  # every node is a frozen dataclass
        if all(v is getattr(d, k) for k, v in changes.items()):
            return d
        try:
            new: Diagram = cls(**changes)
        except TypeMismatchError:  # a repetition whose output is not its next input
            _fed_back(changes, self.traced, self.learned)
            raise
        return new

    def run(self) -> tuple[Diagram, list[tuple[tuple[str, ...], str]]]:
        """A pass: the rebuilt body and the ``fixed`` entries in the order a whole walk finds them."""
        self.learned[0].clear()
        self.learned[1].clear()
        new = self.node(self.body)
        notes = self._notes
        return new, [notes[key] for key in self._order if key in notes]

    @property
    def renamed(self) -> bool:
        """Whether a view of a pass so far renamed a wire as a symbol's (without ``renames``, the passes differ)."""
        return bool(self._renamed)

    def save(self) -> _Held:
        """A copy of what the walk holds between passes (:meth:`hand_over` gives it to another walk)."""
        return _Held._make(part.copy() for part in self._state)

    def hand_over(self, other: _Walk, state: _Held) -> None:
        """Put in ``other`` (a walk without renames) the ``state`` this walk held before a view first renamed a wire
        (as :meth:`save` copied it), and every value this walk rebuilt since that ``other`` would rebuild alike: a
        value is a function of the original, of the followed names and ranges its wires have, and of whether a view
        in it renamed a wire; the values whose wires have a name or range followed since, or that hold a view that
        renamed, are left to ``other`` to rebuild."""
        done, kept, notes, axes = self._done, self._kept, self._notes, self._axes
        was_done, was_notes, was_names, was_ranges = state.done, state.notes, state.names, state.ranges
        names = {k for k, v in self._names.items() if was_names.get(k) != v}
        ranges = {k: v for k, v in self._ranges.items() if was_ranges.get(k) != v}
        changed = {a for a in axes if a.size.is_Integer and (_base(a.name), int(a.size)) in names}
        stale = self._renamers | self._taught
        (self._stale if self._follows > 1 else self._scan)(changed, ranges, stale)  # (the index, once made)
        new_done, new_kept, new_notes, new_axes = other._done, other._kept, other._notes, other._axes
        placed_kept: set[int] = set()
        for v in state.kept:  # parts before wholes: the first place of each value held then
            key = id(v)
            if key in was_done and key not in placed_kept:
                placed_kept.add(key)
                new_kept.append(v)
        new_done.update(was_done)
        new_notes.update(was_notes)
        new_axes.update(state.axes)
        for v in kept:  # then what this walk rebuilt since, alike without renames (parts before wholes too)
            key = id(v)
            if key not in placed_kept and key not in stale:
                found = done.get(key, done)
                if found is not done:
                    placed_kept.add(key)
                    new_done[key] = found
                    new_kept.append(v)
                    note = notes.get(key)
                    if note is not None:
                        new_notes[key] = note
        for a, b in axes.items():
            if a not in changed:
                new_axes.setdefault(a, b)
        other._order[:] = self._order  # (the order a whole walk first rebuilds the primitives in: each pass extends it)
        other._placed.update(self._placed)
        other._names.update(was_names)
        other._ranges.update(was_ranges)
        other._follows = 1  # (its next follow indexes what it holds: a walk that fails after renames often fails again)

    def learns_anew(self) -> bool:
        """Whether the last pass learned a name not followed yet."""
        return not self.learned[0].keys() <= self._names.keys()

    def follow_learned(self) -> None:
        """Follow what the failed pass learned, and forget every value it rebuilt whose wires have a name or range
        followed anew (keeping the rest: the next pass rebuilds them alike, as the same objects)."""
        done, notes, axes, follow_names, follow_ranges = self._done, self._notes, self._axes, self._names, self._ranges
        names = {k: v for k, v in self.learned[0].items() if follow_names.get(k) != v}
        ranges = {k: v for k, v in self.learned[1].items() if follow_ranges.get(k) != v}
        follow_names.update(self.learned[0])
        follow_ranges.update(self.learned[1])
        changed = {a for a in axes if a.size.is_Integer and (_base(a.name), int(a.size)) in names}
        for a in changed:
            del axes[a]
        if changed:
            self._by_id.clear()
        stale = {key for key in self._taught if key in done}  # rebuilt again: their lessons are learned in walk order
        self._taught.clear()
        self._follows += 1
        if self._follows == 1:
            self._scan(changed, ranges, stale)
        else:
            self._stale(changed, ranges, stale)
        for key in stale:
            del done[key]
            notes.pop(key, None)

    def _stale(self, changed: set[Axis], ranges: dict[int, Any], stale: set[int]) -> None:
        """Adds to ``stale`` the kept values whose wires have an axis in ``changed`` or a range in ``ranges``, and
        every kept value holding a stale one (:func:`~ncd.trace.symbolic_values.indexed_stale`)."""
        self._indexed_upto = indexed_stale(self._kept, self._indexed_upto, self._index, self._done, changed, ranges, stale)

    def _scan(self, changed: set[Axis], ranges: dict[int, Any], stale: set[int]) -> None:
        """:meth:`_stale` by a scan of ``kept`` (parts before wholes), without an index: the first time (most
        walks that fail once fail only once, and an index costs more to make than a scan)."""
        kept = self._kept
        _mark_stale(kept, changed, ranges, stale)
        if stale:
            kept[:] = [v for v in kept if id(v) not in stale]
        self._indexed_upto = 0

    def close(self) -> None:
        self._taught.clear()
        self._renamed.clear()
        for index in self._index:
            index.clear()
        self._by_id.clear()
        for part in self._state:
            part.clear()
        self.__dict__.clear()
