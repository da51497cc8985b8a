"""What the cost model records and what a cost rule sees.

:class:`Metrics` are the additive costs (FLOPs the counter sees and the others, parameters, activation bytes) of a box,
a block or a whole diagram; :class:`BoxCost` one box occurrence's row of a report; :class:`CostContext` what a
primitive's cost rule is given (the box, its input tensors, woven axes, the walker of :mod:`ncd.analysis.cost`) and
the calls it records costs with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sympy

from ncd.analysis.layout import Tensor, numel
from ncd.analysis.peak import ZERO, _sum
from ncd.analysis.tables import AnalysisError
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box
from ncd.ir.program import Op, Step
from ncd.ir.weaving import WovenAxis

if TYPE_CHECKING:
    from ncd.analysis.cost_walk import Walker

__all__ = ["BoxCost", "CostContext", "Metrics"]


@dataclass
class Metrics:
    """Additive costs (sympy expressions).  ``*_matmul`` is what the FLOP counter sees."""

    forward_matmul: sympy.Expr = ZERO
    forward_other: sympy.Expr = ZERO
    backward_matmul: sympy.Expr = ZERO
    backward_other: sympy.Expr = ZERO
    params: sympy.Expr = ZERO
    activation_bytes: sympy.Expr = ZERO
    #: backward FLOPs ``FlopCounterMode`` counts beyond ``backward_matmul`` (its grouped-convolution blind spot)
    counter_excess: sympy.Expr = ZERO

    @property
    def forward_flops(self) -> sympy.Expr:
        return self.forward_matmul + self.forward_other

    @property
    def backward_flops(self) -> sympy.Expr:
        return self.backward_matmul + self.backward_other

    @property
    def forward_macs(self) -> sympy.Expr:
        return self.forward_matmul / 2

    @property
    def backward_macs(self) -> sympy.Expr:
        return self.backward_matmul / 2

    def __iadd__(self, other: Metrics) -> Metrics:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @staticmethod
    def total(items: Sequence[Metrics]) -> Metrics:
        """The sum of many metrics, each field added in one go (linear in their number)."""
        names = [f.name for f in dataclasses.fields(Metrics)]
        return Metrics(**{n: _sum([getattr(m, n) for m in items]) for n in names})

    def map(self, fn: Any) -> Metrics:
        return Metrics(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    NAMES = ("forward_macs", "forward_flops", "forward_matmul", "forward_other", "backward_macs", "backward_flops",
             "backward_matmul", "backward_other", "params", "activation_bytes", "counter_excess")


@dataclass
class BoxCost:
    """The costs of one box occurrence: its label, primitive, enclosing blocks and metrics."""

    text: str
    op: str
    blocks: tuple[str, ...]
    metrics: Metrics = field(default_factory=Metrics)
    #: the lines of the lowered program this row costs (the ops the box, or the fused pattern, became)
    code: tuple[str, ...] = ()


@dataclass
class CostContext:
    """What a cost rule sees: the box, its input tensors, its woven axes and the walker."""

    box: Box
    inputs: list[Tensor]
    #: the woven axes the box handles in place (each axis and its positions: ``ncd.ir.weaving.WovenAxis``)
    woven: tuple[WovenAxis, ...]
    out_axes: list[tuple[Axis, ...]]
    walker: Walker
    metrics: Metrics
    #: the steps of a sub-diagram the box's lowering rule wrote inline (a scan's step): ``walker.inline`` reads them
    inner: tuple[Step, ...] = ()
    #: the ops of the program the box's step ran (what :meth:`call_to` finds and :meth:`charge` costs)
    ops: tuple[Op, ...] = ()

    @property
    def prim(self) -> Any:
        return self.box.prim

    @property
    def grad(self) -> bool:
        return self.box.prim.learned or any(t.grad for t in self.inputs)

    def new(self, axes: Sequence[Axis], order: Sequence[str] | None = None, grad: bool | None = None,
            dtype: str = "float") -> Tensor:
        """A tensor with a fresh storage (row-major unless ``order`` is given)."""
        axes = tuple(axes)
        return self.walker.allocate(axes, tuple(order) if order is not None else tuple(a.name for a in axes),
                                    self.grad if grad is None else grad, dtype)

    def output(self, j: int = 0, order: Sequence[str] | None = None, dtype: str = "float") -> Tensor:
        return self.new(self.out_axes[j], order, dtype=dtype)

    def like(self, j: int, source: Tensor) -> Tensor:
        """Output ``j`` laid out in memory like ``source`` (what elementwise kernels do)."""
        names = {a.name for a in self.out_axes[j]}
        if not source.dense:
            return self.output(j)
        order = [n for n in source.order if n in names]
        order += [a.name for a in self.out_axes[j] if a.name not in order]
        return self.output(j, order)

    def parameter(self, axes: Sequence[Axis]) -> Tensor:
        """A learned tensor (never counted as an activation)."""
        t = self.walker.allocate(tuple(axes), tuple(a.name for a in axes), True, "float")
        self.walker.params.add(t.storage)
        return t

    def save(self, *tensors: Tensor) -> None:
        """Autograd keeps these tensors for the backward pass."""
        for t in tensors:
            self.walker.save(t, self.metrics)

    def matmul(self, forward: sympy.Expr, backward: sympy.Expr) -> None:
        """Matrix-product FLOPs (``2 x MACs``), as the FLOP counter counts them."""
        self.metrics.forward_matmul += forward
        self.metrics.backward_matmul += backward

    def other(self, forward: sympy.Expr, backward: sympy.Expr) -> None:
        """Elementwise / reduction FLOPs the FLOP counter does not see."""
        self.metrics.forward_other += forward
        self.metrics.backward_other += backward

    def numel(self, j: int = 0) -> sympy.Expr:
        return numel(self.out_axes[j])

    def call_to(self, *functions: str) -> Op:
        """The one op of this step that calls one of ``functions`` (:func:`ncd.analysis.targets.target_of`)."""
        from ncd.analysis.targets import target_of

        found = [op for op in self.ops if target_of(op) in functions]
        if len(found) != 1:
            raise AnalysisError(f"cost of {self.box.text()}: the program ran {len(found)} calls of"
                                f" {' / '.join(functions)} for it, not one: {[op.code for op in self.ops]}")
        return found[0]

    def charge(self, op: Op, shapes: Sequence[Sequence[sympy.Expr]], grads: Sequence[bool]) -> None:
        """The matrix products of ``op`` read off what it calls (:func:`ncd.analysis.targets.products`), its
        arguments of full ``shapes``; backward, those of the arguments whose gradient is taken (``grads``)."""
        from ncd.analysis.targets import products

        rows = products(op, [tuple(shape) for shape in shapes])
        self.matmul(rows.forward, _sum([b for b, g in zip(rows.backward, grads) if g]))
        self.metrics.counter_excess += _sum([e for e, g in zip(rows.excess, grads) if g])
