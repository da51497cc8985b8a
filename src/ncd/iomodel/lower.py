"""Streamed lowering: run a relabelled diagram as a chunked PyTorch loop nest.

The loop nest of the schedule (at the bottom level) runs for real: each group, one after
another, then each stream chunk in the order written.  An input tile is *loaded* — copied out
of the full tensor, as data moves into the lower level — when the tile a step needs changes,
and dropped after its last use in a step when the next step needs another one.  The
operation that sums out a streamed axis accumulates into a state that lives across steps: a
running sum for a contraction, ``(m, ℓ, o)`` for an online softmax (running max, rescaled
running sum, rescaled output).  When a tile's reduction is complete, the rest of the diagram
(its epilogue: scales, elementwise functions) runs on it and the tile is written out.

Supported operations: einsum wirings, scales, causal masks, elementwise functions and the
online-softmax blocks of :func:`ncd.online_softmax`.  Learned boxes (whose weights would be
inputs) are refused with a :class:`ncd.LoweringError`.

>>> import ncd, torch
>>> att = ncd.online_softmax(ncd.zoo.attention(y=16, x=16, k=4))
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> run = streamed(att, h, group={"smem": {"y": 4}}, stream={"smem": {"x": 8}})
>>> q, k, v = att.example_inputs()
>>> bool(torch.allclose(run(q, k, v), att.to_torch()(q, k, v), atol=1e-6))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from ncd.errors import InputError, LoweringError
from ncd.iomodel.costs import used_inputs, written_outputs
from ncd.iomodel.hierarchy import Hierarchy
from ncd.iomodel.program import Array, Op, Program, flatten
from ncd.iomodel.schedule import Schedule, SizeMap
from ncd.ir.diagram import Diagram, describe
from ncd.ir.rules import STREAMED
from ncd.ir.weaving import einsum_letters
from ncd.prims.attention import CausalMaskOp
from ncd.prims.elementwise import ElementwiseOp, ScaleOp
from ncd.prims.linear import EinsumOp

__all__ = ["Streamed", "streamed", "peak_bytes"]

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "exp": torch.exp, "log": torch.log, "square": torch.square, "sqrt": torch.sqrt,
    "neg": torch.neg, "abs": torch.abs, "identity": lambda t: t,
    "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
}

Ranges = dict[str, tuple[int, int]]


def _align(t: torch.Tensor, have: tuple[str, ...], want: tuple[str, ...]) -> torch.Tensor:
    """``t`` (axes ``have``) permuted and unsqueezed to broadcast against axes ``want``."""
    order = [have.index(n) for n in want if n in have]
    t = t.permute(order) if order != list(range(len(have))) else t
    shape = [t.shape[order.index(have.index(n))] if n in have else 1 for n in want]
    return t.reshape(shape)


def _einsum(box: Diagram, inputs: list[tuple[torch.Tensor, tuple[str, ...]]], out: tuple[str, ...]) -> torch.Tensor:
    names = list(dict.fromkeys(n for _, group in inputs for n in group))
    letters = dict(zip(names, einsum_letters(len(names), box, names)))  # type: ignore[arg-type]
    spec = ",".join("".join(letters[n] for n in names) for _, names in inputs) + "->" + "".join(letters[n] for n in out)
    return torch.einsum(spec, *(t for t, _ in inputs))


@dataclass
class _Acc:
    """An accumulator tile: the running sum (or ``o``) and, for an online softmax, ``m`` and ``ℓ``."""

    o: torch.Tensor
    m: torch.Tensor | None = None
    l: torch.Tensor | None = None  # noqa: E741 — the paper's ℓ
    done: int = 0


class Streamed(torch.nn.Module):
    """A diagram relabelled by a schedule, run as its chunked loop nest (see the module doc)."""

    def __init__(self, diagram: Diagram, program: Program, schedule: Schedule, level: str,
                 sizes: Mapping[str, int]) -> None:
        super().__init__()
        self.diagram, self.program, self.schedule, self.level = diagram, program, schedule, level
        self.sizes = dict(sizes)
        self.loops = schedule.loops(level)
        self.full = {n: int(s) for a in [*used_inputs(program), *written_outputs(program), *program.outputs]
                     for n, s in a.axes}
        for op in program.ops:
            for n, s in op.axes.items():
                self.full.setdefault(n, int(s))
        self.extent = dict(self.full)
        for lp in self.loops:
            self.extent[lp.axis] = int(lp.chunk)
        self.streamed = {lp.axis for lp in self.loops if lp.kind == "stream"}
        self._check()

    def _check(self) -> None:
        outs = written_outputs(self.program)
        if len(outs) != len(self.program.outputs):
            raise LoweringError("streamed lowering: every output must be computed (not an input passed through)")
        self.reducer: Op | None = None
        for op in self.program.ops:
            prim = getattr(op.node, "prim", None)
            if op.params:
                raise LoweringError(f"streamed lowering takes diagrams without weights; {describe(op.node)} is learned"
                                    " (write it as an einsum wiring with the weight as an input)")
            if op.kind != "online" and (prim is None or STREAMED.get(prim) is None):
                why = (STREAMED.why(prim) if prim is not None else None) or "it has no rule"
                raise LoweringError(f"streamed lowering supports einsum wirings, scales, causal masks, elementwise"
                                    f" functions and online softmax, not {describe(op.node)}: {why}")
            if op.reduced() & self.streamed or op.kind == "online":
                if self.reducer is not None:
                    raise LoweringError(f"streamed lowering supports one accumulating operation; {describe(op.node)}"
                                        f" is a second one after {describe(self.reducer.node)}")
                self.reducer = op
        if self.reducer is None:  # nothing accumulates: the last contraction (or op) plays its part
            self.reducer = self.program.ops[-1]

    # -- the loop nest ------------------------------------------------------------
    def _ranges(self, index: tuple[int, ...]) -> Ranges:
        start = dict.fromkeys(self.full, 0)
        for i, lp in enumerate(self.loops):
            start[lp.axis] += index[i] * int(lp.chunk)
        return {n: (start[n], start[n] + self.extent[n]) for n in self.full}

    def _needed(self, r: Ranges) -> bool:
        return all(m.keeps(r[m.query], r[m.key]) for m in self.program.masks())

    def _steps(self) -> list[tuple[int, ...]]:
        return [ix for ix in itertools.product(*(range(int(lp.count)) for lp in self.loops)) if self._needed(self._ranges(ix))]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        prog = self.program
        if len(inputs) != len(prog.inputs):
            raise InputError(f"streamed {describe(self.diagram)}: {len(inputs)} inputs given, {len(prog.inputs)} expected")
        full: dict[int, torch.Tensor] = {}
        for t, arr in zip(inputs, prog.inputs):
            want = tuple(self.full[n] for n in arr.names)
            if tuple(t.shape) != want:
                raise InputError(f"streamed {describe(self.diagram)}: input {arr.name} ({' '.join(arr.names)}) has"
                                 f" shape {tuple(t.shape)}, expected {want}")
            full[arr.root] = t
        ref = inputs[0]
        results = [torch.zeros(tuple(self.full[n] for n in a.names), dtype=ref.dtype) for a in prog.outputs]
        reducer = self.reducer
        assert reducer is not None
        r_index = prog.ops.index(reducer)
        red_axes = tuple(n for n in reducer.reduced() if n in self.streamed)
        steps = self._steps()
        # how many steps feed each accumulator tile (its reduction is complete after the last)
        feeds: dict[tuple[int, ...], int] = {}
        for ix in steps:
            key = self._tile(reducer.outputs[0], self._ranges(ix))
            feeds[key] = feeds.get(key, 0) + 1
        last_use = self._last_uses(r_index)
        value_last = {a.uid: i for i, op in enumerate(prog.ops[: r_index + 1]) for a in op.inputs if a.role == "value"}
        cache: dict[tuple[int, frozenset[str]], tuple[tuple[int, ...], torch.Tensor]] = {}
        accs: dict[tuple[int, ...], _Acc] = {}
        for ix in steps:
            r = self._ranges(ix)
            env: dict[int, torch.Tensor] = {}
            for i, op in enumerate(prog.ops[: r_index + 1]):
                args = [self._load(a, r, full, cache, env) for a in op.inputs]
                if op is reducer:
                    key = self._tile(op.outputs[0], r)
                    acc = accs.get(key)
                    acc = self._accumulate(op, args, acc, r, red_axes)
                    acc.done += 1
                    accs[key] = acc
                    if acc.done == feeds[key]:
                        del accs[key]
                        self._finish(op, acc, r, r_index, results)
                else:
                    own = op.inputs[0].role == "value" and value_last.get(op.inputs[0].uid) == i
                    env[op.outputs[0].uid] = self._run_op(op, args, r, in_place=own)
                for a in op.inputs:
                    if last_use.get(a.key()) == i and a.role != "value":
                        self._drop(a, cache)
                    elif a.role == "value" and value_last.get(a.uid) == i:
                        env.pop(a.uid, None)  # an intermediate dies after its last use
                del args
        out = [self._to_cod(t, a, j) for j, (t, a) in enumerate(zip(results, prog.outputs))]
        return out[0] if len(out) == 1 else tuple(out)

    def _last_uses(self, upto: int) -> dict[tuple[int, frozenset[str]], int]:
        """Inputs reloaded every step are dropped after their last use in the step."""
        innermost = max((i for i, lp in enumerate(self.loops) if lp.kind == "stream" and int(lp.count) > 1), default=-1)
        last: dict[tuple[int, frozenset[str]], int] = {}
        for i, op in enumerate(self.program.ops[: upto + 1]):
            for a in op.inputs:
                if a.role == "value":
                    continue
                deepest = max((j for j, lp in enumerate(self.loops)
                               if lp.kind == "stream" and int(lp.count) > 1 and lp.axis in a.names), default=-1)
                if innermost >= 0 and deepest == innermost:
                    last[a.key()] = i
        return last

    def _tile(self, arr: Array, r: Ranges) -> tuple[int, ...]:
        return tuple(r[n][0] for n in arr.names)

    def _slice(self, arr: Array, r: Ranges) -> tuple[slice, ...]:
        return tuple(slice(*r[n]) for n in arr.names)

    def _load(self, arr: Array, r: Ranges, full: dict[int, torch.Tensor],
              cache: dict[tuple[int, frozenset[str]], tuple[tuple[int, ...], torch.Tensor]],
              env: dict[int, torch.Tensor]) -> torch.Tensor:
        if arr.role == "value":
            return env[arr.uid]
        tile = self._tile(arr, r)
        held = cache.get(arr.key())
        if held is not None and held[0] == tile:
            return held[1]
        cache.pop(arr.key(), None)  # free the old tile before loading the new one
        src = full[arr.root]
        t = src[self._slice(arr, r)].clone()  # a renamed view keeps its root's axis order
        cache[arr.key()] = (tile, t)
        return t

    def _drop(self, arr: Array, cache: dict[tuple[int, frozenset[str]], Any]) -> None:
        cache.pop(arr.key(), None)

    def _run_op(self, op: Op, args: list[torch.Tensor], r: Ranges, in_place: bool = False) -> torch.Tensor:
        """One operation on tiles (its rule of :data:`~ncd.ir.rules.STREAMED`); a one-input operation on a dead
        intermediate works in place."""
        result: torch.Tensor = STREAMED.apply(op.node.prim, self, op, args, r, in_place)  # type: ignore[attr-defined]
        return result

    def aligned(self, op: Op, args: list[torch.Tensor]) -> torch.Tensor:
        """The one input of ``op`` permuted (and unsqueezed) to its output's axes."""
        names, out = op.inputs[0].names, op.outputs[0].names
        return _align(args[0], names, out) if names != out else args[0]

    def _accumulate(self, op: Op, args: list[torch.Tensor], acc: _Acc | None, r: Ranges,
                    red_axes: tuple[str, ...]) -> _Acc:
        out = op.outputs[0].names
        if op.kind != "online":
            part = self._run_op(op, args, r)
            if acc is None:
                return _Acc(part)
            acc.o.add_(part)
            return acc
        s, v = args
        if op.inputs[0].role != "value":  # scores straight from an input tile: keep the loaded tile intact
            s = s.clone()
        s_names, v_names = op.inputs[0].names, op.inputs[1].names
        key = op.stream_axis or ""
        state = tuple(n for n in s_names if n != key)
        dim = s_names.index(key)
        if acc is None:
            shape = [self.extent[n] for n in state]
            acc = _Acc(torch.zeros([self.extent[n] for n in out], dtype=s.dtype),
                       torch.full(shape, float("-inf"), dtype=s.dtype), torch.zeros(shape, dtype=s.dtype))
        assert acc.m is not None and acc.l is not None
        m_new = torch.maximum(acc.m, s.amax(dim))
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        alpha = torch.exp(acc.m - m_safe)
        s = s.sub_(m_safe.unsqueeze(dim)).exp_()  # p, in place: s is this step's own scores tile
        acc.l.mul_(alpha).add_(s.sum(dim))
        acc.o.mul_(_align(alpha, state, out)).add_(_einsum(op.node, [(s, s_names), (v, v_names)], out))
        acc.m = m_new
        return acc

    def _finish(self, op: Op, acc: _Acc, r: Ranges, r_index: int, results: list[torch.Tensor]) -> None:
        value = acc.o
        if op.kind == "online":
            assert acc.l is not None
            state = tuple(n for n in op.inputs[0].names if n != op.stream_axis)
            value = value / _align(acc.l, state, op.outputs[0].names)
        env = {op.outputs[0].uid: value}
        for later in self.program.ops[r_index + 1:]:
            args = [env[a.uid] for a in later.inputs]
            env[later.outputs[0].uid] = self._run_op(later, args, r)
        for j, arr in enumerate(self.program.outputs):
            results[j][self._slice(arr, r)] = env[arr.uid]

    def _to_cod(self, t: torch.Tensor, arr: Array, j: int) -> torch.Tensor:
        want = tuple(a.name for a in self.diagram.cod[j])
        return t.permute([arr.names.index(n) for n in want]) if want != arr.names else t


