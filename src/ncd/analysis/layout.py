"""The tensors of a lowered diagram as the cost model sees them, and PyTorch's einsum.

A :class:`Tensor` is one value in the generated code: its logical axes (in the code's
order), its *physical* order (names, outermost first; dense storage assumed), the storage
it views, whether it requires grad, and its dtype.  Views (movedim, copy, transpose) share
the storage; new storages are allocated by operations.

:func:`einsum` is the cost rule of one ``torch.einsum`` of one or two operands, the only einsums
the lowered program runs (three or more operands are lowered one pair at a time,
:meth:`ncd.prims.linear.EinsumOp.pairs`).  ATen (``einsum`` / ``sumproduct_pair``) aligns the
operands to *output labels, then contracted labels*; dimensions found in one operand only are
summed first; the rest becomes ``bmm`` on ``(lro, lo, sum) x (lro, sum, ro)`` after a permute +
reshape, which copies unless each group is already adjacent in memory.
That decides exactly which storages autograd keeps, and the ``bmm`` sizes give the FLOPs
``torch.utils.flop_counter`` counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import sympy

from ncd.ir.axes import Axis

__all__ = ["Tensor", "ITEMSIZE", "einsum", "EinsumStep", "numel", "mergeable"]

ITEMSIZE = {"float": 4, "index": 8, "bool": 1, "complex": 8}  # complex: two floats


@dataclass(frozen=True)
class Tensor:
    storage: int
    axes: tuple[Axis, ...]
    order: tuple[str, ...]
    grad: bool
    dtype: str = "float"
    #: False for overlapping windows (``unfold``): no two dims merge without a copy
    dense: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def numel(self) -> sympy.Expr:
        return numel(self.axes)

    def relabel(self, axes: Sequence[Axis]) -> Tensor:
        """The same storage seen with another logical order (a view: movedim, transpose)."""
        names = {a.name for a in axes}
        return replace(self, axes=tuple(axes), order=tuple(n for n in self.order if n in names))

    @property
    def contiguous(self) -> bool:
        return self.dense and mergeable(self.order, [self.names])

    def merges(self, groups: Sequence[Sequence[str]]) -> bool:
        """Whether ``reshape`` into these groups of dims is a view."""
        if not self.dense:
            return all(len([n for n in g if n in self.names]) <= 1 for g in groups)
        return mergeable(self.order, groups)


def numel(axes: Sequence[Axis]) -> sympy.Expr:
    """The number of elements of a tensor with these axes (a product of their sizes)."""
    return _product(tuple(a.size for a in axes))


@lru_cache(maxsize=4096)
def _product(sizes: tuple[sympy.Expr, ...]) -> sympy.Expr:
    """The product of ``sizes`` (memoised: a diagram has few distinct shapes, sympy products are slow)."""
    result = sympy.Integer(1)
    for s in sizes:
        result = result * s
    return result


def mergeable(order: Sequence[str], groups: Sequence[Sequence[str]]) -> bool:
    """Whether ``reshape`` to these groups of dims is a view of a dense tensor stored in ``order``.

    Each group's present dims must be adjacent in memory and in the same order.
    """
    position = {n: i for i, n in enumerate(order)}
    for group in groups:
        present = [position[n] for n in group if n in position]
        if present != list(range(present[0], present[0] + len(present))) if present else False:
            return False
    return True


@dataclass
class EinsumStep:
    """One ``bmm`` (or ``mul``) of the contraction: its FLOPs and the operands it saves."""

    flops: sympy.Expr
    saved: list[Tensor]


NewStorage = Callable[[tuple[Axis, ...], tuple[str, ...], bool], Tensor]


def einsum(
    operands: Sequence[Tensor],
    out_names: Sequence[str],
    sizes: dict[str, sympy.Expr],
    new: NewStorage,
) -> tuple[Tensor, list[EinsumStep]]:
    """``torch.einsum`` of one or two abstract tensors; returns the result and its ``bmm`` (or ``mul``) steps.

    ``new(axes, order, grad)`` allocates a tensor with a fresh storage.
    """
    if len(operands) > 2:
        raise ValueError(f"einsum of {len(operands)} operands: the program contracts them one pair at a time")
    contracted: list[str] = []
    for op in operands:
        for n in op.names:
            if n not in out_names and n not in contracted:
                contracted.append(n)
    aligned = list(out_names) + contracted
    axis_of = {a.name: a for op in operands for a in op.axes}
    counts = {n: sum(1 for op in operands if n in op.names and not _one(sizes[n])) for n in aligned}
    ops: list[Tensor] = [op for op in operands]
    steps: list[EinsumStep] = []
    if len(ops) == 1:
        op = ops[0]
        drop = [n for n in op.names if n not in out_names]
        if not drop:
            return op.relabel([axis_of[n] for n in out_names]), steps
        result = new(tuple(axis_of[n] for n in out_names), tuple(n for n in op.order if n in out_names), op.grad)
        return result, steps
    for _ in range(len(ops) - 1):
        a, b = ops[0], ops[1]
        del ops[1], ops[0]
        sum_dims: list[str] = []
        a_sum: list[str] = []
        b_sum: list[str] = []
        for n in contracted:
            in_a, in_b = _has(a, n, sizes), _has(b, n, sizes)
            if in_a and in_b:
                counts[n] -= 1
                if counts[n] == 1:
                    sum_dims.append(n)
                    counts[n] = 0
            elif counts[n] == 1:
                if in_a:
                    a_sum.append(n)
                    counts[n] = 0
                elif in_b:
                    b_sum.append(n)
                    counts[n] = 0
        if a_sum:
            a = _reduce(a, a_sum, new)
        if b_sum:
            b = _reduce(b, b_sum, new)
        result, step = _pair(a, b, sum_dims, aligned, sizes, axis_of, new)
        steps.append(step)
        ops.insert(0, result)
    result = ops[0]
    return result.relabel([axis_of[n] for n in out_names]) if set(result.names) >= set(out_names) else result, steps


def _one(value: sympy.Expr) -> bool:
    return bool(value == 1)


def _has(t: Tensor, name: str, sizes: dict[str, sympy.Expr]) -> bool:
    return name in t.names and not _one(sizes[name])


def _reduce(t: Tensor, names: list[str], new: NewStorage) -> Tensor:
    keep = tuple(a for a in t.axes if a.name not in names)
    return new(keep, tuple(n for n in t.order if n not in names), t.grad)


def _pair(
    a: Tensor, b: Tensor, sum_dims: list[str], aligned: list[str], sizes: dict[str, sympy.Expr],
    axis_of: dict[str, Axis], new: NewStorage,
) -> tuple[Tensor, EinsumStep]:
    grad = a.grad or b.grad
    if not sum_dims:  # at::mul: saves each operand as it is (for the other's gradient)
        names = [n for n in aligned if n in a.names or n in b.names]
        out = new(tuple(axis_of[n] for n in names), tuple(n for n in a.order) + tuple(n for n in b.order if n not in a.names),
                  grad)
        saved = ([a] if b.grad else []) + ([b] if a.grad else [])
        return out, EinsumStep(sympy.Integer(0), saved)
    lro, lo, ro = [], [], []
    for n in aligned:
        if n in sum_dims:
            continue
        sl, sr = _has(a, n, sizes), _has(b, n, sizes)
        if sl and sr:
            lro.append(n)
        elif sl:
            lo.append(n)
        elif sr:
            ro.append(n)
    left = a if a.merges([lro, lo, sum_dims]) else new(a.axes, tuple(lro + lo + sum_dims), a.grad)
    right = b if b.merges([lro, sum_dims, ro]) else new(b.axes, tuple(lro + sum_dims + ro), b.grad)
    flops = sympy.Integer(2)
    for n in lro + lo + sum_dims + ro:
        flops = flops * sizes[n]
    out_names = [n for n in aligned if n in lro or n in lo or n in ro]
    out = new(tuple(axis_of[n] for n in out_names), tuple(lro + lo + ro), grad)
    saved = ([left] if b.grad else []) + ([right] if a.grad else [])
    return out, EinsumStep(flops, saved)
