"""The units of a derivation (:func:`ncd.distributed.derive.derive`): the largest sub-diagrams with one split per axis
and no collective inside, each costed as a whole (:func:`_cost_units`), and FSDP's units (:func:`_fsdp`): each gathers
its parameters before its forward (and again before its backward, but the root) and reduce-scatters its gradients,
counted per rank (:func:`param_numel`: weights split along their placed axes).
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy

from ncd.distributed.derive import Path, Wire, _Deriver
from ncd.distributed.resize import resize
from ncd.distributed.shard import Sharding
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box, Diagram, Identity, Repeat, Weave
from ncd.ir.interpreter import Fold
from ncd.ir.size import symbol

__all__ = ["param_numel"]


def _cost_units(d: _Deriver, node: Diagram, path: Path, mult: sympy.Expr,
                units: list[tuple[Diagram, dict[str, int], sympy.Expr]]) -> None:
    """Largest sub-diagrams with one split per axis and no collective inside: each is costed as a whole."""
    found = _CostUnits(d, path, mult)
    found.fold(node)
    units.extend(found.units)


class _CostUnits(Fold[None]):
    """:func:`_cost_units` as a :class:`~ncd.ir.interpreter.Fold` that stops at uniform nodes (its paths are the
    derivation's: a part's index, a block's or a repetition's body 0, an iteration its index)."""

    def __init__(self, d: _Deriver, path: Path, mult: sympy.Expr) -> None:
        self.d, self.path, self.mult = d, path, mult
        self.units: list[tuple[Diagram, dict[str, int], sympy.Expr]] = []

    def fold(self, node: Diagram) -> None:
        seen = self.d.nodes.get(self.path, {})
        if isinstance(node, Identity):
            return
        if all(len(v) == 1 for v in seen.values()) and not self.d.redistributed.get(self.path) \
                and not isinstance(node, Repeat):
            self.units.append((node, {a: next(iter(v)) for a, v in seen.items() if next(iter(v)) > 1}, self.mult))
            return
        super().fold(node)

    def _at(self, path: Path, mult: sympy.Expr, node: Diagram) -> None:
        saved = self.path, self.mult
        self.path, self.mult = path, mult
        try:
            self.fold(node)
        finally:
            self.path, self.mult = saved

    def part(self, node: Diagram, k: int, part: Diagram) -> None:
        self._at(self.path + (k,), self.mult, part)

    def then(self, first: None, second: None) -> None:
        return None

    beside = then

    def box(self, box: Diagram) -> None:  # a box (or a woven composite) with collectives at its inputs: it is uniform
        seen = self.d.nodes.get(self.path, {})
        self.units.append((box, {a: next(iter(v)) for a, v in seen.items() if max(v) > 1 and len(v) == 1}, self.mult))

    def weave(self, node: Weave) -> None:
        self.box(node)

    def repeat(self, node: Repeat) -> None:
        if symbol(node.var) in node.body.free_symbols:
            for i in range(int(node.start), int(node.stop)):
                self._at(self.path + (i,), self.mult, node.iteration(i))
        else:
            self._at(self.path + (0,), self.mult * (node.stop - node.start), node.body)


def _fsdp(d: _Deriver, sharding: Sharding) -> None:
    """FSDP units: all-gather parameters forward (and backward, except the root), reduce-scatter gradients."""
    data = [m for m in sharding.data_axes]
    for path, block, mult, root in d.fsdp_units:
        numel = _unit_params(d, path, block)
        if numel == 0:
            continue
        for m in data:
            saved = d.multiplier
            d.multiplier = mult
            try:
                wire = Wire((Axis("params", numel),), (), 0)
                d.record("all_gather", m, "forward", numel, block, wire, "FSDP gathers the unit's parameters", path, False)
                if not root:
                    d.record("all_gather", m, "backward", numel, block, wire, "FSDP gathers them again for backward", path, False)
                d.record("reduce_scatter", m, "backward", numel, block, wire, "FSDP reduce-scatters the gradients", path, False)
            finally:
                d.multiplier = saved


def _unit_params(d: _Deriver, path: Path, block: Diagram) -> sympy.Expr:
    """Parameter elements per rank (tensor-parallel slices) of the unit, nested units excluded."""
    nested = [p for p, _, _, _ in d.fsdp_units if p != path and p[: len(path)] == path]
    total: sympy.Expr = sympy.Integer(0)
    for plan in d.boxes:
        if plan.path[: len(path)] != path or any(plan.path[: len(p)] == p for p in nested):
            continue
        total += param_numel(plan.box, plan.divisors)
    return sympy.simplify(total)


def param_numel(box: Box, divisors: Mapping[str, int]) -> sympy.Expr:
    """Elements of a box's parameters held per rank (weights split along their placed axes)."""
    total: sympy.Expr = sympy.Integer(0)
    for shape in resize(box, divisors).prim.params().values():
        n: sympy.Expr = sympy.Integer(1)
        for s in shape:
            n *= s
        total += n
    return total