def _symbols(sizes: Mapping[str, int]) -> dict[sympy.Symbol, int]:
    return {sympy.Symbol(k, positive=True): v for k, v in sizes.items()}


def streamed(diagram: Diagram, hierarchy: Hierarchy, *, group: SizeMap | None = None,
             stream: SizeMap | None = None, level: str | None = None, **sizes: int) -> Streamed:
    """The chunked PyTorch implementation of ``diagram`` under the relabelling (sizes must be numbers)."""
    from ncd.iomodel.program import defaults

    bound = {**defaults(diagram), **sizes}
    program = flatten(diagram, bound)
    schedule = Schedule.make(hierarchy, program, group, stream)
    for n, s in {n: s for a in program.inputs for n, s in a.axes}.items():
        if not sympy.sympify(s).is_number:
            raise LoweringError(f"streamed lowering needs every size: axis {n} is {s}")
    return Streamed(diagram, program, schedule, level or hierarchy.levels[-1], bound)


def peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes allocated by ``fn()`` above what was allocated when it started, and its result.

    Measured with PyTorch's profiler (``profile_memory=True``): every allocation and free of
    the CPU allocator is an event with its size; the running sum of those events, in time
    order, peaks at the answer.  Tensors alive before the call do not count; the result does.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = prof.profiler.kineto_results.events()
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in deltas:
        running += nbytes
        peak = max(peak, running)
    return peak, result


