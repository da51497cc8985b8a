"""Costs for the viewer's records: each distinct part costed once by :func:`ncd.cost`, then composed.

A page shows the costs of every drawn box and block, and a model's blocks contain one
another: costing each block from scratch walks the whole model for the top block, again
for each layer, and so on — seconds for 48 layers.  Here a block is composed from its
parts, each distinct part costed once (the 48 equal layers of a chain are one part):

* a sequence is cut before and after each block (broadcast or not) or repetition (runs of other parts stay
  together, so patterns such as fused attention are costed whole); its cost is the sum of
  its pieces minus what each adjacent pair counts twice when costed apart (an activation
  both save, measured by costing the pair together);
* a repetition whose body does not depend on its variable is ``n`` bodies minus ``n - 1``
  overlaps of a body with the next; a block is its body;
* everything else (a box, a broadcast, a parallel composition, a run of boxes) — and any
  part with nothing repeated inside, where one walk is as fast as any split — goes to
  ``ncd.cost`` as it is.

Totals equal ``ncd.cost`` of the whole, checked over the gallery and traced models in
``tests/test_viewer.py``.

>>> import ncd
>>> net = (ncd.Linear("m -> n") >> ncd.ReLU()).block("A") >> (ncd.Linear("n -> m") >> ncd.ReLU()).block("B")
>>> mine, whole = Costs({"m": 4, "n": 3}).of(net), ncd.cost(net, m=4, n=3)
>>> (mine.forward_flops, mine.activation_bytes) == (whole.forward_flops, whole.activation_bytes)
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sympy

from ncd.errors import LimitError, NCDError
from ncd.ir.diagram import Block, Diagram, Identity, Repeat, Seq, Weave, unweave
from ncd.ir.interpreter import Fold
from ncd.ir.rules import AnalysisError
from ncd.ir.size import symbol

__all__ = ["Costs", "operators_defined"]


class Costs:
    """Memoised metrics (``ncd.analysis.cost.Metrics``) of diagram parts under fixed size bindings."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self._cost = _cost_function()
        self._by_id: dict[int, tuple[Diagram, Any]] = {}  # keeps each part alive while its id is a key
        self._by_shape: dict[tuple[str, str, str], list[tuple[Diagram, Any]]] = {}
        self._leaves: dict[int, tuple[Diagram, Any]] = {}
        self._pairs: dict[tuple[int, int], tuple[Diagram, Diagram, Any]] = {}
        self._cuts: dict[int, tuple[Diagram, list[Diagram]]] = {}
        self._worth: dict[int, tuple[Diagram, bool]] = {}
        self._symbols: dict[int, tuple[Diagram, Any]] = {}
        self._pushes: dict[int, tuple[Diagram, Diagram | None]] = {}
        self._composer, self._repeating = _Compose(self), _Repeats(self)
        self._ends = {0: _End(self, 0), -1: _End(self, -1)}

    @property
    def available(self) -> bool:
        return self._cost is not None

    def of(self, node: Diagram) -> Any:
        """The metrics of ``node`` (numbers where every size is bound, formulas otherwise), or ``None``."""
        if self._cost is None:
            return None
        hit = self._by_id.get(id(node))
        if hit is not None:
            return hit[1]
        shape = (type(node).__name__, str(node.dom), str(node.cod))
        if isinstance(node, Block):  # equal blocks (a chain of identical layers) are costed once
            for other, value in self._by_shape.get(shape, ()):
                if other == node:
                    self._by_id[id(node)] = (node, value)
                    return value
        value = self._compose(node)
        self._by_id[id(node)] = (node, value)
        if isinstance(node, Block):
            self._by_shape.setdefault(shape, []).append((node, value))
        return value

    def _compose(self, node: Diagram) -> Any:
        return self._composer.fold(node)

    def _overlap(self, first: Diagram, second: Diagram) -> Any:
        """What ``first`` and then ``second`` count twice when costed apart (at their meeting point)."""
        a, b = self._end(first, -1), self._end(second, 0)
        key = (id(a), id(b))
        if key not in self._pairs:
            parts = [self._leaf(a), self._leaf(b), self._leaf(a >> b)]
            value = None if any(v is None for v in parts) else _combine(lambda x, y, z: sympy.expand(x + y - z), *parts)
            self._pairs[key] = (a, b, value)
        return self._pairs[key][2]

    def _repeats(self, node: Diagram) -> bool:
        """Whether ``node`` holds work done many times over (a bound repetition, a chain of equal blocks)."""
        return self._repeating.fold(node)

    def _pieces(self, node: Seq) -> list[Diagram]:
        hit = self._cuts.get(id(node))
        if hit is None:
            hit = self._cuts[id(node)] = (node, _pieces(node.parts))
        return hit[1]

    def _end(self, node: Diagram, side: int) -> Diagram:
        """The innermost piece of ``node`` at its start (``side`` 0) or end (-1): where it meets its neighbour."""
        return self._ends[side].fold(node)

    def _pushed(self, node: Diagram) -> Diagram | None:
        """A block or repetition broadcast over axes, as the block or repetition of its broadcast body (the same
        computation: ``b (f)ⁿ = (b f)ⁿ``), so that its repeated work is costed once; ``None`` for anything else."""
        if not isinstance(node, Weave):
            return None
        hit = self._pushes.get(id(node))
        if hit is None:
            core, weaves = unweave(node)
            pushed: Diagram | None = None
            if isinstance(core, (Block, Repeat)):
                body = core.body
                try:
                    for w in reversed(weaves):  # innermost first
                        body = dataclasses.replace(w, inner=body)
                    pushed = dataclasses.replace(core, body=body)
                except NCDError:  # the axis moves between iterations: the repetition cannot carry it
                    pushed = None
            hit = self._pushes[id(node)] = (node, pushed)
        return hit[1]

    def _free(self, node: Diagram) -> Any:
        hit = self._symbols.get(id(node))
        if hit is None:
            hit = self._symbols[id(node)] = (node, node.free_symbols)
        return hit[1]

    def _subs(self, node: Diagram) -> dict[Any, Any]:
        return {symbol(k): sympy.Integer(v) for k, v in self.sizes.items() if symbol(k) in self._free(node)}

    def _leaf(self, node: Diagram) -> Any:
        hit = self._leaves.get(id(node))
        if hit is not None:
            return hit[1]
        free = {str(s) for s in self._free(node)}
        sizes = {k: v for k, v in self.sizes.items() if k in free}
        try:
            # with every size bound, cost the bound diagram: numbers only (formulas in symbols are much slower)
            bound = bool(sizes) and free <= set(sizes)  # a bound diagram takes no size keywords (they would name nothing)
            report = self._cost(node.bind(**sizes)) if bound else self._cost(node, **sizes)
            value = report.numbers if report.numbers is not None else report.formulas
        except (AnalysisError, LimitError):  # a primitive without a cost rule, or an opaque call too large to run
            value = None  # (anything else is a bug, and raises: it used to drop the part's cost rows without a word)
        self._leaves[id(node)] = (node, value)
        return value


