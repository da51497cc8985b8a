"""Exact costs read off a diagram: FLOPs, parameters, stored activations, peak memory.

``ncd.cost(diagram, **sizes)`` reads the lowered program (:class:`ncd.ir.program.Program`: what
``to_source`` prints and ``to_torch`` runs), produced once: on the bound diagram for numbers, on
symbolic sizes for formulas.  It goes through the program's schedule step by step
(:class:`ncd.ir.program.Step`, in the order the ops run): each box lowered is one row, costed by its
primitive's cost rule on the step's tensors and woven axes; a fused attention is the ``fused`` step
the program recorded; woven axes moved to the front and back are the views the program wrote; a
class call or a loop of repeated layers runs the class's steps.  Nothing of code generation is
replayed here: which boxes run in place, what was fused, which weights store their rows in a chosen
order (an ``nn.Linear`` call's typed ``linear`` option) are read off the program.  Each row says what the
generated PyTorch does: the multiply-accumulates of its matrix products, its other arithmetic, and which tensors autograd keeps
for the backward pass.  Every figure is a sympy formula in the axis sizes and, once the sizes are
bound, a number.

Conventions (see ``docs/backprop.md``):

* A **multiply-accumulate** (MAC) is one ``a*b+c``; matrix-product FLOPs are ``2 x MACs``,
  as ``torch.utils.flop_counter.FlopCounterMode`` counts them (``matmul`` below).
* **Other FLOPs** are the elementwise, softmax and normalisation arithmetic that the
  counter ignores: one per output element for ``+ x * relu ...`` and each elementary
  function; softmax 4 per element forward and backward.  They are reported separately.
* **Backward** computes the gradient of every float input and every parameter.
* **Activation bytes** are the distinct storages autograd saves (parameters excluded),
  float32 unless ``dtype`` says otherwise, indices int64, masks bool.
* **Peak memory** is the largest total of live storages during the forward pass: inputs,
  values not yet consumed, and everything saved for backward.

What a cost rule sees and records (:class:`CostContext`, :class:`Metrics`, :class:`BoxCost`) is
:mod:`ncd.analysis.metrics`; the symbolic sums and the peak sweep's polynomials are :mod:`ncd.analysis.peak`.

>>> import ncd
>>> report = ncd.cost(ncd.Einsum("y k h, x k h -> y x h"))
>>> report.formulas.forward_macs
h*k*x*y
>>> ncd.cost(ncd.Identity.of("b m") >> ncd.Linear("m -> n"), b=2, m=3, n=4).forward_flops
48
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy

from ncd.analysis.layout import ITEMSIZE, Tensor, numel
from ncd.analysis.metrics import BoxCost as BoxCost
from ncd.analysis.metrics import CostContext as CostContext
from ncd.analysis.metrics import Metrics as Metrics
from ncd.analysis.peak import ZERO as ZERO
from ncd.analysis.peak import Polynomial as Polynomial
from ncd.analysis.peak import _dominates as _dominates
from ncd.analysis.peak import _max as _max
from ncd.analysis.peak import _peak_of_polynomials as _peak_of_polynomials
from ncd.analysis.peak import _polynomial as _polynomial
from ncd.analysis.peak import _sum as _sum
from ncd.analysis.tables import AnalysisError, cost_entry
from ncd.ir.axes import Axis, Type
from ncd.ir.checks import expect_diagram
from ncd.ir.collector import no_collector
from ncd.ir.diagram import Block, Box, Diagram, check_option_names, check_size_names
from ncd.ir.program import Function, Op, Program, Step
from ncd.ir.size import evaluate, maximum, symbol
from ncd.ir.weaving import WovenAxis
from ncd.limits import check_diagram

__all__ = ["cost", "CostReport", "Metrics", "BoxCost", "CostContext", "DTYPE_BYTES"]

DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


class _Walker:
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
        sub = _Walker(self.itemsize, self.training)
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


# -- the report --------------------------------------------------------------------------
@dataclass
class CostReport:
    """Costs of a diagram: totals, per box, per block; formulas and (when bound) numbers.

    ``forward_flops``, ``backward_flops``, ``params``, ``activation_bytes`` and
    ``peak_bytes`` are numbers once every size is bound and formulas otherwise;
    ``formulas`` always holds the sympy expressions.
    """

    diagram: Diagram
    sizes: dict[str, int]
    dtype: str = "float32"
    training: bool = True
    numbers: Metrics | None = None
    box_numbers: list[BoxCost] | None = None
    peak_number: sympy.Expr | None = None
    activation_by_dtype_number: dict[str, sympy.Expr] | None = None
    #: the symbolic analysis, computed on first use when every size is bound (it is the slower walk)
    _symbolic: Analysis | None = field(default=None, repr=False)

    def _formulas(self) -> Analysis:
        if self._symbolic is None:
            from ncd.prims.contraction import planned_at

            with no_collector(), planned_at(self.sizes):  # size-chosen plans (an einsum's pair order) as at the bound sizes
                totals, boxes, peak, by_dtype = _analyse(self.diagram, _program(self.diagram, self.sizes), self.dtype,
                                                         self.training)
                self._symbolic = (_held_once(totals, self.diagram), boxes, peak, by_dtype)
        return self._symbolic

    @property
    def formulas(self) -> Metrics:
        """The totals as sympy formulas in the axis sizes.

        A plan lowering chooses by size — the pair order of an einsum of three or more operands — is the
        one chosen at this report's sizes (given, and the top block's defaults; by axis names when they do
        not bind it): at other sizes the formula is exact for that plan, which lowering may not pick there.
        """
        return self._formulas()[0]

    @property
    def box_formulas(self) -> list[BoxCost]:
        return self._formulas()[1]

    @property
    def peak_formula(self) -> sympy.Expr | None:
        return self._formulas()[2]

    @property
    def activation_by_dtype_formula(self) -> dict[str, sympy.Expr]:
        return self._formulas()[3]

    @property
    def boxes(self) -> list[BoxCost]:
        """Per-box costs: numbers once bound (repetitions unrolled), else formulas."""
        return self.box_numbers if self.box_numbers is not None else self.box_formulas

    # -- numbers ------------------------------------------------------------------------
    def value(self, expr: sympy.Expr | None) -> int | sympy.Expr | None:
        """``expr`` as a whole number if every size is bound, else the formula."""
        if expr is None:
            return None
        bound = expr.xreplace({symbol(k): sympy.Integer(v) for k, v in self.sizes.items()})
        bound = sympy.simplify(bound) if bound.free_symbols == set() and not bound.is_Integer else bound
        if bound.free_symbols:
            return bound
        return evaluate(bound)

    @property
    def bound(self) -> bool:
        return self.numbers is not None

    def __getattr__(self, name: str) -> Any:
        if name in Metrics.NAMES:
            source = self.__dict__["numbers"] if self.__dict__.get("numbers") is not None else self.formulas
            return self.value(getattr(source, name))
        raise AttributeError(name)

    @property
    def peak_bytes(self) -> int | sympy.Expr | None:
        return self.value(self.peak_number if self.numbers is not None else self.peak_formula)

    @property
    def activation_bytes_by_dtype(self) -> dict[str, int | sympy.Expr | None]:
        source = self.activation_by_dtype_number if self.activation_by_dtype_number is not None else \
            self.activation_by_dtype_formula
        return {k: self.value(v) for k, v in source.items()}

    @property
    def blocks(self) -> dict[str, Metrics]:
        """Metrics per block path (``"Outer/Inner"``); repetitions of a block add up."""
        return self._blocks(self.boxes)

    @property
    def block_formulas(self) -> dict[str, Metrics]:
        """Like :attr:`blocks`, as formulas in the axis sizes."""
        return self._blocks(self.box_formulas)

    @staticmethod
    def _blocks(boxes: list[BoxCost]) -> dict[str, Metrics]:
        members: dict[str, list[Metrics]] = {}
        for b in boxes:
            for k in range(1, len(b.blocks) + 1):
                members.setdefault("/".join(b.blocks[:k]), []).append(b.metrics)
        return {key: Metrics.total(items) for key, items in members.items()}

    def complexity(self) -> dict[str, list[tuple[sympy.Expr, dict[str, int]]]]:
        """Leading terms (highest total degree) of the forward FLOPs, per block and for the whole.

        Each term comes with the degree of each axis in it, e.g. attention scores are
        quadratic in the sequence axes: ``(2*b*h*k*x*y, {'b': 1, 'h': 1, 'k': 1, 'x': 1, 'y': 1})``.
        """
        groups = {"(total)": self.formulas.forward_flops}
        groups.update({k: sympy.expand(m.forward_flops) for k, m in self.block_formulas.items()})
        return {k: leading_terms(v) for k, v in groups.items()}

    def table(self) -> Any:
        """A ``rich`` table: one row per block and per box, numbers when bound."""
        from ncd.analysis.table import cost_table

        return cost_table(self)

    def __str__(self) -> str:
        from ncd.analysis.table import render_text

        return render_text(self)


def leading_terms(expr: sympy.Expr) -> list[tuple[sympy.Expr, dict[str, int]]]:
    expr = sympy.expand(expr)
    if expr == 0:
        return []
    syms = sorted(expr.free_symbols, key=str)
    if not syms:
        return [(expr, {})]
    try:
        poly = sympy.Poly(expr, *syms)
    except sympy.PolynomialError:
        return [(expr, {})]
    terms = poly.terms()
    top = max(sum(m) for m, _ in terms)
    result = []
    for monom, coeff in terms:
        if sum(monom) == top:
            term = coeff * sympy.Mul(*[s**e for s, e in zip(syms, monom)])
            result.append((term, {str(s): e for s, e in zip(syms, monom) if e}))
    return result


def _held_once(totals: Metrics, diagram: Diagram) -> Metrics:
    """``totals`` with a traced diagram's tied parameters counted once, as its lowered module holds them: its boxes
    count them once per box (meta ``shared``, :func:`ncd.torch.read_back.shared_entries`; a file is not trusted)."""
    shared = diagram.get("shared", 0) if isinstance(diagram, Block) else 0
    if type(shared) is not int or shared < 0:
        from ncd.errors import SchemaError

        raise SchemaError(f"block {diagram.name!r}: meta shared={shared!r:.40} is not a count of parameters")  # type: ignore[attr-defined]
    return dataclasses.replace(totals, params=totals.params - shared) if shared else totals


def _defaults(diagram: Diagram) -> dict[str, int]:
    if isinstance(diagram, Block):
        return dict(diagram.get("defaults", ()))
    return {}


def cost(diagram: Diagram, /, *, dtype: str = "float32", training: bool = True, **sizes: int) -> CostReport:
    """The exact costs of ``diagram`` (see the module doc for the conventions).

    Sizes given here (and a top block's ``defaults``) bind the formulas to numbers.
    ``training`` (the mode ``to_torch`` returns modules in) decides what dropout and batch
    normalisation keep.  ``training=False`` is eval mode *with autograd recording* (every float
    input requires grad): a class given a guarded inference branch (``ncd.torch.layouts``: an encoder
    layer's or a self-attention's Q, K and V in one packed product, the feed-forward's activation fused
    into ``torch._addmm_activation``) then runs the ops below its guard, and those are what is
    costed.  The branch runs only with autograd off; no report costs it (it computes the same
    matrix products as the forward costed here and saves nothing; its packing, its in-place
    residuals and its peak memory are not modelled).
    """
    expect_diagram(diagram, "cost")
    check_option_names(diagram, "cost", {k: v for k, v, default in (("dtype", dtype, "float32"), ("training", training, True))
                                         if v is not default}, _defaults(diagram))  # a formula may keep the size free
    with no_collector():  # lowering and the walk allocate many acyclic records (ncd.ir.collector)
        return _cost(diagram, dtype, training, sizes)


def _cost(diagram: Diagram, dtype: str, training: bool, sizes: dict[str, int]) -> CostReport:
    if dtype not in DTYPE_BYTES:
        raise AnalysisError(f"cost: unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            from ncd.errors import SizeError

            raise SizeError(f"cost: size {key}={value!r} must be a positive whole number")
    sharded = isinstance(diagram, Block) and diagram.get("mesh") is not None  # per-rank costs read the batch ``b``
    check_size_names(diagram, sizes, "cost", [*_defaults(diagram), *(["b"] if sharded else [])])
    check_diagram(diagram, memory=False)  # repetition counts, before anything is unrolled
    bound_sizes = {**_defaults(diagram), **sizes}
    report = CostReport(diagram, bound_sizes, dtype=dtype, training=training)
    free = {str(s) for s in diagram.free_symbols}
    if free <= set(bound_sizes):
        # exact numbers: walk the bound diagram (repetitions unrolled; einsum paths depend on sizes)
        bound = diagram.bind(**{k: v for k, v in bound_sizes.items() if k in free}) if free else diagram
        check_diagram(bound, memory=False)
        report.numbers, report.box_numbers, report.peak_number, report.activation_by_dtype_number = \
            _analyse(bound, _program(bound, written=(diagram, bound_sizes)), dtype, training)
        report.numbers = _held_once(report.numbers, diagram)
    else:
        report._formulas()
    from ncd.distributed.report import attach  # sharded diagrams: .collectives and .per_rank (docs/distributed.md)

    attached: CostReport = attach(report)
    return attached


Analysis = tuple[Metrics, list[BoxCost], "sympy.Expr | None", dict[str, sympy.Expr]]


def _program(diagram: Diagram, symbolic: dict[str, int] | None = None,
             written: tuple[Diagram, dict[str, int]] | None = None) -> Program:
    """The program lowering writes for ``diagram``: bound, or on symbolic sizes with plans chosen at ``symbolic``
    (:func:`ncd.torch.codegen.symbolic_program`).  The one lowering, run once per report.  ``written``: the
    diagram before binding and its sizes, so that the program prints constants by name as ``to_source`` does."""
    from ncd.torch.codegen import program_for_costs  # the program's one producer, its one entry point here

    return program_for_costs(diagram, symbolic, written)


def _analyse(diagram: Diagram, program: Program, dtype: str, training: bool = True) -> Analysis:
    walker = _Walker(DTYPE_BYTES[dtype], training)
    inputs = [walker.allocate(seg.axes, tuple(a.name for a in seg.axes), seg.dtype == "float", seg.dtype)
              for seg in diagram.dom]
    outputs = walker.run_program(program, inputs, diagram)
    total = Metrics.total([b.metrics for b in walker.boxes]).map(sympy.expand)
    saved: dict[str, list[sympy.Expr]] = {}
    for sid in walker.saved:
        complex_ = {"float64": "complex128"}.get(dtype, "complex64")
        key = {"float": dtype, "index": "int64", "bool": "bool", "complex": complex_}[walker.dtypes[sid]]
        saved.setdefault(key, []).append(walker.bytes[sid])
    by_dtype = {key: _sum(terms) for key, terms in saved.items()}
    return total, walker.boxes, walker.peak(inputs, outputs), by_dtype

