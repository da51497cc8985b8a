"""Loops whose only results are their states, folded into one repetition of their step.

``for _ in range(n): x = x / (x.sum(-1, keepdim=True) + eps); x = x / (x.sum(-2, keepdim=True) + eps)`` (the
Sinkhorn normalisation of DeepSeek-V4's and GLM-5-Next's hyper-connections), power iteration, a fixed-point loop:
the recording unrolls them into ``n`` copies of the step, and nothing is stacked, so
:func:`ncd.trace.loops.fold_time_loops` has nothing to start from.  :func:`fold_state_loops` finds them by their
period instead: a run of recorded calls where each call is a copy of the call ``p`` before it (same operator, same
constant arguments, reading either the same value from before or the value made ``p`` calls before).  The run is then
proven exactly as a time loop is (:func:`ncd.trace.loops_proof._prove`: every step a copy of the first, reading values from
before the loop, its own values or the previous step's — its states), rewritten into one :class:`~ncd.trace.loops.Loop`
without a stacked output, and checked on the traced values (the body, run ``n`` times from the initial states, gives
the final states recorded).  The converter draws it as a scan with no scanned wire: the step once, in the paper's
repetition brackets, its count an axis of its own; it lowers to ``for step in range(n)`` and costs ``n`` steps.

Only runs of at least :data:`MIN_STEPS` steps inside one module's ``forward`` fold, and only a step that computes
(not views alone): ``x.unsqueeze(0).unsqueeze(0)`` stays as it is.

>>> import torch, ncd
>>> class Sinkhorn(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         p = x.exp()
...         for _ in range(6):
...             p = p / p.sum(-1, keepdim=True)
...             p = p / p.sum(-2, keepdim=True)
...         return p
>>> d = ncd.trace(Sinkhorn(), torch.randn(2, 4, 4))
>>> [b.prim.op for b in d.boxes()].count("scan")
1
>>> x = torch.randn(2, 4, 4)
>>> torch.allclose(d.to_torch()(x), Sinkhorn()(x))
True
"""

from __future__ import annotations

from typing import Any

from ncd.trace.capture import Captured, Node
from ncd.trace.convert import LOG, op_name
from ncd.trace.loops import _rewrite
from ncd.trace.loops_proof import _leaves, _prove

__all__ = ["fold_state_loops", "MIN_STEPS"]

#: the fewest steps a repetition folds from (two copies of a step stay as they are)
MIN_STEPS = 3
#: the longest step looked for, in recorded calls
MAX_PERIOD = 256
#: operators that only view or copy: a step of these alone computes nothing worth a repetition
VIEWS = frozenset({"aten.view.default", "aten.reshape.default", "aten.unsqueeze.default", "aten.squeeze.dim",
                   "aten.permute.default", "aten.transpose.int", "aten.expand.default", "aten.alias.default",
                   "aten.clone.default", "aten.contiguous.default", "aten._to_copy.default", "aten.to.dtype",
                   "aten.select.int", "aten.slice.Tensor", "aten.t.default", "aten.flatten.using_ints"})


def fold_state_loops(captured: Captured) -> Captured:
    """``captured`` with every proven loop whose only results are its states folded into one
    :class:`~ncd.trace.loops.Loop` call (see the module doc); as it is when there is none."""
    nodes = list(captured.nodes)
    at = 0
    folded = False
    while True:
        found = _next(nodes, captured.outputs, at)
        if found is None:
            break
        nodes, at = found
        folded = True
    if not folded:
        return captured
    return Captured(nodes, captured.outputs, captured.method, captured.input_names, captured.escaped)


def _key(node: Node, leaves: list[tuple[tuple[Any, ...], Any]]) -> tuple[Any, ...]:
    """What a copy of ``node`` has the same: its operator and its constant arguments (where its values go)."""
    out: list[Any] = [id(node.target)]
    for path, v in leaves:
        if isinstance(v, Node):
            out.append((path, "node"))
        else:
            try:
                hash(v)
                out.append((path, type(v).__name__, v))
            except TypeError:
                out.append((path, "object", id(v)))
    return tuple(out)


