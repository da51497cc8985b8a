"""Derive the prefill and the one-token step of a causal diagram, with its caches as saved/loaded wires.

The rule is the diagram's own: a new token reads earlier positions only through the wires
that carry a **key axis** (the key side of a causal mask, ``x`` in ``◸(y, x)``).  Such a
wire is *position-wise* while every box it passes acts on each key position alone (the key
axis is woven past the box, or only renamed or crossed); the first box that mixes key
positions (the scores contraction, the softmax, the contraction with the values) is where
the past must be present.  That wire, just before the mixing box, is a **cache**:

* the **prefill** runs the whole prompt and saves every cache (``→K_i``) and returns it;
* the **step** takes one new token and the past caches, loads each one (``K_i→``), joins
  the new position after it (``⧺`` along the key axis, ``c`` past positions + 1) and saves
  the result; everything after the cut sees ``c+1`` key positions, everything before one.

Positions that depend on the absolute index (a learned table sliced ``0:t``, sinusoidal
positions, rotary embeddings ``ρ``) are taken at ``c : c+1`` in the step.  Both results are ordinary diagrams.
The token axis, the causal masks' axes and windows, and the checks that the diagram is causal are
:mod:`ncd.inference.causal`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy

from ncd.inference.causal import _renamed_by_view, _require_unambiguous, require_causal, token_names, windows_of
from ncd.inference.causal import causal_axes as causal_axes
from ncd.inference.causal import token_axis as token_axis
from ncd.inference.errors import DecodeError
from ncd.inference.sites import CacheSite, _renames, _resize_axis, _save, _with_axis, resize
from ncd.inference.windows import (
    at_length,
    prefill_window,
    state_segment,
    step_window,
    window_of,
)
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, unweave
from ncd.ir.interpreter import Transform
from ncd.ir.rules import DECODE
from ncd.ir.size import Size, size_text, sizes_equal, symbol
from ncd.prims.attention import CausalMaskOp
from ncd.prims.constant import SinusoidalOp
from ncd.prims.movement import ConcatOp, SliceOp
from ncd.prims.opaque import ViewOp
from ncd.prims.scan import ScanOp
from ncd.prims.structure import CopyOp, DeleteOp, LoadOp, RenameOp, SaveOp, SwapOp, TransposeOp

__all__ = ["DecodeError", "CacheSite", "Derivation", "derive", "token_axis", "causal_axes"]


#: boxes that may carry a key axis as one of their own wires and still act on each key position alone
_POSITIONWISE = (RenameOp, TransposeOp, CopyOp, SwapOp, DeleteOp, SaveOp)


@dataclass
class _Wire:
    """A segment in flight: its type in the derived diagram and which key axes already hold every position."""

    segment: Segment
    full: frozenset[str] = frozenset()


@dataclass
class Derivation:
    """The result of :func:`derive`: the derived diagram (body only) and the caches it found."""

    body: Diagram
    sites: list[CacheSite]


@dataclass
class _Walk(Transform[_Wire]):
    """The prefill or the step (a :class:`~ncd.ir.interpreter.Transform`: each node rebuilt at the sizes of the
    wires that reach it, caches cut where key positions mix)."""

    mode: str  # "prefill" or "step"
    keys: frozenset[str]  # key axes (the key side of every causal mask)
    tokens: frozenset[str]  # the token axis and every name it is renamed to
    windows: dict[str, Size]  # sliding windows by key axis
    past: Size  # symbol for the number of positions before the step (step only)
    new: Size  # new positions in the step (1)
    sites: list[CacheSite] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    trims: set[str] = field(default_factory=set)  # step: causal convolutions' outputs awaiting the slice of their first
    windowed: set[int] = field(default_factory=set)  # convolutions whose window state is cut (by id)
    #: prefill of a diagram traced at a fixed length: token axes of the traced ``length[0]`` become ``length[1]``
    length: tuple[Size, Size] | None = None
    woven: int = 0  # how many weaves the walk is inside

    # -- the walk (the override points of ncd.ir.interpreter.Transform) ------------------
    def run(self, node: Diagram, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        if len(wires) != len(node.dom):
            raise DecodeError(f"internal: {len(wires)} wires reach a node taking '{node.dom}'")
        return super().run(node, wires)

    def identity(self, node: Identity, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        return Identity(Type(tuple(w.segment for w in wires)), node.source), wires

    def block(self, node: Block, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        self.blocks.append(node.name)
        try:
            return super().block(node, wires)
        finally:
            self.blocks.pop()

    def repeat(self, node: Repeat, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        if self.repeats and _contains_mask(node.body, self.keys):
            raise DecodeError(f"repeat {node.name or node.var!r}: caches inside nested repetitions are not supported")
        self.repeats.append(node)
        try:
            return super().repeat(node, wires)
        finally:
            self.repeats.pop()

    def box(self, box: Box, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        return self.leaf(box, wires)

    def weave(self, node: Weave, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        return self.leaf(node, wires)

    def unknown(self, node: Diagram, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        raise DecodeError(f"decode: no rule for diagram node {type(node).__name__}")

    def leaf(self, node: Box | Weave, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        """A box or a woven diagram: cut the caches it mixes, then rebuild it at the wires' sizes."""
        prefix: list[Diagram] = []
        cut = self.mixed(node, wires)
        if cut:
            cache, wires = self.cut(node, wires, cut)
            prefix.append(cache)
        core, _ = unweave(node)
        if isinstance(core, Box) and id(core) not in self.windowed \
                and (window := window_of(core.prim, self.tokens, core.text())) is not None:
            if self.woven:
                raise DecodeError(f"{core.text()}: a convolution or shift over the token axis inside a weave of a"
                                  " composite diagram; its window state needs the whole wire")
            self.windowed.add(id(core))
            cache, wires = self.window(*window, wires)
            prefix.append(cache)
        if isinstance(node, Weave):
            new, out = self.through(node, wires)
        else:
            new, out = self.rule(node, wires)
        return Seq.of(*prefix, new), out

    def through(self, node: Weave, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        axis = node.axis
        inner_wires = []
        for w, p in zip(wires, node.dom_pos):
            if p is None:
                inner_wires.append(w)
                continue
            carried = w.segment.axes[p]
            axis = dataclasses.replace(axis, size=carried.size)
            inner_wires.append(_Wire(w.segment.with_axes(w.segment.axes[:p] + w.segment.axes[p + 1:]), w.full - {axis.name}))
        if axis.name in self.tokens and not any(p is not None for p in node.dom_pos):
            axis = self.resize_axis(axis, {})
        self.woven += 1
        try:
            inner, inner_out = self.run(node.inner, inner_wires)
        finally:
            self.woven -= 1
        new = Weave(inner, axis, node.dom_pos, node.cod_pos)
        full_axis = any(axis.name in w.full for w, p in zip(wires, node.dom_pos) if p is not None)
        out = [_Wire(seg, w.full | ({axis.name} if full_axis else frozenset())) for seg, w in zip(new.cod, inner_out)]
        return new, out

    def rule(self, node: Box, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        """The box's rule of :data:`DECODE` (its own, or its kind's: position-wise, resized to the wires' sizes)."""
        result: tuple[Diagram, list[_Wire]] = DECODE.apply(node.prim, self, node, wires, self.mapping(node, wires))
        return result

    def guard(self, node: Box, wires: list[_Wire]) -> None:
        """In the step of a model without causal masks, refuse a box that mixes token positions."""
        if not self.keys and self.mode == "step":
            self.refuse_mixing(node, wires)

    def resized(self, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> tuple[Diagram, list[_Wire]]:
        """The box rebuilt at the wires' sizes; its outputs hold every position of the key axes its inputs held."""
        full = frozenset().union(*(w.full for w in wires)) if wires else frozenset()
        new = Box(resize(node.prim, mapping, self.default_size), node.label, node.source)
        return new, [_Wire(seg, full & frozenset(seg.names)) for seg in new.cod]

    def traced_length(self, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> tuple[Diagram, list[_Wire]]:
        """A box of a diagram traced at a fixed length that reads the length (a convolution, a slice) rebuilt for
        the prefill's length."""
        full = frozenset().union(*(w.full for w in wires)) if wires else frozenset()
        new = Box(at_length(node.prim, mapping, self.default_size), node.label, node.source)  # type: ignore[arg-type]
        return new, [_Wire(seg, full & frozenset(seg.names)) for seg in new.cod]

    # -- recurrences ---------------------------------------------------------------------
    def scan(self, node: Box, mapping: dict[str, Size]) -> tuple[Diagram, list[_Wire]]:
        """A scan over the token axis: the prefill saves its final states (``→S_i``); the step loads them in place of
        the initial states (``S_i→``), runs one position and saves the new ones."""
        prim = node.prim
        assert isinstance(prim, ScanOp)
        new = Box(resize(prim, mapping, self.default_size), node.label, node.source)
        c, k = prim.consts, prim.carry
        states = [new.dom[c + j] for j in range(k)]
        sites = [dataclasses.replace(self.state_site(seg, "S"), aliases=_renames(prim.body, seg)) for seg in states]
        self.sites[-len(sites):] = sites
        index = [symbol(site.var) if site.var else None for site in sites]
        after = Par.of(*(Box(SaveOp(Type((seg,)), site.key, i)) for seg, site, i in zip(states, sites, index)),
                       *(Identity(Type((seg,))) for seg in new.cod.segments[k:]))
        if self.mode == "prefill":
            result: Diagram = Seq.of(new, after)
        else:
            before = Par.of(*(Identity(Type((seg,))) for seg in new.dom.segments[:c]),
                            *(Seq.of(Box(DeleteOp(Type((seg,)))), Box(LoadOp(Type((seg,)), site.key, i)))
                              for seg, site, i in zip(states, sites, index)),
                            *(Identity(Type((seg,))) for seg in new.dom.segments[c + k:]))
            result = Seq.of(before, new, after)
        return result, [_Wire(seg) for seg in new.cod]

    def window(self, axis: str, held: int, wires: list[_Wire]) -> tuple[Diagram, list[_Wire]]:
        """The window state before a causal convolution or a shift over the token axis (:mod:`ncd.inference.windows`)."""
        (w,) = wires  # a convolution or a pad takes one wire
        site = self.state_site(state_segment(w.segment, axis, held), "W")
        index = symbol(site.var) if site.var else None
        if self.mode == "prefill":
            return prefill_window(w.segment, axis, held, site.key, index), wires
        body, whole = step_window(w.segment, axis, held, site.key, index)
        return body, [_Wire(whole, w.full)]

    def state_site(self, segment: Segment, role: str) -> CacheSite:
        """A state ``role`` (``S`` a scan's carry, ``W`` a window of past positions) of one sequence."""
        repeat = self.repeats[-1] if self.repeats else None
        taken = {s.key for s in self.sites if (s.var or None) == (repeat.var if repeat else None)}
        key, n = role, 2
        while key in taken:
            key, n = f"{role}{n}", n + 1
        site = CacheSite(key, repeat.var if repeat else None, segment, "",
                         (repeat.stop - repeat.start) if repeat else sympy.Integer(1),
                         repeat.start if repeat else sympy.Integer(0), tuple(self.blocks))
        self.sites.append(site)
        return site

    def refuse_mixing(self, node: Box, wires: list[_Wire]) -> None:
        """Without causal masks, a box mixing token positions other than a scan has no cache rule: refuse it."""
        own = {a.name for seg in node.dom for a in seg.axes} & self.tokens
        if own and _mixes_box(node, own):
            raise DecodeError(f"{node.text()}: mixes the token positions ({', '.join(sorted(own))}) of a model without"
                              " causal masks, and only scans over the token axis carry a state; the step cannot be"
                              " derived")

    # -- sizes ---------------------------------------------------------------------------
    def mapping(self, node: Diagram, wires: list[_Wire]) -> dict[str, Size]:
        """New sizes by axis name: what the wires reaching ``node`` carry where it expects other sizes."""
        found: dict[str, Size] = {}
        for expected, wire in zip(node.dom, wires):
            if len(expected) != len(wire.segment):
                raise DecodeError(f"internal: '{wire.segment}' reaches a box expecting '{expected}'")
            for a, b in zip(expected.axes, wire.segment.axes):
                if not sizes_equal(a.size, b.size):
                    found[a.name] = b.size
        return found

    def default_size(self, axis: Axis) -> Size | None:
        """The size of a token axis that no wire sizes: one new position in the step; the prompt's length ``t`` in the
        prefill of a diagram traced at a fixed length (where the axis had the traced length)."""
        if self.mode == "step" and axis.name in self.tokens:
            return self.new
        if self.length is not None and axis.name in self.tokens and sizes_equal(axis.size, self.length[0]):
            return self.length[1]
        return None

    def resize_axis(self, axis: Axis, mapping: Mapping[str, Size]) -> Axis:
        return _resize_axis(axis, mapping, self.default_size)

    # -- caches --------------------------------------------------------------------------
    def mixed(self, node: Box | Weave, wires: list[_Wire]) -> list[int]:
        """Input wires holding only new positions of a key axis that ``node`` mixes."""
        core, weaves = unweave(node)
        woven = {w.axis.name for w in weaves}
        result = []
        for j, w in enumerate(wires):
            fresh = (set(w.segment.names) & self.keys) - w.full
            if not fresh:
                continue
            if isinstance(core, Box):
                if _mixes_box(core, fresh - woven):
                    result.append(j)
            elif _mixes(core, fresh):
                result.append(j)
        return result

    def cut(self, node: Diagram, wires: list[_Wire], cut: list[int]) -> tuple[Diagram, list[_Wire]]:
        parts: list[Diagram] = []
        out: list[_Wire] = []
        for j, w in enumerate(wires):
            if j not in cut:
                parts.append(Identity(Type((w.segment,))))
                out.append(w)
                continue
            (axis_name,) = sorted((set(w.segment.names) & self.keys) - w.full)[:1]
            site = self.site(node, w.segment, axis_name)
            index = symbol(site.var) if site.var else None
            k = w.segment.index(axis_name)
            new_axis = w.segment.axes[k]
            if self.mode == "prefill":
                parts.append(_save(w.segment, k, site, index, new_axis.size, new_axis.size))
                out.append(_Wire(w.segment, w.full | {axis_name}))
                continue
            past_axis = dataclasses.replace(new_axis, size=site.held(self.past))
            full_axis = dataclasses.replace(new_axis, size=past_axis.size + new_axis.size)
            past = _with_axis(w.segment, k, past_axis)
            whole = _with_axis(w.segment, k, full_axis)
            join = ConcatOp((past_axis, new_axis), full_axis, Segment(w.segment.axes[:k]), Segment(w.segment.axes[k + 1:]))
            parts.append(Seq.of(
                Par.of(Box(LoadOp(Type((past,)), site.key, index)), Identity(Type((w.segment,)))),
                Box(join),
                _save(whole, k, site, index, full_axis.size, self.past + new_axis.size),
            ))
            out.append(_Wire(whole, w.full | {axis_name}))
        return Par.of(*parts), out

    def site(self, consumer: Diagram, segment: Segment, axis_name: str) -> CacheSite:
        core, _ = unweave(consumer)
        keeps = any(axis_name in seg.names for seg in core.cod)
        role = "K" if keeps else "V"
        repeat = self.repeats[-1] if self.repeats else None
        taken = {s.key for s in self.sites if (s.var or None) == (repeat.var if repeat else None)}
        key, n = role, 2
        while key in taken:
            key, n = f"{role}{n}", n + 1
        window = self.windows.get(axis_name)
        if window is not None and window.is_number and int(window) < 2:
            raise DecodeError(f"the causal mask on {axis_name} has a window of {size_text(window)}: a query sees only"
                              " itself, nothing is cached; write the attention without the mask")
        site = CacheSite(
            key, repeat.var if repeat else None, segment, axis_name,
            (repeat.stop - repeat.start) if repeat else sympy.Integer(1),
            repeat.start if repeat else sympy.Integer(0), tuple(self.blocks), window=window,
        )
        self.sites.append(site)
        return site

    # -- absolute positions ----------------------------------------------------------------
    def positions_slice(self, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> tuple[Diagram, list[_Wire]]:
        prim = node.prim
        assert isinstance(prim, SliceOp)
        if prim.start != 0 or prim.step != 1:
            raise DecodeError(f"{node.text()}: positions sliced from {size_text(prim.start)} with step"
                              f" {size_text(prim.step)}; the step derivation knows tables sliced from 0")
        axis = self.resize_axis(prim.axis, mapping)
        output = dataclasses.replace(prim.output, size=self.new)
        new = Box(SliceOp(axis, self.past, self.past + self.new, prim.step, output), node.label, node.source)
        return new, [_Wire(new.cod[0])]

    def positions_table(self, node: Box) -> tuple[Diagram, list[_Wire]]:
        prim = node.prim
        assert isinstance(prim, SinusoidalOp)
        position, feature = prim.segment.axes
        whole = dataclasses.replace(position, size=self.past + self.new)
        table = Box(SinusoidalOp(prim.segment.with_axes((whole, feature)), prim.base), node.label, node.source)
        last = dataclasses.replace(position, size=self.new)
        new = Seq.of(table, _slice_leading(whole, last, feature, self))
        return new, [_Wire(new.cod[0])]


def _slice_leading(whole: Axis, last: Axis, feature: Axis, walk: _Walk) -> Diagram:
    """``c+1 m -> 1 m``: keep the last position of a table (the slice woven over the feature wire)."""
    pick = Box(SliceOp(whole, walk.past, walk.past + walk.new, sympy.Integer(1), last))
    return Weave(pick, feature, (1,), (1,))


def _mixes_box(box: Box, names: set[str]) -> bool:
    """Whether ``box`` has one of ``names`` as its own wire and mixes positions along it."""
    own = {a.name for seg in box.dom for a in seg.axes} & names
    if not own or isinstance(box.prim, _POSITIONWISE):
        return False
    if isinstance(box.prim, ViewOp):  # a view that keeps the key axis whole (or only renames it) is position-wise
        return not all(_renamed_by_view(box.prim, n) for n in own)
    return True


def _mixes(node: Diagram, names: set[str]) -> bool:
    """Whether some box inside ``node`` has one of ``names`` as its own wire and mixes along it."""
    return any(_mixes_box(box, names) for box in node.boxes())


def _contains_mask(node: Diagram, keys: frozenset[str]) -> bool:
    return any(isinstance(b.prim, CausalMaskOp) for b in node.boxes())


# -- entry point ------------------------------------------------------------------------------


def derive(diagram: Diagram, mode: str, token: Axis, past: str = "c") -> Derivation:
    """Walk ``diagram`` (repetition counts bound) and return its ``mode`` (prefill or step) body and caches."""
    keys = require_causal(diagram, token_names(diagram, token.name))
    _require_unambiguous(diagram, token, keys)
    walk = _Walk(mode, keys, token_names(diagram, token.name), windows_of(diagram), symbol(past), sympy.Integer(1))
    if mode == "prefill" and not token.size.free_symbols:
        walk.length = (token.size, symbol(token.name))
    wires = []
    for seg in diagram.dom:
        if mode == "step" or walk.length is not None:
            seg = seg.with_axes(walk.resize_axis(a, {}) for a in seg.axes)
        wires.append(_Wire(seg))
    body, _ = walk.run(diagram, wires)
    if walk.trims:
        raise DecodeError(f"decode: the padded convolution over {', '.join(sorted(walk.trims))} is not followed by the"
                          " slice of its first t outputs, so it is not causal; no step can be derived")
    return Derivation(body, walk.sites)

