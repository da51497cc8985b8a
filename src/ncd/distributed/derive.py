"""Collectives derived from placements: propagate each wire's placement box by box.

Every tensor carries, for each mesh axis, one of: *replicated* (every rank holds all of it),
*split* along one of its axes (each rank holds a slice), or a *partial sum* (each rank holds a
summand).  A box broadcast over a split wire simply runs on the slice (the paper's rule: a box
never sees the wires it is woven over).  Collectives appear exactly where a wire's label must
change:

* a learned linear map whose weight is split along an **output** axis (column-parallel) needs
  its input replicated, and its output is split; the input's gradient is a partial sum, reduced
  where the replicated wire began (an all-reduce, or the reduce-scatter transposing a gather);
* a map whose weight is split along an **input** axis (row-parallel), or an einsum contracting a
  split axis, gives a partial sum, reduced at once to the wire's declared placement: an
  all-reduce (replicated) or a reduce-scatter (split, e.g. the sequence under sequence
  parallelism);
* a split axis entering a box that acts on it is gathered; a change of split axis is an all-to-all.

The backward pass runs the transposes: all-gather ↔ reduce-scatter, all-to-all ↔ all-to-all.
With the batch on a data-parallel axis, parameters are sharded over it (FSDP): each FSDP unit
(the model and each repeated layer) all-gathers its parameters before its forward and again before
its backward (not the root, which keeps them), and reduce-scatters its gradients.

Sizes stay symbolic: counts and element numbers are sympy expressions (repetitions multiply).  The sub-diagrams
costed as wholes and the FSDP units' parameter collectives are :mod:`ncd.distributed.units`'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy

from ncd.distributed.mesh import Mesh, ShardingError
from ncd.distributed.resize import resize
from ncd.distributed.shard import Sharding, sharding_of
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Par, Repeat, Seq, Weave, describe, unweave
from ncd.ir.interpreter import Interpreter
from ncd.ir.rules import DISTRIBUTED
from ncd.ir.size import symbol
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.structure import RenameOp

__all__ = ["derive", "Derivation", "Collective", "Wire", "KINDS", "PARTIAL", "resize"]

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
#: a wire's state on a mesh axis when every rank holds a summand
PARTIAL = "Σ"
ONE = sympy.Integer(1)
Path = tuple[int, ...]


@dataclass(frozen=True)
class Wire:
    """One tensor in flight: its (global) axes, its state per mesh axis, and which tensor it views."""

    axes: tuple[Axis, ...]
    place: tuple[tuple[str, str], ...]  # (mesh axis, split axis name or PARTIAL); absent: replicated
    src: int
    gathered: frozenset[str] = frozenset()  # mesh axes over which it was all-gathered

    def state(self, mesh_axis: str) -> str | None:
        return dict(self.place).get(mesh_axis)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def label(self) -> str:
        """The axes with their mesh subscripts, e.g. ``t_tp m`` (``Σtp`` marks a partial sum)."""
        where = {a: m for m, a in self.place if a != PARTIAL}
        text = " ".join(f"{n}_{where[n]}" if n in where else n for n in self.names) or "()"
        partial = [m for m, a in self.place if a == PARTIAL]
        return text + (f" (Σ{','.join(partial)})" if partial else "")


@dataclass
class Collective:
    """One collective: its kind, mesh axis, pass, elements per rank, how often, where and why."""

    kind: str
    mesh_axis: str
    phase: str  # "forward" or "backward"
    numel: sympy.Expr
    count: sympy.Expr
    where: str
    wire: str
    reason: str
    path: Path = ()
    #: moves activations (scales with the samples per rank); False for FSDP's parameter traffic
    activation: bool = True

    def __str__(self) -> str:
        return (f"{self.phase} {self.kind} over {self.mesh_axis} ×{self.count}: {self.numel} elements of {self.wire}"
                f" at {self.where} ({self.reason})")


@dataclass
class BoxPlan:
    """What the propagation decided at one box: the lowering and the drawing read it."""

    path: Path
    box: Box
    node: Diagram
    inputs: list[Wire]
    outputs: list[Wire]
    arrived: list[Wire] = field(default_factory=list)  # the inputs as they came, before any collective
    resolved: list[Wire] = field(default_factory=list)  # the outputs after partial sums are reduced
    style: dict[str, str] = field(default_factory=dict)  # mesh axis -> "colwise" / "rowwise" / "sequence"
    divisors: dict[str, int] = field(default_factory=dict)  # axis name -> ranks it is split over here


@dataclass
class Derivation:
    """The result: collectives, per-box decisions, block input wires, FSDP units and cost units."""

    sharding: Sharding
    collectives: list[Collective]
    boxes: list[BoxPlan]
    block_inputs: dict[Path, list[Wire]]
    outputs: list[Wire]
    units: list[tuple[Diagram, dict[str, int], sympy.Expr]]  # (node, axis divisors, multiplicity)
    fsdp_units: list[tuple[Path, Diagram, sympy.Expr, bool]]  # (path, block, multiplicity, is root)
    outputs_of: dict[int, list[Wire]] = field(default_factory=dict)  # by id(node), for drawing
    inputs_of: dict[int, list[Wire]] = field(default_factory=dict)
    path_of: dict[int, Path] = field(default_factory=dict)
    composites: set[int] = field(default_factory=set)

    @property
    def mesh(self) -> Mesh:
        return self.sharding.mesh

    def counts(self, phase: str = "forward") -> dict[str, sympy.Expr]:
        result = {k: sympy.Integer(0) for k in KINDS}
        for c in self.collectives:
            if c.phase == phase:
                result[c.kind] += c.count
        return result


class _Deriver(Interpreter[Wire, Path]):
    """Placements propagated in execution order (an :class:`~ncd.ir.interpreter.Interpreter` threading one wire per
    segment, in the context of the node's path of part indices); every collective recorded."""

    def __init__(self, sharding: Sharding, diagram: Diagram) -> None:
        self.sharding, self.mesh, self.placements = sharding, sharding.mesh, sharding.placements
        self.alias = _aliases(diagram)
        self.collectives: list[Collective] = []
        self.boxes: list[BoxPlan] = []
        self.block_inputs: dict[Path, list[Wire]] = {}
        self.nodes: dict[Path, dict[str, set[int]]] = {}
        self.redistributed: dict[Path, int] = {}
        self.ids = iter(range(1, 1 << 62))
        self.cache: dict[Any, tuple[int, frozenset[str]]] = {}
        self.entries: set[tuple[int, str]] = set()
        self.multiplier: sympy.Expr = ONE
        self.fsdp_units: list[tuple[Path, Diagram, sympy.Expr, bool]] = []
        self.woven: tuple[Axis, ...] = ()
        self.outputs_of: dict[int, list[Wire]] = {}  # by id(node): the wires it gives (for drawing)
        self.inputs_of: dict[int, list[Wire]] = {}  # by id(node): the wires it takes
        self.path_of: dict[int, Path] = {}
        self.composites: set[int] = set()  # ids of sequential and parallel composites (a drawing may regroup them)

    # -- placements ----------------------------------------------------------------------------
    def placed(self, name: str) -> str | None:
        """The mesh axis an axis name is declared on (directly, or through a rename of the same wire)."""
        if name in self.placements:
            return self.placements[name]
        for other in self.alias.get(name, ()):
            if other in self.placements:
                return self.placements[other]
        return None

    def declared(self, axes: Iterable[Axis]) -> dict[str, str]:
        axes = list(axes)
        result: dict[str, str] = {}
        for m in self.mesh:
            direct = [a.name for a in axes if self.placements.get(a.name) == m]
            aliased = [a.name for a in axes if self.placed(a.name) == m]
            if direct or aliased:
                result[m] = (direct or aliased)[0]
        return result

    def canon(self, name: str) -> str:
        return min({name} | set(self.alias.get(name, ())))

    def numel(self, wire: Wire, full_on: str | None = None) -> sympy.Expr:
        """Elements one rank holds (``full_on``: as if not split over that mesh axis)."""
        split = {a: m for m, a in wire.place if a != PARTIAL and m != full_on}
        total = ONE
        for axis in wire.axes:
            total *= axis.size / (self.mesh[split[axis.name]] if axis.name in split else 1)
        return total

    def fresh(self, axes: Iterable[Axis], place: Mapping[str, str]) -> Wire:
        axes = tuple(axes)
        names = {a.name for a in axes}
        axes = tuple(a for a in self.woven if a.name not in names) + axes
        return Wire(axes, tuple(sorted(place.items())), next(self.ids))

    # -- recording -----------------------------------------------------------------------------
    def record(self, kind: str, m: str, phase: str, numel: sympy.Expr, where: Diagram, wire: Wire, reason: str,
               path: Path, activation: bool = True) -> None:
        self.collectives.append(Collective(kind, m, phase, sympy.simplify(numel), self.multiplier,
                                           _short(where), wire.label(), reason, path, activation))
        for k in range(len(path) + 1):
            self.redistributed[path[:k]] = self.redistributed.get(path[:k], 0) + 1

    def redistribute(self, wire: Wire, target: Mapping[str, str | None], where: Diagram, path: Path, why: str) -> Wire:
        """``wire`` brought to ``target`` (per mesh axis: split axis, None = replicated), with the collectives it takes."""
        current = dict(wire.place)
        changes = {m: t for m, t in target.items() if current.get(m) != t}
        if not changes:
            return wire
        key = (wire.src, tuple(sorted((m, None if t is None else self.canon(t)) for m, t in changes.items())))
        new_place = {m: s for m, s in current.items() if m not in changes}
        new_place.update({m: t for m, t in changes.items() if t is not None})
        if key in self.cache:  # the same tensor was already brought there: reuse it
            src, cached = self.cache[key]
            return Wire(wire.axes, tuple(sorted(new_place.items())), src, cached)
        gathered: set[str] = set(wire.gathered)
        for m, t in changes.items():
            s = current.get(m)
            full = self.numel(wire, full_on=m)
            if s == PARTIAL and t is None:
                self.record("all_reduce", m, "forward", full, where, wire, f"partial sums {why}", path)
            elif s == PARTIAL:
                self.record("reduce_scatter", m, "forward", full, where, wire, f"partial sums split along {t} {why}", path)
                self.record("all_gather", m, "backward", full, where, wire, f"transpose of the reduce-scatter along {t}", path)
            elif s is None:  # replicated -> split: each rank keeps its slice, no traffic; the gradient is gathered
                self.record("all_gather", m, "backward", full, where, wire, f"gradient of the slice along {t}", path)
            elif t is None:
                self.record("all_gather", m, "forward", full, where, wire, f"{s} gathered {why}", path)
                gathered.add(m)
            else:
                self.record("all_to_all", m, "forward", self.numel(wire), where, wire, f"split moves from {s} to {t} {why}", path)
                self.record("all_to_all", m, "backward", self.numel(wire), where, wire, f"transpose of {s} -> {t}", path)
        src = next(self.ids)
        self.cache[key] = (src, frozenset(gathered))
        return Wire(wire.axes, tuple(sorted(new_place.items())), src, frozenset(gathered))

    def entry(self, wire: Wire, m: str, where: Diagram, path: Path) -> None:
        """A replicated wire feeds a computation split over ``m``: its gradient comes back as partial sums."""
        if (wire.src, m) in self.entries:
            return
        self.entries.add((wire.src, m))
        if m in wire.gathered:
            self.record("reduce_scatter", m, "backward", self.numel(wire), where, wire,
                        "gradient partial sums, transpose of the gather", path)
        else:
            self.record("all_reduce", m, "backward", self.numel(wire), where, wire,
                        "gradient partial sums of a replicated input", path)

    def resolve(self, wires: list[Wire], where: Diagram, path: Path, why: str) -> list[Wire]:
        """Partial sums reduced at once to each wire's declared placement."""
        out = []
        for w in wires:
            partial = [m for m, s in w.place if s == PARTIAL]
            if partial:
                declared = self.declared(w.axes)
                w = self.redistribute(w, {m: declared.get(m) for m in partial}, where, path, why)
            out.append(w)
        return out

    # -- the walk (the override points of ncd.ir.interpreter.Interpreter; the context is the node's path) --------
    def run(self, node: Diagram, wires: list[Wire], path: Path) -> list[Wire]:
        self.inputs_of[id(node)] = list(wires)
        self.path_of[id(node)] = path
        if isinstance(node, (Seq, Par)):
            self.composites.add(id(node))
        out = super().run(node, wires, path)
        self.outputs_of[id(node)] = out
        return out

    def part(self, k: int, path: Path) -> Path:
        return path + (k,)

    def block(self, node: Block, wires: list[Wire], path: Path) -> list[Wire]:
        self.block_inputs[path] = list(wires)
        return self.run(node.body, wires, path + (0,))

    def in_place(self, box: Box, woven: tuple[Weave, ...]) -> bool:
        return True  # a woven box is sharded as one: the woven axes pass through it

    def box(self, box: Box, wires: list[Wire], woven: tuple[Weave, ...], path: Path) -> list[Wire]:
        return self.plan(woven[0] if woven else box, box, wires, path)

    def weave(self, core: Diagram, weaves: tuple[Weave, ...], wires: list[Wire], cod: Type, path: Path) -> list[Wire]:
        """A woven composite: its inside runs once per slice of the woven axes, which pass through untouched."""
        saved = self.woven
        self.woven = saved + tuple(w.axis for w in weaves if w.axis.name not in {a.name for a in saved})
        try:
            out = self.run(core, wires, path + (0,) * len(weaves))
        finally:
            self.woven = saved
        return [Wire(tuple(seg.axes), w.place, w.src, w.gathered) for w, seg in zip(out, cod)]

    def axes_of(self, seg: Segment) -> tuple[Axis, ...]:
        """A fresh output's axes: the segment's, after the axes a surrounding composite is woven over."""
        return tuple(a for a in self.woven if a.name not in seg.names) + tuple(seg.axes)

    def repeat(self, node: Repeat, wires: list[Wire], path: Path) -> list[Wire]:
        if symbol(node.var) in node.body.free_symbols:
            if node.start.free_symbols or node.stop.free_symbols:
                raise ShardingError(f"repeat {node.name or node.var!r}: its iterations differ in size and their number"
                                    f" ({node.stop - node.start}) is symbolic; bind it to shard")
            for i in range(int(node.start), int(node.stop)):
                wires = self.run(node.iteration(i), wires, path + (i,))
            return wires
        saved = self.multiplier
        self.multiplier = saved * (node.stop - node.start)
        try:
            if isinstance(node.body, Block):
                self.fsdp_units.append((path + (0,), node.body, self.multiplier, False))
            out = self.run(node.body, wires, path + (0,))
            back = {m: None for m in self.mesh}
            for w_in, w_out in zip(wires, out):
                target = {m: dict(w_in.place).get(m) for m in back}
                out[out.index(w_out)] = self.redistribute(w_out, target, node, path, "to feed the next iteration")
            return out
        finally:
            self.multiplier = saved

    def plan(self, node: Diagram, core: Box, wires: list[Wire], path: Path) -> list[Wire]:
        """A box ``core`` (``node``: it with its weaves): the box's rule of :data:`ncd.ir.rules.DISTRIBUTED` (its own,
        or its kind's: :meth:`generic`)."""
        arrived, wires, outs, style = DISTRIBUTED.apply(core.prim, self, node, core, wires, path)
        plan = BoxPlan(path, core, node, list(wires), list(outs), arrived, [], style)
        over: dict[str, set[str]] = {}
        for w in list(wires) + list(outs):
            for m, s in w.place:
                if s != PARTIAL:
                    over.setdefault(s, set()).add(m)
        for name, axes in over.items():
            plan.divisors[name] = 1
            for m in axes:
                plan.divisors[name] *= self.mesh[m]
        self.boxes.append(plan)
        for k in range(len(path) + 1):
            seen = self.nodes.setdefault(path[:k], {})
            for name, d in plan.divisors.items():
                seen.setdefault(name, set()).add(d)
            for w in list(wires) + list(outs):
                for a in w.names:
                    if a not in plan.divisors:
                        seen.setdefault(a, set()).add(1)
        plan.resolved = self.resolve(outs, node, path, f"after {core.text()}")
        return plan.resolved

    def add(self, node: Diagram, wires: list[Wire], path: Path) -> Wire:
        places = {w.place for w in wires}
        if len(places) == 1:
            return self.fresh(node.cod[0].axes, dict(wires[0].place))
        declared = self.declared(node.cod[0].axes)
        target = {m: declared.get(m) for m in self.mesh}
        wires = [self.redistribute(w, target, node, path, "to add tensors placed alike") for w in wires]
        return self.fresh(node.cod[0].axes, {m: t for m, t in target.items() if t is not None})

    def linear(self, node: Diagram, prim: LinearOp, wires: list[Wire], path: Path
               ) -> tuple[list[Wire], list[Wire], dict[str, str]]:
        w = wires[0]
        dom, cod = set(prim.dom_axes.names), set(prim.cod_axes.names)
        target: dict[str, str | None] = {}
        out: dict[str, str] = {}
        style: dict[str, str] = {}
        for m in self.mesh:
            split = [a for a in prim.cod_axes.names + prim.dom_axes.names if self.placements.get(a) == m]
            s = w.state(m)
            if split and split[0] in cod:
                target[m], out[m], style[m] = None, split[0], "colwise"
            elif split:
                target[m], out[m], style[m] = split[0], PARTIAL, "rowwise"
            elif s is not None and s in dom:
                target[m] = None  # a split input axis contracted with a whole weight: gather it first
            elif s is not None:
                out[m] = s  # split along a woven axis: runs on the slice
        w = self.redistribute(w, target, node, path, f"for {_short(node)}")
        for m, kind in style.items():
            if kind == "colwise":
                self.entry(w, m, node, path)
        return [w], [self.fresh(node.cod[0].axes, out)], style

    def einsum(self, node: Diagram, prim: EinsumOp, wires: list[Wire], path: Path) -> tuple[list[Wire], list[Wire]]:
        out_names = set(node.cod[0].names) | {a.name for a in self.woven}
        target_per_wire: list[dict[str, str | None]] = [{} for _ in wires]
        out: dict[str, str] = {}
        for m in self.mesh:
            split = [w.state(m) for w in wires if w.state(m) is not None]
            if not split:
                continue
            a = split[0]
            for j, w in enumerate(wires):
                target_per_wire[j][m] = a if a in w.names else None
            out[m] = a if a in out_names else PARTIAL
        wires = [self.redistribute(w, t, node, path, f"for {_short(node)}") for w, t in zip(wires, target_per_wire)]
        return wires, [self.fresh(node.cod[0].axes, out)]

    def generic(self, node: Diagram, core: Box, wires: list[Wire], path: Path) -> tuple[list[Wire], list[Wire]]:
        """Any other box: it acts on its own axes (gathered if split) and is broadcast over the woven ones."""
        own = {a.name for seg in core.dom for a in seg} | {a.name for seg in core.cod for a in seg}
        out: dict[str, str] = {}
        fixed = []
        for w in wires:
            target = {m: None for m, s in w.place if s in own}
            w = self.redistribute(w, target, node, path, f"because {core.text()} acts on it")
            for m, s in w.place:
                out.setdefault(m, s)
            fixed.append(w)
        fixed = [self.redistribute(w, {m: (s if s in w.names else None) for m, s in out.items()}, node, path,
                                   "to match the other inputs") for w in fixed]
        outs = []
        for seg in node.cod:
            names = {a.name for a in self.axes_of(seg)}
            outs.append(self.fresh(seg.axes, {m: s for m, s in out.items() if s in names}))
        return fixed, outs


def _short(node: Diagram) -> str:
    """A box's label (``L₊^O``), a block's or repeat's name, for the collective listings."""
    core, _ = unweave(node)
    if isinstance(core, Box):
        return core.text()
    if isinstance(core, Block):
        return f"block {core.name}"
    if isinstance(core, Repeat):
        return f"repeat {core.name or core.var}"
    return describe(core)


def _aliases(diagram: Diagram) -> dict[str, set[str]]:
    """Axis names one tensor carries under ``Rename`` (self-attention's ``t``, ``y``, ``x``)."""
    groups: dict[str, set[str]] = {}
    for node in diagram.walk():
        prim = getattr(getattr(node, "node", node), "prim", None)
        if isinstance(prim, RenameOp):
            for old, new in zip(prim.segment.names, prim.names):
                merged = groups.get(old, {old}) | groups.get(new, {new})
                for name in merged:
                    groups[name] = merged
    return {k: v - {k} for k, v in groups.items()}


def derive(sharded: Diagram) -> Derivation:
    """Propagate the placements of a diagram returned by ``ncd.shard`` and list every collective."""
    sharding = sharding_of(sharded)
    if sharding is None:
        raise ShardingError(f"derive: {describe(sharded)} is not sharded; use ncd.shard(diagram, mesh, placements)")
    d = _Deriver(sharding, sharded)
    inputs = [d.fresh(seg.axes, d.declared(seg.axes)) for seg in sharded.dom]
    from ncd.distributed.units import _cost_units, _fsdp  # (units imports this module: here, not at the top)

    d.fsdp_units.append(((), sharded, ONE, True))
    outputs = d.run(sharded, inputs, ())
    units: list[tuple[Diagram, dict[str, int], sympy.Expr]] = []
    _cost_units(d, sharded, (), ONE, units)
    if not sharding.data_axes:
        d.fsdp_units = []
    else:
        _fsdp(d, sharding)
    return Derivation(sharding, d.collectives, d.boxes, d.block_inputs, outputs, units, d.fsdp_units, d.outputs_of,
                      d.inputs_of, d.path_of, d.composites)
