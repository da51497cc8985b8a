"""Module calls into nested blocks, and runs of equal layers into repetitions, around :func:`~ncd.trace.wiring.wire`.

:func:`assemble` groups a trace's steps by module path into :class:`~ncd.ir.diagram.Block` steps (titled
``path: Class``), wires each block's body (:func:`realise`: a layer whose steps are an earlier layer's takes that
layer's wired body), folds a run of consecutive blocks with equal bodies, each feeding the next, into one
:class:`~ncd.ir.diagram.Repeat` (every iteration keeps its own parameters), and wires the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ncd.errors import NCDError
from ncd.ir.axes import Segment
from ncd.ir.diagram import Block, Diagram, Repeat
from ncd.trace.wiring import Step, wire

__all__ = ["assemble", "realise"]

#: Whether a layer whose steps are an earlier layer's (equal diagrams in the same pattern) takes that layer's wired body
#: (:func:`realise`; off: every layer is wired; the diagrams are equal)
LAYERS_ONCE = True


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