def _next(nodes: list[Node], outputs: list[Any], at: int) -> tuple[list[Node], int] | None:
    """The first run of calls at or after call ``at`` that folds: the nodes rewritten and where to look on."""
    calls = [n for n in nodes if n.kind == "call"]
    pos = {id(c): i for i, c in enumerate(calls)}
    leaves = [_leaves((c.args, c.kwargs)) for c in calls]
    interned: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    keys = [interned.setdefault(key, key) for key in [_key(c, lv) for c, lv in zip(calls, leaves)]]  # equal: one object

    def shifted(k: int, p: int) -> bool:  # call k is a copy of call k - p, one step on
        if keys[k] is not keys[k - p]:
            return False
        for (_, x), (_, y) in zip(leaves[k - p], leaves[k]):
            if isinstance(x, Node) and x is not y and not (
                    isinstance(y, Node) and x.kind == y.kind == "call" and pos.get(id(y), -1) - pos.get(id(x), -1) == p):
                return False
        return True

    # a folded run lies inside one module's forward: where the calls from k on leave call k's module (its stack)
    leaves_module = [len(calls)] * len(calls)
    for k in range(len(calls) - 2, -1, -1):
        leaves_module[k] = leaves_module[k + 1] if calls[k + 1].stack == calls[k].stack else k + 1
    seen: dict[tuple[Any, ...], list[int]] = {}
    # per period, the last run of copies found (its first call, its end, the bound it was found under): a call inside
    # it, under the same bound, starts a run ending there too (each call of two copied layers was a start of its own,
    # the rest of the layer walked again from each)
    runs: dict[int, tuple[int, int, int]] = {}
    for k in range(len(calls)):
        earlier = seen.setdefault(keys[k], [])
        if k >= at:
            for before in reversed(earlier[-2:]):  # the period: back to one of the last two copies of this call
                p = k - before
                if p > MAX_PERIOD:
                    continue
                limit = leaves_module[k] + p
                run = runs.get(p)
                if run is not None and run[0] < k < run[1] and run[2] == limit:
                    end = run[1]
                else:
                    if not shifted(k, p):
                        continue
                    end = k + 1
                    while end < len(calls) and end < limit and shifted(end, p):
                        end += 1
                    runs[p] = (k, end, limit)
                if end >= limit:  # every phase's whole steps (one step short of end at most) reach another module
                    continue
                if end - k < p * (MIN_STEPS - 2):  # the first step reads initial values: not a copy of one before
                    continue
                done = _fold_run(nodes, calls, outputs, k, end, p)
                if done is not None:
                    return done
        earlier.append(k)
    return None


def _fold_run(nodes: list[Node], calls: list[Node], outputs: list[Any], k: int, end: int,
              p: int) -> tuple[list[Node], int] | None:
    """Fold the calls ``k - p .. end`` (each from ``k`` on a copy of the one ``p`` before), with the step before them
    whose reads of the states' initial values broke the copying, into one loop, in the phase that proves."""
    # the run of copies starts at k - p at the latest; the step before may belong to the loop (as its first, reading
    # the states' initial values) or not (a step written once before the loop): the phase ending last that proves
    phases = sorted(range(k - 2 * p, k), key=lambda s: (-((end - s) // p * p + s), s))  # then the most steps
    for s in phases:
        if s < 0:
            continue
        steps = (end - s) // p
        if steps < MIN_STEPS:
            continue
        chunks = [calls[s + i * p: s + (i + 1) * p] for i in range(steps)]
        run = calls[s: s + steps * p]
        if len({c.stack for c in run}) != 1 or all(op_name(c.target)[1] in VIEWS for c in chunks[0]):
            continue  # a loop inside one module's forward, computing something
        plan = _prove(chunks, None)
        if plan is None:
            continue
        rewritten = _rewrite(nodes, None, chunks, plan, 0, outputs)
        if rewritten is not None:
            LOG.debug("a loop of %d steps of %d calls folded at %s", steps, p, chunks[0][0].name)
            return rewritten, s
    return None