# -- the streamed lowering's rules (ncd.ir.rules.STREAMED): one operation on tiles ---------------------------
@STREAMED.rule(EinsumOp)
def _streamed_einsum(prim: EinsumOp, run: Streamed, op: Op, args: list[torch.Tensor], r: Ranges,
                     in_place: bool) -> torch.Tensor:
    return _einsum(op.node, [(t, a.names) for t, a in zip(args, op.inputs)], op.outputs[0].names)


@STREAMED.rule(ScaleOp)
def _streamed_scale(prim: ScaleOp, run: Streamed, op: Op, args: list[torch.Tensor], r: Ranges,
                    in_place: bool) -> torch.Tensor:
    t = run.aligned(op, args)
    factor = float(sympy.sympify(prim.factor).subs(_symbols(run.sizes)))
    return t.mul_(factor) if in_place else t * factor


@STREAMED.rule(ElementwiseOp)
def _streamed_elementwise(prim: ElementwiseOp, run: Streamed, op: Op, args: list[torch.Tensor], r: Ranges,
                          in_place: bool) -> torch.Tensor:
    if prim.function not in _FUNCTIONS or prim.args:
        raise LoweringError(f"streamed lowering: no tile function for {describe(op.node)} ({prim.label()})")
    return _FUNCTIONS[prim.function](run.aligned(op, args))


