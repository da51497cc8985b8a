"""The walk :func:`ncd.cost` makes through the lowered program's schedule: each box lowered is one row, costed by its
primitive's cost rule on the step's tensors and woven axes; class calls and loops of repeated layers run the class's
steps; the peak of live storages is swept over the forward pass.  :func:`analyse` gives the totals, the rows, the
peak and the bytes autograd keeps by dtype; :class:`ncd.analysis.cost.CostReport` reads them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import sympy

from ncd.analysis.expansion import check_metrics
from ncd.analysis.layout import ITEMSIZE, Tensor, numel
from ncd.analysis.metrics import BoxCost, CostContext, Metrics
from ncd.analysis.peak import ZERO, _peak_of_polynomials, _sum
from ncd.analysis.tables import AnalysisError, cost_entry
from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram
from ncd.ir.program import Function, Op, Program, Step
from ncd.ir.size import maximum
from ncd.ir.weaving import WovenAxis

__all__ = ["analyse", "Analysis", "DTYPE_BYTES", "Walker"]

DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}

#: the totals, the rows (one a box), the peak and the bytes autograd keeps by dtype
Analysis = tuple[Metrics, list[BoxCost], "sympy.Expr | None", dict[str, sympy.Expr]]


class Walker:
    """The cost model: the lowered program's schedule read step by step, abstract tensors in, costs recorded."""

    def __init__(self, itemsize: int, training: bool = True) -> None:
        self.itemsize = itemsize
        self.training = training
        self.ids = itertools.count()
        self.bytes: dict[int, sympy.Expr] = {}
        self.dtypes: dict[int, str] = {}
        self.saved: dict[int, int] = {}
        self.boxes: list[BoxCost] = []
        self.blocks: list[str] = []
        self.step_count = 0
        self.functions: dict[str, Function] = {}
        self.born: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.params: set[int] = set()
        self.store: dict[str, list[Tensor]] = {}
        self.symbolic_repeat = False

    def allocate(self, axes: tuple[Axis, ...], order: tuple[str, ...], grad: bool, dtype: str) -> Tensor:
        sid = next(self.ids)
        item = self.itemsize if dtype == "float" else 2 * self.itemsize if dtype == "complex" else ITEMSIZE[dtype]
        self.bytes[sid] = numel(axes) * item
        self.dtypes[sid] = dtype
        self.born[sid] = self.step_count
        self.last[sid] = self.step_count
        names = {a.name for a in axes}
        return Tensor(sid, axes, tuple(n for n in order if n in names), grad, dtype)  # a new storage has no gaps

    def save(self, t: Tensor, metrics: Metrics) -> None:
        if t.storage in self.saved or t.storage in self.params:
            return
        self.saved[t.storage] = len(self.boxes)
        metrics.activation_bytes += self.bytes[t.storage]

    # -- the schedule lowering recorded (ncd.ir.program.Step), read step by step ------------------
    def run_program(self, program: Program, inputs: list[Tensor], top: Diagram) -> list[Tensor]:
        """Cost the program's top class on ``inputs`` (``top``: the diagram it lowers, whose block name heads
        every box's path as the walk of a block would)."""
        self.functions = {f.name: f for f in program.functions}
        if isinstance(top, Block):
            self.blocks.append(top.name)
        return self.function(program.top, inputs, ())

    def function(self, fn: Function, values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        """One call of a generated class: its steps on ``values``."""
        env = {id(v): t for v, t in zip(fn.inputs, values)}
        self.schedule(fn.steps, env, frame)
        return [env[id(v)] for v in fn.outputs]

    def inline(self, steps: Sequence[Step], values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        """The steps of a sub-diagram a rule lowered inline (``enter`` ... ``exit``) on ``values``."""
        env = {id(v): t for v, t in zip(steps[0].outputs, values)}
        self.schedule(steps, env, frame)
        return [env[id(v)] for v in steps[-1].inputs]

    def schedule(self, steps: Sequence[Step], env: dict[int, Tensor], frame: tuple[Axis, ...]) -> None:
        for step in steps:
            if step.kind in ("enter", "exit"):
                continue
            outputs = self.step(step, [env[id(v)] for v in step.inputs], frame + step.frame)
            env.update(zip(map(id, step.outputs), outputs))

    def step(self, step: Step, values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        if step.kind == "box":
            assert step.box is not None
            outputs = self.box(step.box, values, step.woven, frame, step.inner, step.ops, step.cod)
            self.boxes[-1].code = tuple(op.code for op in step.ops)
            return outputs
        if step.kind == "fused":
            from ncd.analysis.attention import fused_attention

            outputs = fused_attention(self, step.pattern, list(step.parts), values, step.ops, step.outputs, step.inputs)
            self.boxes[-1].code = tuple(op.code for op in step.ops)
            return outputs
        if step.kind == "weave":
            return self.moved(step.woven, values, frame)
        if step.kind == "unweave":
            return self.returned(values, frame, step.cod)
        if step.kind == "call":
            return self.call(step, values, frame)
        raise AnalysisError(f"cost: no reading of a program step {step.kind!r}")

    def box(self, box: Box, values: list[Tensor], woven: tuple[WovenAxis, ...], frame: tuple[Axis, ...],
            inner: tuple[Step, ...] = (), ops: tuple[Op, ...] = (), cod: Type | None = None) -> list[Tensor]:
        self.step_count += 1
        for v in values:
            self.last[v.storage] = self.step_count
        present = [a for a in frame if any(a.name in v.names for v in values)]
        cod = cod if cod is not None else box.cod  # with the woven axes in place
        out_axes = [tuple(present) + seg.axes for seg in cod]
        metrics = Metrics()
        for shape in box.prim.params().values():
            metrics.params += numel([Axis("p", s) for s in shape])
        ctx = CostContext(box, list(values), woven, out_axes, self, metrics, inner, ops)
        outputs: list[Tensor] = cost_entry(box.prim).fn(ctx)
        if len(outputs) != len(cod):
            raise AnalysisError(f"cost rule for {box.prim.op} gave {len(outputs)} outputs, expected {len(cod)}")
        self.boxes.append(BoxCost(box.text(), box.prim.op, tuple(self.blocks), metrics))
        return outputs

    def moved(self, woven: tuple[Any, ...], values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        """Woven axes moved to the front (views; a shared input is not copied), as the program does."""
        frame_names = {f.name for f in frame}
        moved = []
        for j, v in enumerate(values):
            carried = [w.axis for w in woven if w.dom_pos[j] is not None]
            carried_names = {a.name for a in carried}
            head = [a for a in v.axes if a.name in frame_names]
            rest = [a for a in v.axes if a.name not in carried_names and a not in head]
            moved.append(v.relabel(head + carried + rest))
        return moved

    def returned(self, values: list[Tensor], frame: tuple[Axis, ...], cod: Type) -> list[Tensor]:
        """Woven axes moved back into place (views; a shared input's result expanded)."""
        out = []
        for v, seg in zip(values, cod):
            present_frame = [a for a in frame if a.name in v.names]
            out.append(v.relabel(present_frame + list(seg.axes)) if all(a.name in v.names for a in seg.axes) else
                       _expand(v, present_frame + list(seg.axes)))
        return out

    def call(self, step: Step, values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        """Generated classes called in turn (a block, or the layers of a repeat), each on its caller's storages."""
        if step.count is not None:
            return self.repeated(step, values, frame)
        for callee, name in zip(step.callees, step.names):
            if name is not None:
                self.blocks.append(name)
            try:
                values = self.function(self.functions[callee], values, frame)
            finally:
                if name is not None:
                    self.blocks.pop()
        return values

    def repeated(self, step: Step, values: list[Tensor], frame: tuple[Axis, ...]) -> list[Tensor]:
        """A loop over a symbolic count of equal layers: one layer walked, its costs ``count`` times."""
        assert step.count is not None
        sub = Walker(self.itemsize, self.training)
        sub.functions = self.functions
        sub.blocks = list(self.blocks)
        inputs = [sub.allocate(v.axes, v.order, v.grad, v.dtype) for v in values]
        results = sub.call(dataclasses.replace(step, count=None), inputs, frame)
        count = step.count
        for b in sub.boxes:
            b.metrics = b.metrics.map(lambda e: e * count)
            b.text = f"{b.text} (×{step.label})"
            self.boxes.append(b)
        self.symbolic_repeat = True
        return [self.allocate(tuple(v.axes), tuple(a.name for a in v.axes), r.grad, r.dtype)
                for v, r in zip(step.outputs, results)]

    def peak(self, inputs: list[Tensor], outputs: list[Tensor]) -> sympy.Expr | None:
        if self.symbolic_repeat:
            return None
        end = self.step_count + 1
        keep = {v.storage for v in inputs} | {v.storage for v in outputs} | set(self.saved)
        # a sweep over the steps: a storage is live from its birth to its last use (to the end if kept)
        born: dict[int, list[sympy.Expr]] = {}
        dies: dict[int, list[sympy.Expr]] = {}
        for sid, b in self.bytes.items():
            if sid in self.params:
                continue
            born.setdefault(self.born[sid], []).append(b)
            if sid not in keep and self.last[sid] + 1 < end:
                dies.setdefault(self.last[sid] + 1, []).append(b)
        if all(b.is_Integer for b in self.bytes.values()):  # bound sizes: whole numbers, added as Python ints
            live, best = 0, 0
            for t in range(0, end):
                live += sum(int(b) for b in born.get(t, ())) - sum(int(b) for b in dies.get(t, ()))
                best = max(best, live)
            return sympy.Integer(best)
        polynomial = _peak_of_polynomials(born, dies, end)
        if polynomial is not None:
            return polynomial
        candidates: dict[sympy.Expr, None] = {}
        total: sympy.Expr = ZERO
        for t in range(0, end):
            if t in born or t in dies:
                total = sympy.Add(total, *born.get(t, ()), *(-b for b in dies.get(t, ())))
            candidates[total] = None
        return maximum(list(candidates))  # candidates no other one provably exceeds (sizes are positive)


def _expand(v: Tensor, axes: list[Axis]) -> Tensor:
    return dataclasses.replace(v, axes=tuple(axes))


def analyse(diagram: Diagram, program: Program, dtype: str, training: bool = True) -> Analysis:
    walker = Walker(DTYPE_BYTES[dtype], training)
    inputs = [walker.allocate(seg.axes, tuple(a.name for a in seg.axes), seg.dtype == "float", seg.dtype)
              for seg in diagram.dom]
    outputs = walker.run_program(program, inputs, diagram)
    total = Metrics.total([b.metrics for b in walker.boxes])
    check_metrics(total, walker.boxes)  # (a file's sizes may be sums whose products expand past any budget)
    total = total.map(sympy.expand)
    saved: dict[str, list[sympy.Expr]] = {}
    for sid in walker.saved:
        complex_ = {"float64": "complex128"}.get(dtype, "complex64")
        key = {"float": dtype, "index": "int64", "bool": "bool", "complex": complex_}[walker.dtypes[sid]]
        saved.setdefault(key, []).append(walker.bytes[sid])
    by_dtype = {key: _sum(terms) for key, terms in saved.items()}
    return total, walker.boxes, walker.peak(inputs, outputs), by_dtype
