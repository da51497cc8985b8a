"""Measuring a fragment without laying its containers out: what the page layout asks of a one-row drawing or of a wide
column it will not draw (:meth:`Probing.probe`, a lower bound of its width and the smallest size of its text), and the
smallest text and widest advance of a gap's wire labels.  :class:`~ncd.render.layout.Layout` is a :class:`Probing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave
from ncd.render.context import LayoutContext
from ncd.render.extents import smallest_text
from ncd.render.generic import family
from ncd.render.style import Style
from ncd.render.typeset import Piece, pieces, typeset_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ncd.render.frag import Frag

__all__ = ["Probing"]


class Probing(LayoutContext):
    """A layout's measures of the fragments it would make (:class:`~ncd.render.layout.Layout` makes them)."""

    def __init__(self, style: Style) -> None:
        super().__init__(style)
        #: the containers :meth:`probe` measured as columns without laying them out, by ``id``: the node, the largest
        #: lower bound of its width, and the contexts (block depth, path, fences) it was measured in
        self.probed: dict[int, tuple[Diagram, list[float], list[tuple[int, list[str], list[str]]]]] = {}
        #: :meth:`probe`'s counterpart of the node it measures in an earlier block of its family (``layers.0`` for
        #: ``layers.1``), or ``None``: an equal leaf there measures it (its fragment, laid out once)
        self._twin: Diagram | None = None
        #: the smallest text and the widest advance of the wire labels of a type (by ``id``, and the wires labelled)
        #: or an axis (by ``id``), kept with it; where no label is generic
        self._label_smallest: dict[Any, tuple[Any, tuple[float, float]]] = {}

    if TYPE_CHECKING:  # (the fragments measured are :class:`~ncd.render.layout.Layout`'s)
        def lay(self, node: Diagram) -> Frag: ...
        def lay_group(self, node: Diagram, count: int) -> Frag: ...
        def groups(self, parts: Sequence[Diagram]) -> list[tuple[Diagram, int]]: ...
        def _group_key(self, node: Diagram, count: int) -> tuple[Any, ...]: ...
        def _enter(self, node: Block) -> tuple[str, str | None]: ...
        def _leave(self) -> None: ...

    # -- measuring a fragment without laying its containers out -------------------------------------------------
    def probe(self, node: Diagram, count: int = 1, group: bool = True, text: bool = True,
              stop: float = float("inf")) -> tuple[float, float]:
        """A lower bound of the width of the fragment :meth:`lay_group` (``group``) or :meth:`lay` would make of
        ``node`` (``count`` of it folded), and the smallest size of its text (``inf``: none) — exact — without making
        its sequences, parallel parts, weaves, fences and parentheses: what the page layout asks of a one-row drawing
        or a wide column it will not draw (it is wider than the page, or split into rows).  The boxes and the other
        leaves are laid out as :meth:`lay_group` / :meth:`lay` would, and kept in the memo for the page to place
        (wires alone are not: no width, no text); each gap counts its labels' smallest text and the width of its
        widest label (at least 8 points), as :meth:`gap` makes it.  Only for :class:`Layout` itself,
        without notes (a subclass may draw a container otherwise); ``text=False``: the width only (the smallest text
        is ``inf``), and ``stop``: a lower bound past ``stop`` is enough (whether the column is wider than a row): the
        measure stops there, its containers' remaining parts not measured (``> stop`` exactly when the whole lower
        bound is; the page collapses such a column's blocks, and draws no part of it it did not measure)."""
        kind = self._container(node, count)
        if kind is None:
            if type(node) is Identity:  # wires: no width, no text (:meth:`identity`); laid out where the page places them
                return 0.0, float("inf")
            twin = self._twin
            if group and twin is not None and twin is not node and type(twin) is type(node) and self.memo is not None \
                    and self._reads is None and self.generic is None and not self.style.costs and twin == node:
                node = twin  # (equal nodes in equal contexts are laid out alike: the page may never place this one)
            frag = self.lay_group(node, count) if group else self.lay(node)
            if not text:
                return frag.w, float("inf")
            return frag.w, smallest_text(frag, float("inf"), self.memo if self.memo is not None else {})
        memo = self.memo if group and self.generic is None else None
        key = ("probe",) + self._group_key(node, count) if memo is not None else ()
        if text:
            stop = float("inf")  # (the smallest text is of every part)
        if memo is not None:
            hit = memo.get(key)
            if hit is not None and hit[0] is node and (hit[2] or not text):
                return hit[1]  # type: ignore[no-any-return]
            past = memo.get(("past",) + key) if stop < float("inf") else None
            if past is not None and past[0] is node and past[1] > stop:
                return past[1], float("inf")
        twin = self._twin
        try:
            found = self._probe(node, count, kind, text, stop)
        finally:
            self._twin = twin
        if memo is not None:
            if found[0] > stop:  # (perhaps stopped short: a lower bound, not the whole one kept as the probe's)
                memo[("past",) + key] = (node, found[0])
            else:
                memo[key] = (node, found, text)
            if count == 1:  # the contexts it was asked in: its exact width is laid out only if asked (wrap)
                entry = self.probed.get(id(node))
                if entry is None or entry[0] is not node:
                    entry = self.probed[id(node)] = (node, [0.0], [])
                entry[1][0] = max(entry[1][0], found[0])
                entry[2].append((self.depth, list(self.path), list(self.fences)))
        return found

    def _container(self, node: Diagram, count: int) -> str | None:
        """The kind of container :meth:`probe` measures ``node`` as (``None``: a leaf, laid out)."""
        if count != 1:
            return "folded"
        if isinstance(node, (Identity, Box)):
            return None
        if isinstance(node, Seq):
            return "seq"
        if isinstance(node, Par):
            return "par"
        if isinstance(node, Weave):  # (a box or wires woven: a leaf, laid out and kept for the page to place)
            inner = node.inner
            while isinstance(inner, Weave):
                inner = inner.inner
            return None if isinstance(inner, (Box, Identity)) else "weave"
        if isinstance(node, Block):
            depth = self.style.depth
            return None if (depth is not None and self.depth >= depth) or id(node) in self.collapse else "block"
        if isinstance(node, Repeat):
            return "repeat"
        return None

    def _probe(self, node: Diagram, count: int, kind: str, text: bool, stop: float) -> tuple[float, float]:
        inf = float("inf")
        parens = 2 * 9.0 + 8.0  # (a fold's or repetition's parentheses widen its body by this or more)
        if kind == "folded":
            w, small = self.probe(node, group=False, text=text, stop=stop - parens)
            return self._probe_parens(w, small, (), typeset_text(f"×{count}"))
        if kind == "seq":
            assert isinstance(node, Seq)
            groups = self.groups(node.parts)
            total, small = 0.0, inf
            labels = self.style.labels == "all"
            twin = self._twin
            twins = twin.parts if type(twin) is Seq and len(twin.parts) == len(node.parts) else None
            start = 0
            for k, (part, n) in enumerate(groups):
                self._twin = twins[start] if twins is not None else None
                start += n
                w, s = self.probe(part, n, text=text, stop=stop - total)
                total += w
                small = min(small, s)
                if k:  # the gap before it: as wide as its widest label and at least 8 points, its labels those of
                    if labels:  # the wires in between it labels (:meth:`gap`)
                        prev = groups[k - 1][0]
                        label_s, label_w = self._labels_measure(prev.cod, self.gap_labels(prev, part))
                        total += max(8.0, label_w)
                        if label_s < small:
                            small = label_s
                    else:
                        total += 8.0
                if total > stop:  # (wider than asked: the rest only adds to it)
                    return total, inf
            return total, small
        if kind == "par":
            assert isinstance(node, Par)
            twin = self._twin
            twins = twin.parts if type(twin) is Par and len(twin.parts) == len(node.parts) else None
            found = []
            for k, p in enumerate(node.parts):
                self._twin = twins[k] if twins is not None else None
                found.append(self.probe(p, 1, text=text, stop=stop))
                if found[-1][0] > stop:
                    return found[-1][0], inf
            return max(w for w, _ in found), min(s for _, s in found)
        if kind == "weave":
            assert isinstance(node, Weave)
            self._twin = self._twin.inner if type(self._twin) is Weave else None
            # (the inner fragment with the woven wires' bends around it)
            return self.probe(node.inner, group=False, text=text, stop=stop)
        if kind == "block":
            assert isinstance(node, Block)
            twin = self._twin
            if self.memo is not None and not isinstance(twin, Block):  # the block of its family measured last
                key = ("twin of", node.name)
                name = self.memo.get(key)
                if name is None:
                    name = self.memo[key] = ("twin", family(node.name))
                latest = self.memo.get(name)
                twin = latest[0] if latest is not None and latest[0] is not node else None
                self.memo[name] = (node,)
            self._twin = twin.body if isinstance(twin, Block) and twin.dom == node.dom and twin.cod == node.cod \
                else None
            note = self._enter(node)[1]
            try:
                w, small = self.probe(node.body, group=False, text=text, stop=stop - 14.0)
            finally:
                self._leave()
            parts = typeset_text(node.name)
            tw = self.text_size(parts, self.style.text_size)[0]
            small = min(small, _text_smallest(parts, self.style.text_size))
            w = max(w + 14.0, tw + 14.0)
            if note:
                note_parts = typeset_text(note)
                w = max(w, self.text_size(note_parts, self.style.label_size)[0] + 14.0)
                small = min(small, _text_smallest(note_parts, self.style.label_size))
            return w, small
        assert kind == "repeat" and isinstance(node, Repeat)
        self._twin = self._twin.body if type(self._twin) is Repeat else None
        w, small = self.probe(node.body, group=False, text=text, stop=stop - parens)
        var = "λ" if node.var in ("lam", "lambda", "λ") else node.var
        return self._probe_parens(w, small, (Piece(var, italic=len(var) == 1), Piece(" = ")) + pieces(node.start),
                                  pieces(node.stop - 1))

    def _probe_parens(self, body_w: float, small: float, low: tuple[Piece, ...], high: tuple[Piece, ...]
                      ) -> tuple[float, float]:
        """:meth:`parens`'s width (from a lower bound of its body's) and smallest text."""
        size, arc = self.style.label_size, 9.0
        w = body_w + 2 * arc + 8.0
        out = w
        if low:
            out = max(out, self.text_size(low, size)[0])
            small = min(small, _text_smallest(low, size))
        if high:
            out = max(out, w - arc + self.text_size(high, size)[0])
            small = min(small, _text_smallest(high, size))
        return out, small

    def _labels_smallest(self, typ: Type, labels: bool | tuple[bool, ...] = True) -> float:
        """The smallest text of the wire labels a gap carrying ``typ`` draws (``inf``: none), as :meth:`gap` finds
        them (its legend rows are not kept: no gap is made); ``labels``: the wires it labels (:meth:`gap_labels`)."""
        return self._labels_measure(typ, labels)[0]

    def _labels_measure(self, typ: Type, labels: bool | tuple[bool, ...] = True) -> tuple[float, float]:
        """The smallest text of the wire labels a gap carrying ``typ`` draws (``inf``: none) and the widest label's
        advance (``0``: none), as :meth:`gap` finds them: the gap is that wide or wider (its legend rows are not kept:
        no gap is made); ``labels``: the wires it labels (:meth:`gap_labels`).  Each axis object of the labelled wires
        is read once, by ``id`` (no axis is hashed): equal axes have equal labels, so the smallest and the widest are
        those of the distinct axes."""
        if labels is False:
            return float("inf"), 0.0
        kept = self.generic is None and self._reads is None  # (by type: a page's gaps carry a few types many times)
        key: Any = id(typ) if labels is True else (id(typ), labels)
        by_axis = self._label_smallest
        if kept:
            hit = by_axis.get(key)
            if hit is not None and hit[0] is typ:
                return hit[1]
        mask = labels if isinstance(labels, tuple) else None  # (per wire: whether it is labelled)
        size = self.style.label_size
        outer, self._rows = self._rows, []
        found, widest = float("inf"), 0.0
        seen: set[int] = set()
        k = -1
        try:
            for seg in typ.segments:
                for axis in seg.axes:
                    k += 1
                    if mask is not None and not mask[k]:
                        continue
                    i = id(axis)
                    if i in seen:
                        continue
                    seen.add(i)
                    known = by_axis.get(i) if kept else None
                    if known is not None and known[0] is axis:
                        value, advance = known[1]
                    else:
                        label = self._wire_label(axis, None, size)
                        value, advance = label.smallest, label.advance
                        if kept:
                            by_axis[i] = (axis, (value, advance))
                    if value < found:
                        found = value
                    if advance > widest:
                        widest = advance
        finally:
            self._rows = outer
        if kept:
            by_axis[key] = (typ, (found, widest))
        return found, widest



def _text_smallest(parts: tuple[Piece, ...], size: float) -> float:
    """The smallest size of a non-blank run of ``parts`` typeset at ``size`` (as :func:`smallest_text` reads it)."""
    from ncd.render.wires import _typeset_at_origin

    runs = _typeset_at_origin(tuple(parts), size, False)[0].runs
    return min((run.size for run in runs if run.text.strip()), default=float("inf"))