@STREAMED.rule(CausalMaskOp)
def _streamed_causal(prim: CausalMaskOp, run: Streamed, op: Op, args: list[torch.Tensor], r: Ranges,
                     in_place: bool) -> torch.Tensor:
    t, out = run.aligned(op, args), op.outputs[0].names
    y, x = prim.query.name, prim.key.name
    qi = torch.arange(*r[y]).reshape([-1 if n == y else 1 for n in out])
    ki = torch.arange(*r[x]).reshape([-1 if n == x else 1 for n in out])
    if prim.lower_right:  # the diagonal ends at the last query and key: the queries' indices shifted by |x| - |y|
        sizes = _symbols(run.sizes)
        qi = qi + int(sympy.sympify(prim.key.size).subs(sizes)) - int(sympy.sympify(prim.query.size).subs(sizes))
    masked = ki > qi
    if prim.window is not None:  # a sliding window also hides keys `window` or more positions back
        masked = masked | (qi - ki >= int(sympy.sympify(prim.window).subs(_symbols(run.sizes))))
    return t.masked_fill_(masked, float("-inf")) if in_place else t.masked_fill(masked, float("-inf"))


STREAMED.unsupported_kind("linear", "multilinear", "nonlinear", "structural",
                          why="a tile loop needs the operation's rule on chunks of its axes; only einsum wirings,"
                              " scales, elementwise functions, causal masks and online softmax have one")
