"""From a list of steps over named values (a DAG) to the combinator IR.

At each step the live values form the current tuple (one segment each).  A step is a
diagram acting on some values: they are copied if still needed later (Copy: one copy for the
readers that follow within a few steps), brought together in order (Swap, over the smallest
range of segments that holds them, the other wires there ordered by when they are read next),
and the step is put beside identities on the other segments; values nobody needs any more are
deleted (Delete).  The order is chosen to need few crossings: of a copy's instances a step takes
the one beside the values its result is read with (``x + f(x)``: the right one), a step reading
nothing puts its values beside the value they are first read with, and a block's outputs are in
the order its steps leave them.  Module calls become nested :class:`~ncd.ir.diagram.Block`\\ s, and a run
of consecutive blocks with equal bodies, each feeding the next, folds into one
:class:`~ncd.ir.diagram.Repeat` (every iteration keeps its own parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ncd.errors import NCDError
from ncd.ir.axes import Segment, Type
from ncd.ir.checks import _nest
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq
from ncd.prims.structure import CopyOp, DeleteOp, SwapOp

__all__ = ["Step", "wire", "assemble"]

#: Whether a layer whose steps are an earlier layer's (equal diagrams in the same pattern) takes that layer's wired body
#: (:func:`realise`; off: every layer is wired; the diagrams are equal)
LAYERS_ONCE = True

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


def assemble(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment], inputs: Sequence[int],
             fold: bool = True, shared: bool = False) -> Diagram:
    """Group steps into nested blocks by module path, fold repetitions, and wire the whole.  ``shared``: steps may hold
    one diagram object (copied layers, :mod:`ncd.trace.reuse`); a node left at two places is made again at the second
    (:func:`~ncd.trace.reuse_copy.unshared`), as is one of a layer's body taken from an equal layer's."""
    last: dict[int, int] = {}
    for k, step in enumerate(steps):
        for v in step.ins:
            last[v] = k
    for v in outputs:
        last[v] = len(steps)
    for k, step in enumerate(steps):
        step.index = k
    grouped = _group(steps, 0, last)
    memo: dict[Any, Any] | None = {} if LAYERS_ONCE else None
    if fold:
        grouped = _fold(grouped, segs, outputs, memo)
    body = wire(inputs, grouped, outputs, segs)
    if shared or memo and memo.pop(_SHARED, None) is not None:  # objects at two places: each place its own
        from ncd.trace.reuse_copy import unshared

        body = unshared(body)
    return body


def _group(steps: list[Step], depth: int, last: dict[int, int]) -> list[Step]:
    """Steps at module depth ``depth``: deeper runs with the same module become one block step."""
    out: list[Step] = []
    k = 0
    while k < len(steps):
        step = steps[k]
        if len(step.stack) <= depth:
            out.append(step)
            k += 1
            continue
        frame = step.stack[depth]
        j = k
        while j < len(steps) and len(steps[j].stack) > depth and steps[j].stack[depth] == frame:
            j += 1
        if j - k == 1 and len(steps[k].stack) == depth + 1:  # a module holding one box: no fence
            out.append(steps[k])
        else:
            out.append(_block(steps[k:j], depth, frame, last))
        k = j
    return out


def _block(members: list[Step], depth: int, frame: tuple[str, str], last: dict[int, int]) -> Step:
    inner = _group(members, depth + 1, last)
    produced: set[int] = set()
    ins: list[int] = []
    read: set[int] = set()  # the values in ``ins`` (a list: its order is the block's inputs')
    for s in members:
        for v in s.ins:
            if v not in produced and v not in read:
                ins.append(v)
                read.add(v)
        produced.update(s.outs)
    end = members[-1].index
    outs = [v for s in members for v in s.outs if last.get(v, -1) > end]
    path, cls = frame
    parent = members[0].stack[depth - 1][0] if depth else ""
    if parent and path.startswith(parent + "."):
        path = path[len(parent) + 1:]
    return Step(None, ins, list(dict.fromkeys(outs)), members[0].stack[:depth + 1], f"{path}: {cls}", inner)  # type: ignore[arg-type]


def realise(step: Step, segs: dict[int, Segment], fold: bool = True, memo: dict[Any, Any] | None = None) -> Diagram:
    """The diagram of a (possibly grouped) step.  With ``memo``: a layer (a block of a module list) whose steps are
    those of a layer wired before (equal diagrams, the same objects where copied (:mod:`ncd.trace.reuse`), on values of
    the same segments, read and made in the same pattern, in blocks of the same titles) takes that layer's body, which
    wiring its steps again would make equal."""
    if step.diagram is not None:
        return step.diagram
    key: Any = None
    if memo is not None and fold and step.title.partition(":")[0].rpartition(".")[2].isdigit():
        key, leaves = _pattern(step, segs, memo)
        for known, body, moved in memo.get(key, ()):
            if _equal(known, leaves):
                memo[_SHARED] = True
                step.outs = [step.outs[p] for p in moved]
                step.diagram = Block(body, step.title)
                return step.diagram
    members = _fold(step.members, segs, step.outs, memo) if fold else step.members
    order: list[int] = []  # the block's outputs in the order its steps leave them (no crossing inside to arrange them)
    body = wire(step.ins, members, step.outs, segs, order)
    moved = [step.outs.index(v) for v in order]
    step.outs = order
    if key is not None:
        kept = memo.setdefault(key, [])
        if len(kept) < 4:  # (kinds of layers alike in pattern, differing in diagrams: a few kept)
            kept.append((leaves, body, moved))
    step.diagram = Block(body, step.title)
    return step.diagram


#: keys of :func:`realise`'s memo: a layer took another's body (the same nodes at two places); the numbers of segments
#: by identity and by value
_SHARED, _SEGMENTS, _EQUAL = ("shared",), ("segments",), ("equal",)


def _equal(known: list[Diagram], leaves: list[Diagram]) -> bool:
    """The diagrams are equal one by one (the same object, or equal: a layer's own fused movement boxes)."""
    try:
        return all(a is b or a == b for a, b in zip(known, leaves))
    except Exception:  # noqa: BLE001 - parts that cannot be compared (held tensors): not taken as equal
        return False


def _pattern(step: Step, segs: dict[int, Segment], memo: dict[Any, Any]) -> tuple[tuple[Any, ...], list[Diagram]]:
    """What wiring the block ``step`` reads besides its steps' diagrams (their kinds, the titles of the blocks they are
    in, nested as they are, and the values they read and make, numbered in order of appearance, each with its segment:
    the block's inputs' equal segments one number, the others' by identity), and those diagrams in order."""
    number: dict[int, int] = {}
    out: list[Any] = []
    leaves: list[Diagram] = []
    known: dict[int, int] = memo.setdefault(_SEGMENTS, {})  # id(segment) -> the number of the segments equal to it
    equal: dict[Segment, int] = memo.setdefault(_EQUAL, {})

    def value(v: int) -> Any:
        n = number.get(v)
        if n is None:
            n = number[v] = len(number)
            return (n, id(segs[v]))  # (made inside: a copied layer's values have the recorded layer's segments)
        return n

    for v in step.ins:  # (read from before it: the first layer reads another value than the next one, alike)
        if v not in number:
            number[v] = len(number)
            seg = segs[v]  # (kept alive by segs while the memo is)
            kind = known.get(id(seg))
            if kind is None:
                kind = known[id(seg)] = equal.setdefault(seg, len(equal))
            out.append((number[v], kind))

    def walk(s: Step) -> None:
        out.append(tuple([value(v) for v in s.ins]))
        if s.diagram is not None:
            out.append(type(s.diagram))
            leaves.append(s.diagram)
        else:
            out.append(s.title)
            for m in s.members:
                walk(m)
            out.append(None)
        out.append(tuple([value(v) for v in s.outs]))

    out.append(tuple([number[v] for v in step.ins]))
    for m in step.members:
        walk(m)
    out.append(tuple([value(v) for v in step.outs]))
    return tuple(out), leaves


def _fold(steps: list[Step], segs: dict[int, Segment], outputs: Sequence[int], memo: dict[Any, Any] | None = None
          ) -> list[Step]:
    """Realise block steps and fold runs of equal blocks that feed each other into repeats."""
    for s in steps:
        if s.diagram is None:
            realise(s, segs, memo=memo)
    out: list[Step] = []
    k = 0
    while k < len(steps):
        run = _run(steps, k, outputs)
        folded = _repeat(run, segs) if len(run) >= 2 else None
        if folded is not None:
            out.append(folded)
            k += len(run)
        else:
            out.append(steps[k])
            k += 1
    return out


def _run(steps: list[Step], k: int, outputs: Sequence[int]) -> list[Step]:
    first = steps[k]
    if not isinstance(first.diagram, Block):
        return [first]
    run = [first]
    pattern = None
    j = k + 1
    while j < len(steps):
        prev, nxt = run[-1], steps[j]
        if not isinstance(nxt.diagram, Block) or nxt.diagram.body != first.diagram.body:
            break
        if len(nxt.ins) != len(prev.ins) or len(prev.outs) != len(nxt.outs):
            break
        roles: list[tuple[str, int]] | None = []
        for p, v in enumerate(nxt.ins):
            if v in prev.outs:
                roles.append(("carried", prev.outs.index(v)))  # type: ignore[union-attr]
            elif v == prev.ins[p] and v not in prev.outs:
                roles.append(("shared", p))  # type: ignore[union-attr]
            else:
                roles = None
                break
        if roles is None or sorted(r[1] for r in roles if r[0] == "carried") != list(range(len(prev.outs))):
            break
        if pattern is not None and roles != pattern:
            break
        pattern = roles
        # the carried values must be used by the next block only
        if any(v in s.ins for s in steps if s is not nxt for v in prev.outs) or any(v in outputs for v in prev.outs):
            break
        run.append(nxt)
        j += 1
    return run


def _repeat(run: list[Step], segs: dict[int, Segment]) -> Step | None:
    first, second, last = run[0], run[1], run[-1]
    positions = range(len(first.ins))
    own = [p for p in positions if second.ins[p] in first.outs]
    shared = [p for p in positions if p not in own]
    feed = [second.ins[p] for p in own]  # first-iteration outputs, in the order they are fed back
    body_ins = [first.ins[p] for p in own] + [first.ins[p] for p in shared]
    body_outs = feed + [first.ins[p] for p in shared]
    inner = Step(first.diagram, list(first.ins), list(first.outs), first.stack, first.title)
    body = wire(body_ins, [inner], body_outs, segs)
    path, _, cls = first.title.partition(": ")
    head, _, tail = path.rpartition(".")
    title = (f"{head}.i" if head and tail.isdigit() else path) + f": {cls}"
    if body is first.diagram and isinstance(body, Block):
        body = body.body  # no extra wires: the layer's own block is the body
    try:
        repeat = Repeat(Block(body, title), "i", _int(0), _int(len(run)), title)
    except NCDError:
        return None
    outs = [last.outs[first.outs.index(v)] for v in feed] + [_fresh_alias(first.ins[p], segs) for p in shared]
    return Step(repeat, body_ins, outs, first.stack[:-1], title)


_ALIAS = [10 ** 9]


def _fresh_alias(v: int, segs: dict[int, Segment]) -> int:
    """A new id for a shared value that the repetition passes through (it is deleted after if unused)."""
    _ALIAS[0] += 1
    segs[_ALIAS[0]] = segs[v]
    return _ALIAS[0]


def _int(n: int) -> Any:
    import sympy

    return sympy.Integer(n)
