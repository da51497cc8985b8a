"""Per-rank costs of a sharded diagram: FLOPs, bytes held, collectives, and time under an α–β link model.

``ncd.cost(sharded, **sizes)`` returns the usual report (whole-model totals) with two additions:
``.collectives`` (collective kind -> forward count per rank) and ``.per_rank`` (a
:class:`ShardedCost`).  Element counts per collective follow one convention, the one PyTorch's
collectives take as their buffer per rank: an all-reduce moves its tensor, an all-gather its
gathered output, a reduce-scatter its unreduced input, an all-to-all its input.

Time per collective on ``p`` ranks of a ring with latency ``α`` and bandwidth ``B`` for ``n`` bytes:
all-reduce ``2(p-1)α + 2(p-1)/p · n/B``; all-gather, reduce-scatter and all-to-all
``(p-1)α + (p-1)/p · n/B``.

>>> import ncd
>>> mlp = ncd.Identity.of("~t m") >> ncd.Linear("m -> f") >> ncd.ReLU() >> ncd.Linear("f -> m")
>>> report = ncd.cost(ncd.shard(mlp, ncd.Mesh(tp=2), {"f": "tp"}), t=4, m=8, f=16)
>>> report.collectives["all_reduce"], report.per_rank.collective_bytes()["all_reduce"]
(1, 128)
>>> report.per_rank.params, report.params
(128, 256)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sympy

from ncd.distributed.derive import KINDS, Collective, Derivation, derive
from ncd.distributed.mesh import Mesh, ShardingError
from ncd.distributed.shard import BATCH, SHARDING_KEYS, axis_names, sharding_of
from ncd.ir.diagram import Block

__all__ = ["Link", "TwoLevel", "NVLINK", "INFINIBAND", "ShardedCost", "attach", "collective_time"]


@dataclass(frozen=True)
class Link:
    """A link: latency ``alpha`` (seconds per message step) and ``bandwidth`` (bytes per second)."""

    name: str
    alpha: float
    bandwidth: float


#: NVLink 4 within an H100 node: ~3 µs per step, 450 GB/s per direction per GPU
NVLINK = Link("NVLink", 3e-6, 450e9)
#: InfiniBand NDR between nodes: ~5 µs per step, 400 Gb/s = 50 GB/s per GPU
INFINIBAND = Link("InfiniBand", 5e-6, 50e9)


@dataclass(frozen=True)
class TwoLevel:
    """Intra-node links for mesh axes whose ranks share a node, inter-node links for the others.

    Ranks are numbered row-major over the mesh (the last axis varies fastest); an axis stays in
    a node when its ranks lie within ``ranks_per_node`` consecutive ranks.
    """

    intra: Link = NVLINK
    inter: Link = INFINIBAND
    ranks_per_node: int = 8

    def link(self, mesh: Mesh, axis: str) -> Link:
        names = list(mesh)
        stride = 1
        for later in names[names.index(axis) + 1:]:
            stride *= mesh[later]
        return self.intra if stride * mesh[axis] <= self.ranks_per_node else self.inter


def collective_time(kind: str, ranks: int, nbytes: float, link: Link) -> float:
    """Seconds for one ring collective of ``nbytes`` (see the module doc)."""
    if ranks <= 1:
        return 0.0
    steps = 2 * (ranks - 1) if kind == "all_reduce" else ranks - 1
    return steps * link.alpha + steps / ranks * nbytes / link.bandwidth


class ShardedCost:
    """What one rank computes, holds and communicates (numbers once sizes are bound, else formulas)."""

    def __init__(self, report: Any, derivation: Derivation) -> None:
        self.report, self.derivation = report, derivation
        self.itemsize = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}[report.dtype]
        #: samples per rank: the leading batch ``b`` (when it is not a wire of the diagram) over the data-parallel ranks
        self.batch: sympy.Expr = sympy.Integer(1)
        if BATCH in report.sizes and BATCH not in axis_names(report.diagram):
            self.batch = sympy.Integer(report.sizes[BATCH])
            for m in derivation.sharding.data_axes:
                self.batch = self.batch / derivation.mesh[m]
        formulas = _per_rank(report, derivation)
        self.formulas = formulas.map(lambda e: e * self.batch)
        self.formulas.params = formulas.params

    @property
    def mesh(self) -> Mesh:
        return self.derivation.mesh

    def _value(self, expr: sympy.Expr) -> Any:
        return self.report.value(sympy.sympify(expr))

    def __getattr__(self, name: str) -> Any:
        if name in ("forward_flops", "backward_flops", "forward_macs", "backward_macs", "activation_bytes"):
            return self._value(getattr(self.__dict__["formulas"], name))
        raise AttributeError(name)

    @property
    def params(self) -> Any:
        """Parameter elements held per rank (tensor-parallel slices, and FSDP shards over data-parallel axes)."""
        total = self.formulas.params
        for m in self.derivation.sharding.data_axes:
            total = total / self.mesh[m]
        return self._value(total)

    @property
    def param_bytes(self) -> Any:
        return self._value(sympy.sympify(self.params) * self.itemsize) if not isinstance(self.params, int) else \
            self.params * self.itemsize

    @property
    def collectives(self) -> list[Collective]:
        return list(self.derivation.collectives)

    def counts(self, phase: str = "forward") -> dict[str, Any]:
        return {k: self._value(v) for k, v in self.derivation.counts(phase).items()}

    def collective_bytes(self, phase: str = "forward") -> dict[str, Any]:
        """Bytes per rank per collective kind (count × buffer), in the convention of the module doc."""
        result: dict[str, sympy.Expr] = {k: sympy.Integer(0) for k in KINDS}
        for c in self.derivation.collectives:
            if c.phase == phase:
                result[c.kind] += c.count * c.numel * self.itemsize * (self.batch if c.activation else 1)
        return {k: self._value(v) for k, v in result.items()}

    def time(self, link: Link | TwoLevel = NVLINK, phase: str | None = None) -> float:
        """Seconds spent in collectives per step (forward, backward or both) under the α–β model."""
        total = 0.0
        for c in self.derivation.collectives:
            if phase is not None and c.phase != phase:
                continue
            chosen = link.link(self.mesh, c.mesh_axis) if isinstance(link, TwoLevel) else link
            count, numel = self._value(c.count), self._value(c.numel * (self.batch if c.activation else 1))
            if isinstance(count, sympy.Basic) or isinstance(numel, sympy.Basic):
                raise ShardingError(f"time: bind every size first ({c.where} moves {c.numel} elements)")
            total += int(count) * collective_time(c.kind, self.mesh[c.mesh_axis], int(numel) * self.itemsize, chosen)
        return total

    def table(self) -> Any:
        """The per-rank table ``ncd shard`` prints (a ``rich`` table)."""
        from ncd.distributed.table import per_rank_table

        return per_rank_table(self)


def _per_rank(report: Any, derivation: Derivation) -> Any:
    """Per-rank metrics: every region with one split per axis and no collective inside, costed at its local sizes.

    FLOPs and parameters add up region by region.  Activation bytes are the whole model's (each saved
    tensor once) less what each region saves less per rank, since a tensor saved by two regions
    (one input feeding both) must not count twice.
    """
    from ncd.analysis.cost import Metrics, cost
    from ncd.distributed.derive import resize

    total = Metrics()
    saved = sympy.Integer(0)
    for node, divisors, mult in derivation.units:
        unit = resize(node, divisors)
        if isinstance(unit, Block) and sharding_of(unit) is not None:  # the whole model: cost it unsharded
            unit = Block(unit.body, unit.name, tuple((k, v) for k, v in unit.meta if k not in SHARDING_KEYS))
        local = cost(unit, dtype=report.dtype, training=_training(report)).formulas
        total += local.map(lambda e, m=mult: e * m)
        if divisors:
            whole = cost(_unsharded(node), dtype=report.dtype, training=_training(report)).formulas
            saved += mult * (whole.activation_bytes - local.activation_bytes)
    total.activation_bytes = report.formulas.activation_bytes - saved
    return total.map(sympy.expand)


def _unsharded(node: Any) -> Any:
    if isinstance(node, Block) and sharding_of(node) is not None:
        return Block(node.body, node.name, tuple((k, v) for k, v in node.meta if k not in SHARDING_KEYS))
    return node


def _training(report: Any) -> bool:
    return bool(getattr(report, "training", True))


def attach(report: Any) -> Any:
    """The hook ``ncd.cost`` calls: a sharded diagram's report gains ``collectives`` and ``per_rank``."""
    sharding = sharding_of(report.diagram)
    if sharding is None:
        report.collectives = {k: 0 for k in KINDS}
        report.per_rank = None
        return report
    _check_sizes(report, sharding)
    derivation = derive(report.diagram)
    report.per_rank = ShardedCost(report, derivation)
    report.collectives = report.per_rank.counts("forward")
    return report


def _check_sizes(report: Any, sharding: Any) -> None:
    from ncd.ir.diagram import Box
    from ncd.ir.size import evaluate

    sizes: Mapping[str, int] = report.sizes
    for box in report.diagram.boxes():
        for seg in list(box.dom) + list(box.cod):
            for axis in seg:
                m = sharding.placements.get(axis.name)
                if m is None or not isinstance(box, Box):
                    continue
                try:
                    value = evaluate(axis.size, sizes)
                except Exception:
                    continue
                if value % sharding.mesh[m]:
                    raise ShardingError(f"axis {axis.name} of size {value} at {box.text()} is not divisible by mesh axis"
                                        f" {m}={sharding.mesh[m]}")