class _Compose(Fold[Any]):
    """The metrics of a part (:meth:`Costs._compose`): nothing repeated inside, a box, a parallel composition, a
    broadcast: ``ncd.cost`` of it whole; a block: its body's; a repetition of a fixed body: ``n`` bodies minus
    ``n - 1`` overlaps; a sequence: its pieces minus their overlaps."""

    def __init__(self, costs: Costs) -> None:
        self.costs = costs

    def fold(self, node: Diagram) -> Any:
        if not self.costs._repeats(node):  # nothing repeated inside: one walk is as fast as any split
            return self.costs._leaf(node)
        return super().fold(node)

    def identity(self, node: Identity) -> Any:
        return self.costs._leaf(node)

    box = par = identity  # type: ignore[assignment]

    def weave(self, node: Weave) -> Any:
        pushed = self.costs._pushed(node)
        return self.costs._leaf(node) if pushed is None else self.costs.of(pushed)

    def block(self, node: Block) -> Any:
        return self.costs.of(node.body)

    def repeat(self, node: Repeat) -> Any:
        costs = self.costs
        if symbol(node.var) in costs._free(node.body):
            return costs._leaf(node)
        body, twice = costs.of(node.body), costs._overlap(node.body, node.body)
        if body is None or twice is None:
            return None
        count = sympy.sympify(node.stop - node.start).xreplace(costs._subs(node))
        return _combine(lambda b, o: sympy.expand(b * count - o * (count - 1)), body, twice)

    def seq(self, node: Seq) -> Any:
        costs = self.costs
        pieces = costs._pieces(node)
        if len(pieces) < 2:
            return costs._leaf(node)
        values = [costs.of(p) for p in pieces] + [costs._overlap(a, b) for a, b in zip(pieces, pieces[1:])]
        if any(v is None for v in values):
            return None
        n = len(pieces)
        return _combine(lambda *v: sympy.expand(sum(v[:n]) - sum(v[n:])), *values)


