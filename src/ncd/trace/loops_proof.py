"""The proof that recorded chunks of calls are copies of one step of a loop (:func:`_prove`), call by call.

Each call of the first step has, in every other step, a call of the same operator at the same position whose
arguments (:func:`_leaves`) are, leaf by leaf: the same value from before the loop, the step's own call, the previous
step's call (a *state*: the first step reads its initial value there), ``x.select(dim, i)`` at the step's own position
``i`` (a *scanned* input) or an equal constant (:func:`_same`).  The answer, a :class:`_Plan`, says which calls are
hoisted before the loop, which are scanned, which carry the states and which value is stacked;
:func:`ncd.trace.loops.fold_time_loops` and :func:`ncd.trace.loops_state.fold_state_loops` rewrite the recording by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ncd.trace.capture import Node
from ncd.trace.convert import op_name

__all__: list[str] = []

SELECT = "aten.select.int"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, (list, tuple)):
        out: list[tuple[tuple[Any, ...], Any]] = []
        for j, v in enumerate(value):  # a leaf where it stands (no call per argument: asked of every recorded call)
            if isinstance(v, (list, tuple, dict)):
                out.extend(_leaves(v, path + (j,)))
            else:
                out.append((path + (j,), v))
        return out
    if isinstance(value, dict):
        out = []
        for key in sorted(value):
            v = value[key]
            if isinstance(v, (list, tuple, dict)):
                out.extend(_leaves(v, path + (key,)))
            else:
                out.append((path + (key,), v))
        return out
    return [(path, value)]


@dataclass
class _Plan:
    hoisted: set[int]  # positions computed once, before the loop
    selects: dict[int, tuple[Node, int]]  # position -> (scanned value before the loop, its dim)
    states: dict[int, Node]  # position of the next state -> its initial value
    output: int | None  # the position whose value is stacked (none: a loop whose only results are its states)
    reverse: bool
    #: (position, argument path) -> the position of the state it reads (the previous step's value; the first step's
    #: initial value), for every read of a state — a value from before the loop read at the same place is a constant
    state_reads: dict[tuple[int, tuple[Any, ...]], int] = field(default_factory=dict)


def _prove(chunks: list[list[Node]], items: Any | None) -> _Plan | None:  # noqa: C901
    """The plan folding ``chunks`` (one step each) into one loop, if they are copies of one step; ``items`` the value
    of each step that is stacked, or ``None`` for a loop whose only results are its states."""
    steps, length = len(chunks), len(chunks[0])
    if any(n.guard for chunk in chunks for n in chunk):  # a branch read in a step (``while x.abs().max() > 1``): each
        return None  # read is checked where it was made, at its own traced value, so the steps stay unrolled
    index = [{id(n): j for j, n in enumerate(chunk)} for chunk in chunks]
    output: int | None = None
    if items is not None:
        outputs = {index[i].get(id(y)) for i, y in enumerate(items)}
        if len(outputs) != 1 or None in outputs:
            return None
        output = next(iter(outputs))
    hoisted: set[int] = set()
    selects: dict[int, tuple[Node, int]] = {}
    states: dict[int, Node] = {}
    state_reads: dict[tuple[int, tuple[Any, ...]], int] = {}
    unsure: list[tuple[int, tuple[Any, ...], Node]] = []  # reads only the first step made (the last step stopped)
    reverse: bool | None = None
    for j in range(length):
        first = chunks[0][j]
        present = [c for c in chunks if j < len(c)]  # the last step may stop after its stacked value
        if any(c[j].target is not first.target for c in present):
            return None
        leaves = [_leaves((c[j].args, c[j].kwargs)) for c in present]
        if any(len(lv) != len(leaves[0]) or [p for p, _ in lv] != [p for p, _ in leaves[0]] for lv in leaves):
            return None
        inside = False
        for at, (path, v0) in enumerate(leaves[0]):
            values = [lv[at][1] for lv in leaves]
            if isinstance(v0, Node):
                if not all(isinstance(v, Node) for v in values):
                    return None
                own = [index[i].get(id(v)) for i, v in enumerate(values)]
                if all(o == own[0] for o in own) and own[0] is not None:
                    inside = inside or own[0] not in hoisted
                    continue
                if all(v is v0 for v in values) and all(o is None for o in own):
                    if len(values) == 1:  # only the first step read it: a constant, or a state's initial value
                        unsure.append((j, path, v0))
                        inside = True
                    continue  # from before the loop (or a parameter)
                before = [index[i - 1].get(id(v)) for i, v in enumerate(values) if i > 0]
                if own[0] is None and len(set(before)) == 1 and before[0] is not None and \
                        all(o is None for o in own[1:]):
                    q = before[0]
                    if states.get(q, v0) is not v0:
                        return None
                    states[q] = v0
                    state_reads[(j, path)] = q
                    inside = True
                    continue
                return None
            if path == (0, 2) and op_name(first.target)[1] == SELECT and isinstance(v0, int) and \
                    all(isinstance(v, int) for v in values):
                # every step present selects its own position (the last step may have stopped before this select)
                forward = all(v == i for i, v in enumerate(values))
                backward = all(v == steps - 1 - i for i, v in enumerate(values))
                if forward or backward:
                    if reverse is not None and reverse != backward:
                        return None
                    reverse = backward and not forward
                    source = first.args[0]
                    if not isinstance(source, Node) or index[0].get(id(source)) not in (None, *hoisted):
                        return None
                    if source.value.dim() and isinstance(first.args[1], int) and \
                            source.value.shape[first.args[1] % source.value.dim()] == steps:
                        selects[j] = (source, first.args[1] % source.value.dim())
                    else:  # a position of a longer input: the scan would run over all of it
                        return None
                    inside = True
                    continue
            if not all(_same(v, v0) for v in values):
                return None
        if not inside and j not in selects:
            hoisted.add(j)
    if (items is not None and (not selects or output in hoisted)) or (items is None and not states):
        return None
    inits = {id(v): q for q, v in states.items()}
    for j, path, v0 in unsure:  # a state's initial value, read where the next steps (not recorded) read the state
        if id(v0) in inits:
            state_reads[(j, path)] = inits[id(v0)]
    return _Plan(hoisted, selects, states, output, bool(reverse), state_reads)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return type(a) is type(b) and a == b
