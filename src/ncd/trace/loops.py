"""Folding recorded time loops into scans: a Python loop over positions becomes one :func:`ncd.Scan`.

An eager recording unrolls ``for i in range(T): state = f(state, x[:, i]); ys.append(g(state))``
into ``T`` copies of the step followed by ``torch.stack(ys)`` (Mamba's selective scan in
``transformers``' slow path; any hand-written recurrence).  :func:`fold_time_loops` looks at
every stack of ``T >= 2`` recorded values and proves, call by call, that the calls before it are
``T`` copies of one step: the same operators with the same constant arguments, each reading
(a) values from before the loop (the same in every step), (b) values of its own step,
(c) values the step before made (a *state*; the first step reads its initial value instead), or
(d) ``x.select(dim, i)`` of a value from before the loop at the step's own position ``i`` (a
*scanned* input).  Calls that read only values from before the loop are hoisted out of it.  Any
other use of a step's value outside the loop, a position that is not ``i``, or a step that is not
an exact copy leaves the recording as it is (unrolled, still correct).

The folded steps are replaced by one call of a :class:`Loop` (its operator), converted by the
rule below: the first step is converted on its own (a nested conversion with the loop's
inputs as its inputs) into the scan's body.  The proof that the steps are copies of one step is
:mod:`ncd.trace.loops_proof`'s.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.trace.capture import Captured, Node, refs
from ncd.trace.convert import LOG, Converter, Decline, op_name, rule
from ncd.trace.loops_proof import _Plan, _prove, _same

__all__ = ["fold_time_loops", "unfold_time_loops", "Loop"]


@dataclass(eq=False, repr=False)
class Loop:
    """The operator of a folded loop: the first step's calls and how the loop's inputs enter them."""

    body: list[Node]  # copies of the first step's calls (arguments re-pointed at the input nodes below)
    consts: list[Node]  # input nodes: values from before the loop that every step reads
    states: list[Node]  # input nodes: the states (the first step's view of them)
    slices: list[Node]  # input nodes: one position of each scanned input
    next_states: list[Node]  # the body's calls computing each next state
    outputs: list[Node]  # the body's calls whose values are stacked
    dims: list[int]  # the time dimension of each scanned input (from the end)
    stack_dims: list[int]  # the time dimension of each stacked output (from the end)
    reverse: bool = False
    count: int = 0  # the number of steps (a loop with scanned inputs has one per position)
    _overloadname: str = field(default="default")
    #: the recorded calls the fold made picks of the loop's results, with their recorded operator and arguments
    replaced: list[tuple[Node, Any, Any, Any]] = field(default_factory=list)

    def name(self) -> str:
        return "ncd::scan"

    def __repr__(self) -> str:  # rules test operators by their text: never the body's recorded tensors
        return f"ncd::scan({len(self.body)} calls)"


def unfold_time_loops(folded: Captured, recorded: Captured) -> Captured:
    """Undo :func:`fold_time_loops`: ``recorded`` (the captured graph it folded) as it was recorded, step by step.

    For a loop whose scan cannot be drawn (its step needs opaque boxes): the unrolled steps compute the same."""
    loops = [n.target for n in folded.nodes if n.kind == "call" and isinstance(n.target, Loop)]
    seen: set[int] = set()
    while loops:  # loops folded into other loops' bodies are undone too, newest first
        loop = loops.pop()
        if id(loop) in seen:
            continue
        seen.add(id(loop))
        for node, target, args, kwargs in reversed(loop.replaced):
            node.target, node.args, node.kwargs = target, args, kwargs
            for r in refs((args, kwargs)):
                if r.kind == "call" and isinstance(r.target, Loop):
                    loops.append(r.target)
    return recorded


def _positions(nodes: list[Node]) -> dict[int, int]:
    return {id(n): k for k, n in enumerate(nodes)}


def fold_time_loops(captured: Captured) -> Captured:
    """``captured`` with every provable time loop folded into one :class:`Loop` call (see the module doc)."""
    nodes = list(captured.nodes)
    k = 0
    while k < len(nodes):
        node = nodes[k]
        if node.kind == "call" and op_name(node.target)[1] == "aten.stack.default":
            folded = _fold(nodes, k, captured.outputs)
            if folded is not None:
                nodes = folded
                k = 0
                continue
        k += 1
    if len(nodes) == len(captured.nodes):
        return captured
    return Captured(nodes, captured.outputs, captured.method, captured.input_names, captured.escaped)


def _fold(nodes: list[Node], s: int, outputs: list[Any]) -> list[Node] | None:  # noqa: C901 - one proof, step by step
    stack = nodes[s]
    items = stack.args[0] if stack.args else None
    dim = stack.args[1] if len(stack.args) > 1 else stack.kwargs.get("dim", 0)
    if not isinstance(items, (list, tuple)) or len(items) < 2 or not all(isinstance(y, Node) and y.kind == "call"
                                                                          for y in items):
        return None
    calls = [j for j in range(s) if nodes[j].kind == "call"]
    where = {calls[j]: j for j in range(len(calls))}
    call_ids = {id(nodes[c]) for c in calls}
    if any(id(y) not in call_ids for y in items):
        return None
    pos = _positions(nodes)
    ends = [where[pos[id(y)]] for y in items]
    flipped = ends[0] > ends[-1]  # stacked last step first: a loop running backwards that stores at its positions
    if flipped:
        items, ends = list(reversed(items)), list(reversed(ends))
    steps = len(items)
    length = ends[1] - ends[0]
    if steps >= 3 and length >= 1 and all(ends[i + 1] - ends[i] == length for i in range(steps - 2)) and \
            0 < ends[-1] - ends[-2] < length:
        padded = _pad_last(nodes, calls, ends, length)
        return _fold(padded, padded.index(stack), outputs) if padded is not None else None
    if length < 1 or any(ends[i + 1] - ends[i] != length for i in range(steps - 1)):
        return None
    for shift in range(length):  # the step may go on after the value it stacks
        last = ends[-1] + shift
        first = ends[0] + shift - length + 1
        if first < 0:  # the step starts before the first call: a longer shift
            continue
        # the last step's calls after the value it stacks may be missing: nothing read them (a final state unused)
        cut = min(length, ends[-1] + 1 - (first + (steps - 1) * length)) if last >= len(calls) else length
        chunks = [[nodes[calls[first + i * length + j]] for j in range(length if i < steps - 1 else cut)]
                  for i in range(steps)]
        plan = _prove(chunks, items)
        if plan is not None and plan.reverse == flipped:
            return _rewrite(nodes, stack, chunks, plan, dim, outputs)
    return None


def _pad_last(nodes: list[Node], calls: list[int], ends: list[int], length: int) -> list[Node] | None:
    """``nodes`` with the picks (``operator.getitem`` of a call's tuple of results) the last step's recording lacks
    before its stacked value put back, when that is all it lacks: the recording keeps only the picks something reads,
    and nothing reads the last step's final states (``h, c = cell(x[:, t], (h, c))``: the last ``c``).  A pick
    computes nothing, and its value is the recorded result's; ``None`` when the last step differs otherwise."""
    template = [nodes[calls[c]] for c in range(ends[-2] - length + 1, ends[-2] + 1)]
    last = [nodes[calls[c]] for c in range(ends[-2] + 1, ends[-1] + 1)]
    mapping: dict[int, Node] = {}  # a template call's id -> the last step's copy of it
    made: list[tuple[Node, Node]] = []  # (a pick put back, the last step's call it goes before)
    k = 0
    for t in template:
        if k < len(last) and last[k].target is t.target:
            mapping[id(t)] = last[k]
            k += 1
            continue
        source = mapping.get(id(t.args[0])) if t.target is operator.getitem and t.args else None
        if source is None or k >= len(last) or not isinstance(source.value, (tuple, list)):
            return None
        index = t.args[1]
        pick = Node(f"{source.name}_getitem_{index}", "call", operator.getitem, (source, index), {},
                    value=source.value[index], stack=t.stack, live=source.live)
        mapping[id(t)] = pick
        made.append((pick, last[k]))
    if k != len(last) or not made:
        return None
    out = list(nodes)
    for pick, before in made:
        out.insert(next(i for i, n in enumerate(out) if n is before), pick)
    return out


def _learned(node: Node, seen: dict[int, bool]) -> bool:
    """Whether a call computes its value from a parameter (``-exp(A_log)`` before a Mamba scan): read in the loop's
    body, it is an input of the loop, wired to the call, not a constant of its value (whose gradient is lost)."""
    if node.kind != "call":
        return False
    if id(node) not in seen:
        seen[id(node)] = False  # (a cycle cannot happen: calls read earlier calls)
        seen[id(node)] = any(r.kind == "parameter" or _learned(r, seen) for r in refs((node.args, node.kwargs)))
    return seen[id(node)]


def _rewrite(nodes: list[Node], stack: Node | None, chunks: list[list[Node]], plan: _Plan, dim: int,
             outputs: list[Any]) -> list[Node] | None:
    """``nodes`` with the steps ``chunks`` replaced by one :class:`Loop` call (and picks of its results), if nothing
    outside the loop reads a step's value but the last step's states (and ``stack``, the stacked outputs; ``None``
    when the states are the loop's only results) and the body replays every step."""
    length = len(chunks[0])
    members = {id(n) for chunk in chunks for n in chunk}
    last = chunks[-1]
    finals = sorted(plan.states)
    kept = [q for q in finals if q < len(last)]  # a final state the last step did not compute was never read
    # every use outside the loop: the stack, or the last step's states
    for node in nodes:
        if id(node) in members or node is stack:
            continue
        for r in refs((node.args, node.kwargs)):
            if id(r) in members and \
                    not any(r is last[q] for q in kept) and not any(r is chunks[0][h] for h in plan.hoisted):
                return None
    if any(isinstance(o, Node) and id(o) in members and not any(o is last[q] for q in kept) for o in outputs):
        return None
    first = chunks[0]
    hoisted_nodes = [first[h] for h in sorted(plan.hoisted)]
    # the body: copies of the first step's calls, reading input nodes
    consts: dict[int, tuple[Node, Node]] = {}  # id of the outside value -> (it, the body's input node)
    mapping: dict[int, Node] = {}
    state_inputs = {q: Node(f"state{k}", "input", value=init.value, source=f"state{k}", live=True)
                    for k, (q, init) in enumerate(sorted(plan.states.items()))}
    slice_inputs = {j: Node(f"x{k}", "input", value=first[j].value, source=f"x{k}", live=True)
                    for k, j in enumerate(sorted(plan.selects))}
    body: list[Node] = []
    learned: dict[int, bool] = {}

    def remap(value: Any, j: int, path: tuple[Any, ...]) -> Any:
        """The body's argument for ``value`` read at ``path`` of position ``j`` (paths as :func:`_leaves` walks)."""
        if isinstance(value, Node):
            if id(value) in mapping:
                return mapping[id(value)]
            if (j, path) in plan.state_reads:  # a state (its initial value, as the first step reads it)
                return state_inputs[plan.state_reads[(j, path)]]
            if value.live or _learned(value, learned):  # a value of the parameters too: a constant has no gradient
                if id(value) not in consts:
                    consts[id(value)] = (value, Node(f"c{len(consts)}", "input", value=value.value,
                                                     source=f"c{len(consts)}", live=True))
                return consts[id(value)][1]
            return value  # a parameter or a constant: the nested conversion folds it
        if isinstance(value, (list, tuple)):
            return type(value)(remap(v, j, path + (k,)) for k, v in enumerate(value))
        if isinstance(value, dict):
            return {k: remap(v, j, path + (k,)) for k, v in value.items()}
        return value

    for j in range(length):
        n = first[j]
        if j in plan.hoisted:
            continue
        if j in plan.selects:
            mapping[id(n)] = slice_inputs[j]
            continue
        copy = Node(n.name, "call", n.target, remap(n.args, j, (0,)), remap(n.kwargs, j, (1,)), n.value, n.stack, n.source,
                    True, n.line)
        mapping[id(n)] = copy
        body.append(copy)
    _relive(body)
    scanned = [plan.selects[j] for j in sorted(plan.selects)]
    ys = [stack.value] if stack is not None else []
    loop = Loop(body, [inner for _, inner in consts.values()], [state_inputs[q] for q in sorted(plan.states)],
                [slice_inputs[j] for j in sorted(plan.selects)],
                [mapping[id(first[q])] for q in sorted(plan.states)],
                [mapping[id(first[plan.output])]] if plan.output is not None else [],
                [d - source.value.dim() for source, d in scanned], [dim % y.dim() - y.dim() for y in ys], plan.reverse,
                count=len(chunks))
    if any(not isinstance(n, Node) for n in loop.next_states + loop.outputs):
        return None
    outer_consts = [outer for outer, _ in consts.values()]
    inits = [plan.states[q] for q in sorted(plan.states)]
    finals_seen = {k: last[q].value for k, q in enumerate(finals) if q in kept}
    if not _replays(loop, [o.value for o in outer_consts], [i.value for i in inits],
                    [source.value for source, _ in scanned], len(chunks), ys, finals_seen):
        return None
    args = (tuple(outer_consts), tuple(inits), tuple(source for source, _ in scanned))
    value = tuple((last if q < len(last) else chunks[-2])[q].value for q in finals) + tuple(ys)
    named = stack if stack is not None else last[finals[-1]]
    call = Node(f"scan_{named.name}", "call", loop, args, {}, value, first[plan.output if plan.output is not None else 0].stack,
                "", True, first[0].line)
    picks = []
    for k, q in enumerate(finals):
        if q >= len(last):
            continue
        node = last[q]
        loop.replaced.append((node, node.target, node.args, node.kwargs))
        node.target, node.args, node.kwargs = operator.getitem, (call, k), {}
        picks.append(node)
    if stack is not None:
        loop.replaced.append((stack, stack.target, stack.args, stack.kwargs))
        stack.target, stack.args, stack.kwargs = operator.getitem, (call, len(finals)), {}
    start = nodes.index(first[0])
    out: list[Node] = []
    for k, node in enumerate(nodes):
        if k == start:
            out.extend(hoisted_nodes)
            out.append(call)
            out.extend(picks)
            if stack is not None:
                out.append(stack)
        if id(node) in members or node is stack:
            continue
        out.append(node)
    return out


def _replays(loop: Loop, consts: list[Any], inits: list[Any], xs: list[torch.Tensor], steps: int,
             ys: list[torch.Tensor], finals: dict[int, Any]) -> bool:
    """Whether the loop's body, run ``steps`` times as the scan runs it (the states it makes threaded on, each step
    reading its position of every scanned input), gives every recorded stacked output and the final states seen.
    The check that the fold is equal on the traced values, beside the proof that the steps are copies."""
    from ncd.trace.live_masks import _run

    states = list(inits)
    given: dict[int, Any] = {id(n): v for n, v in zip(loop.consts, consts)}
    try:
        for i in range(steps):
            at = steps - 1 - i if loop.reverse else i
            given.update({id(n): v for n, v in zip(loop.states, states)})
            given.update({id(n): x.select(x.dim() + d, at) for n, x, d in zip(loop.slices, xs, loop.dims)})
            values: dict[int, Any] = {}
            _run(loop.body, given, values=values)
            for y, want, d in zip(loop.outputs, ys, loop.stack_dims):
                if not _same_value(values.get(id(y), y.value), want.select(want.dim() + d, at)):
                    return False
            states = [values.get(id(n), n.value) for n in loop.next_states]
    except Exception as error:  # noqa: BLE001 - a body that does not run again proves nothing
        LOG.debug("loop body not replayed: %s: %s", type(error).__name__, error)
        return False
    return all(_same_value(states[k], v) for k, v in finals.items())


def _same_value(got: Any, want: Any) -> bool:
    """Whether a replayed step's value is the recorded one: equal (integers, bools), or close up to rounding (floats:
    :func:`~ncd.trace.triangular._closeness`).  Floats equal entry for entry are close (no NaN is equal to anything),
    and a replay of the recorded kernels on the recorded values most often gives them bit for bit: one comparison,
    not the closeness's scale, bound and parts (~0.2 ms each on a first call: recurrent_gemma's 18 and xlstm's 22)."""
    from ncd.trace.triangular import _closeness

    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.dtype != want.dtype or got.shape != want.shape:
            return False
        if not want.is_floating_point():
            return bool(torch.equal(got, want))
        if type(got) is torch.Tensor and type(want) is torch.Tensor and got.device == want.device \
                and want.device.type != "meta" and bool(torch.equal(got, want)):
            return True
        return _closeness(got, want)
    return _same(got, want)


def _relive(body: list[Node]) -> None:
    """Liveness inside the body: a call is live when it reads an input or a live call (a state starting at zero is)."""
    for n in body:
        n.live = any(r.kind == "input" or (r.kind == "call" and r.live) for r in refs((n.args, n.kwargs)))


@rule("ncd.scan")
def convert_loop(conv: Converter, node: Node) -> None:
    """The folded loop as one scan box: its body converted on its own, named like the loop's inputs."""
    from ncd.ir.axes import Type
    from ncd.ir.diagram import Box
    from ncd.prims.scan import ScanOp
    from ncd.trace.wiring_fold import assemble

    loop: Loop = node.target
    consts, inits, scanned = node.args
    const_ids = [conv.value(r) for r in consts]
    state_ids = [conv.value(r) for r in inits]
    x_ids = [conv.value(r) for r in scanned]
    time_names = {conv.segs[v].names[d] for v, d in zip(x_ids, loop.dims)}
    if len(time_names) > 1:
        x_ids = [_rename_time(conv, v, d, sorted(time_names)[0]) for v, d in zip(x_ids, loop.dims)]
    inputs = loop.consts + loop.states + loop.slices
    from ncd.trace.capture import Captured

    sub_captured = Captured(inputs + loop.body, loop.next_states + loop.outputs, "dispatch", [n.source for n in inputs])
    sub = Converter(sub_captured, None, conv.model)
    for n, v in zip(inputs, const_ids + state_ids + x_ids):
        seg = conv.segs[v]
        if loop.slices and n in loop.slices:
            kept = list(seg.axes)
            del kept[loop.dims[loop.slices.index(n)]]
            seg = Segment(tuple(kept), seg.dtype, seg.range)
        sub.segs[sub.values[id(n)]] = seg
    sub.namer = conv.namer
    # sizes the body's factors are read as (a ``1/sqrt(h)`` scale) are the diagram's defaults too: one record
    sub.__dict__["_constants"] = conv.__dict__.setdefault("_constants", {})
    outs = sub.run()
    if sub.failures or sub.emitted.opaque:
        raise Decline("the loop's step does not convert without opaque boxes")
    c, k = len(const_ids), len(state_ids)
    for j in range(k):  # a state leaves the body with the names it entered with
        want = sub.segs[sub.inputs[c + j]]
        outs[j] = sub.view(outs[j], list(want.names), tuple(int(a.size) for a in want.axes))
    for st in sub.steps:  # the body is the scan's: no module blocks inside it
        st.stack = ()
    body = assemble(sub.steps, outs, sub.segs, sub.inputs, fold=False)
    if x_ids:
        time = conv.segs[x_ids[0]].axes[loop.dims[0]]
    else:  # a repetition of the step on its states alone: its count is an axis of no tensor, named apart
        time = conv.namer.axis(conv.namer.fresh(loop.count, None, role="repetition"), loop.count)
    y_segs = [sub.segs[v] for v in outs[k:]]
    y_pos = [d + len(seg) + 1 for d, seg in zip(loop.stack_dims, y_segs)]
    x_pos = [d % len(conv.segs[v]) for v, d in zip(x_ids, loop.dims)]
    box = Box(ScanOp(body, time, c, k, tuple(x_pos), tuple(y_pos), loop.reverse))
    got = Type(tuple(conv.segs[v] for v in const_ids + state_ids + x_ids))
    if not box.dom.same(got):
        raise Decline(f"the loop's inputs '{got}' do not fit its body '{box.dom}'")
    vids = conv.emit(box, const_ids + state_ids + x_ids, list(box.cod))
    conv.emitted.tensors.extend(sub.emitted.tensors)
    for j, vid in enumerate(vids):
        conv._picked[(id(node), j)] = vid


def _rename_time(conv: Converter, vid: int, dim: int, name: str) -> int:
    seg = conv.segs[vid]
    names = list(seg.names)
    names[dim] = name
    return conv.view(vid, names, tuple(int(a.size) for a in seg.axes))