class _Repeats(Fold[bool]):
    """Whether a part holds work done many times over (:meth:`Costs._repeats`), memoised by node."""

    def __init__(self, costs: Costs) -> None:
        self.costs = costs

    def fold(self, node: Diagram) -> bool:
        hit = self.costs._worth.get(id(node))
        if hit is None:
            hit = self.costs._worth[id(node)] = (node, super().fold(node))
        return hit[1]

    def identity(self, node: Identity) -> bool:
        return False

    box = par = identity  # type: ignore[assignment]

    def weave(self, node: Weave) -> bool:
        pushed = self.costs._pushed(node)
        return pushed is not None and self.fold(pushed)

    def block(self, node: Block) -> bool:
        return self.fold(node.body)

    def repeat(self, node: Repeat) -> bool:
        count = sympy.sympify(node.stop - node.start).xreplace(self.costs._subs(node))
        return symbol(node.var) not in self.costs._free(node.body) and bool(count.is_number and count > 1)

    def seq(self, node: Seq) -> bool:
        return any(a == b for a, b in zip(node.parts, node.parts[1:]) if _structural(a)) or \
            any(self.fold(p) for p in node.parts if _structural(p))


class _End(Fold[Diagram]):
    """The innermost piece of a part at its start (``side`` 0) or end (-1) (:meth:`Costs._end`)."""

    def __init__(self, costs: Costs, side: int) -> None:
        self.costs, self.side = costs, side

    def identity(self, node: Identity) -> Diagram:
        return node

    box = par = identity  # type: ignore[assignment]

    def weave(self, node: Weave) -> Diagram:
        pushed = self.costs._pushed(node)
        return node if pushed is None else self.fold(pushed)

    def block(self, node: Block) -> Diagram:
        return self.fold(node.body)

    def repeat(self, node: Repeat) -> Diagram:
        return node if symbol(node.var) in self.costs._free(node.body) else self.fold(node.body)

    def seq(self, node: Seq) -> Diagram:
        pieces = self.costs._pieces(node)
        return self.fold(pieces[self.side]) if len(pieces) > 1 else node


def _structural(part: Diagram) -> bool:
    """A block, a repetition, or a block broadcast over axes: where a sequence is cut."""
    return isinstance(part, (Block, Repeat)) or (isinstance(part, Weave) and isinstance(unweave(part)[0], Block))


def _pieces(parts: Sequence[Diagram]) -> list[Diagram]:
    """A sequence cut before and after each block and repetition; other runs stay whole."""
    pieces: list[Diagram] = []
    run: list[Diagram] = []
    for part in parts:
        if _structural(part):
            if run:
                pieces.append(_join(run))
                run = []
            pieces.append(part)
        else:
            run.append(part)
    if run:
        pieces.append(_join(run))
    return pieces


def _join(run: list[Diagram]) -> Diagram:
    return run[0] if len(run) == 1 else Seq(tuple(run))


def _combine(fn: Any, *metrics: Any) -> Any:
    """A metrics record whose every field is ``fn`` of the same field of ``metrics``."""
    return type(metrics[0])(**{f.name: fn(*(getattr(m, f.name) for m in metrics)) for f in dataclasses.fields(metrics[0])})


def _cost_function() -> Any:
    try:
        from ncd.analysis.cost import cost
    except ImportError:
        return None
    return cost


def operators_defined(diagram: Diagram) -> None:
    """Define in this process the operators a traced diagram's custom ``autograd.Function`` boxes call
    (``TracedDiagram.functions``), as lowering it does: costing a part binds and runs its boxes, and a diagram read back
    in another process would otherwise lose the cost rows of every block holding one (a page differing between the
    process that traced it and any other).  One that cannot be defined here (its class not importable) leaves those
    rows absent, as an unknown primitive does."""
    functions = getattr(diagram, "functions", None)
    if not functions:
        return
    from ncd.errors import TraceError
    from ncd.trace.functions import registered

    try:
        registered(functions, getattr(diagram, "name", "the diagram"))
    except TraceError:
        pass
