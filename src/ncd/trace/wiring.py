"""From a list of steps over named values (a DAG) to the combinator IR.

At each step the live values form the current tuple (one segment each).  A step is a
diagram acting on some values: they are copied if still needed later (Copy: one copy for the
readers that follow within a few steps), brought together in order (Swap, over the smallest
range of segments that holds them, the other wires there ordered by when they are read next),
and the step is put beside identities on the other segments; values nobody needs any more are
deleted (Delete).  The order is chosen to need few crossings: of a copy's instances a step takes
the one beside the values its result is read with (``x + f(x)``: the right one), a step reading
nothing puts its values beside the value they are first read with, and a block's outputs are in
the order its steps leave them (:func:`wire`'s ``order``).  The module calls as nested blocks and the
folding of repeated layers are :mod:`ncd.trace.wiring_fold` (:func:`~ncd.trace.wiring_fold.assemble`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ncd.ir.axes import Segment, Type
from ncd.ir.checks import _nest
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.weave import Weave
from ncd.prims.elementwise import MultiplyOp
from ncd.prims.structure import AddOp, CopyOp, DeleteOp, SwapOp

__all__ = ["Step", "wire"]

#: a value's next reader within this many steps of the one before takes an instance of the same copy (the q, k, v maps
#: of one input: one copy into three, not three copies into two)
_SOON = 4


@dataclass
class Step:
    """A diagram applied to values ``ins`` (ids), producing values ``outs``; ``stack`` is its module path."""

    diagram: Diagram
    ins: list[int]
    outs: list[int]
    stack: tuple[tuple[str, str], ...] = ()
    title: str = ""
    members: list[Step] = field(default_factory=list)
    index: int = 0


def _box(prim: object) -> Box:
    return Box(prim)  # type: ignore[arg-type]


def wire(inputs: Sequence[int], steps: Sequence[Step], outputs: Sequence[int], segs: dict[int, Segment],
         order: list[int] | None = None) -> Diagram:
    """The diagram taking ``inputs`` to ``outputs`` by applying ``steps`` in order.  With ``order`` (an empty list): the
    outputs in the order the steps leave them (no crossing to arrange them), written into ``order``."""
    uses: dict[int, list[int]] = {}
    for k, step in enumerate(steps):
        for v in step.ins:
            uses.setdefault(v, []).append(k)
    end = len(steps)
    for v in outputs:
        uses.setdefault(v, []).append(end)
    last = {v: ks[-1] for v, ks in uses.items()}  # each value's last use (uses are listed in step order)
    made = {v: k for k, step in enumerate(steps) for v in step.outs}  # the step making each value
    live: list[int] = list(inputs)
    layers: list[Diagram] = []
    nothing = Identity(Type(()))  # no wires beside a step (Par.of drops it)

    def typ(values: Sequence[int]) -> Type:
        return Type(tuple([segs[v] for v in values]))

    def place(lo: int, middle: Diagram, hi: int) -> None:
        n = len(live)
        if isinstance(middle, (Par, Identity)):  # flattened and merged with the identities beside it
            layers.append(Par.of(Identity(typ(live[:lo])) if lo else nothing, middle,
                                 Identity(typ(live[hi:])) if hi < n else nothing))
            return
        # a box or block between the wires beside it: what Par.of makes of them, without its flattening pass
        if not lo and hi >= n:
            layers.append(middle)
            return
        left = beside(live[:lo]) if lo else None
        right = beside(live[hi:]) if hi < n else None
        parts = tuple(p for p in (left, middle, right) if p is not None)
        # Par(parts), its types made as Par.__post_init__ makes them (an identity's input is its output)
        before = left.dom.segments if left is not None else ()
        after = right.dom.segments if right is not None else ()
        node = Par.__new__(Par)
        node.__dict__.update(parts=parts, dom=Type((*before, *middle.dom.segments, *after)),
                             cod=Type((*before, *middle.cod.segments, *after)))
        _nest(node, middle.nesting())  # an identity's nesting is 0
        layers.append(node)

    besides: dict[tuple[int, ...], Identity] = {}

    def beside(values: list[int]) -> Identity:
        # the wires beside a step, one identity for the same values (the same wires pass beside many steps)
        key = tuple(values)
        found = besides.get(key)
        if found is None:
            found = besides[key] = Identity(typ(values))
        return found

    def apply(k: int, ins: Sequence[int], diagram: Diagram | None, outs: Sequence[int]) -> None:
        nonlocal live
        # copies: one instance per use here, one more if needed later
        taken: list[int] | None = None
        for v in dict.fromkeys(ins):
            have = live.count(v)
            want = ins.count(v) + (1 if last.get(v, -2) > k else 0)
            if want > have:
                # the next steps reading v soon after (each within a few steps of the one before): their instances
                # made by the same copy
                run, m = 0, k
                for j in uses[v]:
                    if j <= m:
                        continue
                    if j >= end or j > m + _SOON:
                        break
                    run, m = run + steps[j].ins.count(v), j
                if run:
                    want += run - (0 if last[v] > m else 1)
                want -= have - 1
                p = live.index(v)
                place(p, _box(CopyOp(Type((segs[v],)), want)), p + 1)
                live = live[:p] + [v] * want + live[p + 1:]
                if want == 2 and len(ins) == 1 and right(k, v, p, outs):
                    taken = [p + 1]
        # pick an instance of each input and bring them together, in order
        if taken is None:
            taken = _instances(live, ins)
            if len(ins) == 2 and taken[1] != taken[0] + 1 and diagram is not None and _symmetric(diagram):
                flipped = _instances(live, ins[::-1])  # b + a where the wires lie b, a: the same sum, no crossing
                if flipped[1] == flipped[0] + 1:
                    ins, taken = ins[::-1], flipped
        if ins:
            lo, hi = min(taken), max(taken) + 1
            if taken != list(range(lo, lo + len(taken))) or hi - lo != len(taken):
                while hi < len(live) and live[hi] in ins:  # other instances of the inputs, just right: in the crossing
                    hi += 1
                # the other wires after the inputs, those read sooner first (what the step makes is read with them)
                rest = sorted((p for p in range(lo, hi) if p not in taken), key=lambda p: following(live[p], k))
                order = taken + rest
                perm = tuple(p - lo for p in order)
                place(lo, _box(SwapOp(typ(live[lo:hi]), perm)), hi)
                live = live[:lo] + [live[p] for p in order] + live[hi:]
            start = lo
        else:
            start = anchor(k, outs)
        if diagram is not None:
            place(start, diagram, start + len(ins))
            live = live[:start] + list(outs) + live[start + len(ins):]
        # drop values nobody needs any more
        p = 0
        while p < len(live):
            v = live[p]
            if not last.get(v, -2) > k and (diagram is None or v in outs or v in ins):
                place(p, _box(DeleteOp(Type((segs[v],)))), p + 1)
                live = live[:p] + live[p + 1:]
            else:
                p += 1

    def following(v: int, k: int) -> int:
        # the first step after step k reading v
        return next((m for m in uses.get(v, ()) if m > k), end)

    def reader(v: int, j: int) -> tuple[Sequence[int], int] | None:
        # the first step after step j reading v with other values (past steps reading v alone, each making one value:
        # followed to what they make): its inputs, and where v's line lies among them
        for _ in range(16):
            later = uses.get(v, ())
            m = next((m for m in later if m > j), end)
            if m >= end:
                return None
            s = steps[m]
            if s.outs and all(w == v for w in s.ins):  # (of several values made: the first, where v was)
                v, j = s.outs[0], m
                continue
            return s.ins, s.ins.index(v)
        return None

    def anchor(k: int, outs: Sequence[int]) -> int:
        # a step reading nothing (a constant, a parameter): its outputs beside the value they are first read with
        found = reader(outs[0], k) if outs and k >= 0 else None
        if found is not None:
            ins, i = found
            for d in range(1, len(ins)):  # the nearest reads placed: after one read before it, before one after it
                if i - d >= 0:  # (after the value itself, or after the inputs of the step making it)
                    at = near(ins[i - d], -1)
                    if at is not None:
                        return at + 1
                if i + d < len(ins):
                    at = near(ins[i + d], 0)
                    if at is not None:
                        return at
        return len(live)

    def near(v: int, side: int) -> int | None:
        # where v lies, or (made later by a step whose inputs all lie here) where that step's first/last input lies
        if v in live:
            return live.index(v)
        k = made.get(v)
        ins = steps[k].ins if k is not None else ()
        return live.index(ins[side]) if ins and all(w in live for w in ins) else None

    def right(k: int, v: int, p: int, outs: Sequence[int]) -> bool:
        # a one-input step on a value copied at p, p + 1: whether it takes the right instance — where what it makes is
        # read with the kept copy on its left (``x + f(x)``) or with values right of the copies
        found = reader(outs[0], k) if outs else None
        if found is None:
            return False
        ins, i = found
        if i and ins[i - 1] == v:
            return True
        if i + 1 < len(ins) and ins[i + 1] == v:
            return False
        kept = steps[m].ins if (m := following(v, k)) < end else ()  # the kept copy's next reader
        j = kept.index(v) if kept else 0
        if j + 1 < len(kept) and kept[j + 1] not in live:  # read with a value made later, on its right
            return True
        if j and kept[j - 1] not in live:
            return False
        for w in [*ins[i + 1:i + 2], *ins[max(i - 1, 0):i]]:  # its neighbours there: right of the copies or left
            if w in live:
                return live.index(w) > p
        return False

    for v in list(dict.fromkeys(inputs)):
        if not uses.get(v):
            apply(-1, [], None, [])
            break
    for k, step in enumerate(steps):
        apply(k, step.ins, step.diagram, step.outs)
    # arrange the outputs
    for v in dict.fromkeys(outputs):
        want = list(outputs).count(v)
        if want > 1:
            p = live.index(v)
            place(p, _box(CopyOp(Type((segs[v],)), want)), p + 1)
            live = live[:p] + [v] * want + live[p + 1:]
    if order is not None:
        if len(live) == len(outputs) == len(set(outputs)) and set(live) == set(outputs):  # (each output once)
            order[:] = live  # where the steps leave them
            return Seq.of(*layers) if len(layers) > 1 else layers[0] if layers else Identity(typ(inputs))
        order[:] = outputs
    taken: list[int] = []
    for v in outputs:
        taken.append(next(p for p, w in enumerate(live) if w == v and p not in taken))
    if taken != list(range(len(live))):
        perm = tuple(taken)
        place(0, _box(SwapOp(typ(live), perm)), len(live))
        live = [live[p] for p in taken]
    if not layers:
        return Identity(typ(inputs))
    return Seq.of(*layers) if len(layers) > 1 else layers[0]


def _symmetric(diagram: Diagram) -> bool:
    """Whether a two-input step computes exactly the same with its inputs exchanged: a sum or an elementwise product
    of two tensors of one type, woven alike (IEEE addition and multiplication of two numbers commute; a sum of three
    would round in another order)."""
    segments = diagram.dom.segments
    if len(segments) != 2 or segments[0] != segments[1]:
        return False
    while isinstance(diagram, Weave):
        if diagram.dom_pos[0] != diagram.dom_pos[1]:
            return False
        diagram = diagram.inner
    return isinstance(diagram, Box) and isinstance(diagram.prim, (AddOp, MultiplyOp)) and diagram.prim.n == 2


def _instances(live: list[int], ins: Sequence[int]) -> list[int]:
    """The positions in ``live`` of an instance of each input: where a run of ``live`` holds them in order (a copy's
    instances are side by side: the one beside the step's other inputs), else each value's first instance not taken."""
    taken: list[int] = []
    for v in ins:
        p = live.index(v)  # the first instance not taken yet
        while p in taken:
            p = live.index(v, p + 1)
        taken.append(p)
    n, lo = len(ins), taken[0] if ins else 0
    if n < 2 or taken == list(range(lo, lo + n)):
        return taken
    first = ins[0]
    for p in range(lo + 1, len(live) - n + 1):
        if live[p] == first and live[p:p + n] == list(ins):
            return list(range(p, p + n))
    return taken
