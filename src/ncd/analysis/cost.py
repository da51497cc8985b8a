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
from dataclasses import dataclass, field
from typing import Any

import sympy

from ncd.analysis.cost_walk import DTYPE_BYTES, Analysis, analyse
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
from ncd.analysis.tables import AnalysisError
from ncd.ir.checks import expect_diagram
from ncd.ir.collector import no_collector
from ncd.ir.diagram import Block, Diagram, check_option_names, check_size_names
from ncd.ir.program import Program
from ncd.ir.size import evaluate, symbol
from ncd.limits import check_diagram

__all__ = ["cost", "CostReport", "Metrics", "BoxCost", "CostContext", "DTYPE_BYTES"]



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
                totals, boxes, peak, by_dtype = analyse(self.diagram, _program(self.diagram, self.sizes), self.dtype,
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
    if shared and sympy.sympify(totals.params - shared).is_negative:
        from ncd.errors import SchemaError

        raise SchemaError(f"block {diagram.name!r}: meta shared={shared} is more parameter entries than its boxes"  # type: ignore[attr-defined]
                          f" hold ({totals.params})")
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
            analyse(bound, _program(bound, written=(diagram, bound_sizes)), dtype, training)
        report.numbers = _held_once(report.numbers, diagram)
    else:
        report._formulas()
    from ncd.distributed.report import attach  # sharded diagrams: .collectives and .per_rank (docs/distributed.md)

    attached: CostReport = attach(report)
    return attached




def _program(diagram: Diagram, symbolic: dict[str, int] | None = None,
             written: tuple[Diagram, dict[str, int]] | None = None) -> Program:
    """The program lowering writes for ``diagram``: bound, or on symbolic sizes with plans chosen at ``symbolic``
    (:func:`ncd.torch.codegen.symbolic_program`).  The one lowering, run once per report.  ``written``: the
    diagram before binding and its sizes, so that the program prints constants by name as ``to_source`` does."""
    from ncd.torch.codegen import program_for_costs  # the program's one producer, its one entry point here

    return program_for_costs(diagram, symbolic, written)

