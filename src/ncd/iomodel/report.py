"""``ncd.io``: transfers, memory, time and the roofline verdict of a relabelled diagram.

Counts are **totals over every axis of the diagram** (all heads, all batch entries), in
elements; bytes are elements × ``q``.  A causal mask in the diagram (sliding window included)
keeps only the FLOPs of the unmasked (query, key) pairs (about half without a window) and
removes the wholly masked (query chunk, key chunk) pairs from the transfers.  Times: a level's
transfer time is ``H_ℓ q / B_ℓ``; transfers at different levels overlap (ours: ``transfer time =
max_ℓ``; ``report.serial_time`` gives the sum); matrix and other arithmetic do not overlap
(``compute = matrix FLOPs / F + other FLOPs / F_vector``); ``time = max(compute, transfer)`` —
a ceiling that assumes latency hidden.

>>> import ncd
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> r = ncd.io(ncd.Einsum("a b, b c -> a c"), h, group={"smem": {"a": 16, "c": 8}}, a=64, b=48, c=32)
>>> r.transfers["smem"], r.memory["smem"], r.feasible["smem"]
(20480, 1280, True)
>>> r.bound
'memory'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import sympy

from ncd.analysis.expansion import check_expansion
from ncd.iomodel import costs
from ncd.iomodel.hierarchy import Hierarchy, element_bytes
from ncd.iomodel.program import Program, flatten
from ncd.iomodel.schedule import Schedule, SizeMap
from ncd.ir.checks import expect_diagram
from ncd.ir.diagram import Diagram
from ncd.ir.size import size, size_text

__all__ = ["IOReport", "io"]

Number: TypeAlias = int | float | sympy.Expr


def _num(value: sympy.Expr) -> Number:
    value = sympy.nsimplify(value) if value.is_number and not value.is_Integer else value
    if value.is_Integer:
        return int(value)
    if value.is_number:
        return float(value)
    return value


@dataclass
class IOReport:
    """IO costs of one relabelled diagram on one hierarchy (totals, in elements; see the module doc)."""

    hierarchy: Hierarchy
    schedule: Schedule
    program: Program
    dtype: str
    q: int
    fused: bool
    transfers: dict[str, Number]
    memory: dict[str, Number]
    capacity: dict[str, int]
    feasible: dict[str, bool | None]
    matmul_flops: Number
    other_flops: Number
    compute_time: Number
    transfer_times: dict[str, Number]
    time: Number
    bound: str | None
    causal: bool
    formulas: dict[str, sympy.Expr] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    scope = "totals over every axis (all heads and batch entries); elements (bytes = elements x q)"

    @property
    def flops(self) -> Number:
        return self.matmul_flops + self.other_flops

    @property
    def serial_time(self) -> Number:
        """The roofline time if transfers at different levels did not overlap."""
        total = sum(self.transfer_times.values())
        return max(self.compute_time, total) if _is_num(total, self.compute_time) else sympy.Max(self.compute_time, total)

    def bytes(self, level: str) -> Number:
        """Bytes moved across the boundary above ``level``."""
        return self.transfers[level] * self.q

    def table(self) -> str:
        """A per-level text table (what ``ncd io`` prints)."""
        lines = [f"{self.hierarchy.name}, {self.dtype} (q={self.q}); {self.schedule.describe()}"
                 + ("" if self.fused else " — unfused"),
                 f"{'level':<10} {'transfers (el)':>16} {'bytes':>12} {'memory (el)':>14} {'capacity':>12}"
                 f" {'fits':>5} {'time':>11}"]
        for lvl in self.hierarchy.levels:
            h, m = self.transfers[lvl], self.memory[lvl]
            t = self.transfer_times.get(lvl)
            fits = {True: "yes", False: "NO", None: "?"}[self.feasible[lvl]]
            lines.append(f"{lvl:<10} {_fmt(h):>16} {_fmt(self.bytes(lvl)):>12} {_fmt(m):>14}"
                         f" {self.capacity[lvl]:>12,} {fits:>5} {_time(t):>11}")
        lines.append(f"compute: {_fmt(self.matmul_flops)} matrix + {_fmt(self.other_flops)} other FLOPs"
                     f" = {_time(self.compute_time)}{' (causal)' if self.causal else ''}")
        lines.append(f"time {_time(self.time)}: {self.bound or '?'}-bound; {self.scope}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _is_num(*values: object) -> bool:
    return all(isinstance(v, (int, float)) for v in values)


def _fmt(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return size_text(value) if isinstance(value, sympy.Expr) else str(value)


def _time(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value * 1e6:,.2f} us"
    return _fmt(value)


def io(diagram: Diagram, hierarchy: Hierarchy, *, group: SizeMap | None = None, stream: SizeMap | None = None,
       dtype: str = "float16", **sizes: int | str) -> IOReport:
    """IO costs of ``diagram`` on ``hierarchy`` relabelled by ``group`` and ``stream``.

    ``group`` and ``stream`` map a level name to ``{axis: size}`` (sizes may be symbols, e.g.
    ``"g_a"``; the loop order is the order written, groups first).  With no relabelling every
    box is its own kernel (the unfused baseline).  Sizes not given (and not among a zoo
    model's defaults) stay symbolic: the report then holds formulas.
    """
    expect_diagram(diagram, "io")
    q = element_bytes(dtype)
    bound_sizes = {k: size(v) for k, v in sizes.items()}
    program = flatten(diagram, bound_sizes)
    check_expansion(sympy.Add(*(sympy.Mul(*op.axes.values()) for op in program.ops)),
                    "the IO costs (each kernel's loop over its axes)")  # (expanded below: a file's sizes are not trusted)
    schedule = Schedule.make(hierarchy, program, group, stream)
    fused = not schedule.empty
    levels = hierarchy.levels
    formulas: dict[str, sympy.Expr] = {}
    mem: dict[str, sympy.Expr] = {}
    for i, lvl in enumerate(levels):
        if fused:
            formulas[lvl] = costs.transfers(program, schedule, lvl) if i else sympy.Integer(0)
            mem[lvl] = costs.memory(program, schedule, lvl, bottom=i == len(levels) - 1)
        else:
            formulas[lvl] = costs.unfused_transfers(program) if i else sympy.Integer(0)
            mem[lvl] = costs.unfused_memory(program, top=i == 0)
    mm, other = costs.flops(program)
    capacity = {lvl: hierarchy.capacity(lvl, dtype) for lvl in levels}
    feasible = {lvl: (bool(mem[lvl] <= capacity[lvl]) if mem[lvl].is_number else None) for lvl in levels}
    transfer_times = {lvl: formulas[lvl] * q / sympy.Float(hierarchy.level(lvl).bandwidth)
                      for lvl in levels[1:]}
    compute = mm / sympy.Float(hierarchy.rate(dtype)) + other / sympy.Float(hierarchy.vector_rate)
    transfer = sympy.Max(*transfer_times.values()) if transfer_times else sympy.Integer(0)
    time = sympy.Max(compute, transfer)
    bound = None
    if compute.is_number and transfer.is_number:
        bound = "compute" if compute >= transfer else "memory"
    warnings = [f"{lp.kind} {lp.axis}->{size_text(lp.chunk)} at {lp.level} is not a multiple of {m}"
                f" ({', '.join(c.why for c in hierarchy.level(lp.level).constraints if c.why)})"
                for lp in schedule.nest
                for m in [hierarchy.multiple(lp.level, lp.axis, dtype)]
                if lp.chunk.is_number and int(lp.chunk) % m and lp.count != 1]
    return IOReport(
        hierarchy, schedule, program, dtype, q, fused,
        {k: _num(v) for k, v in formulas.items()}, {k: _num(v) for k, v in mem.items()}, capacity, feasible,
        _num(mm), _num(other), _num(compute), {k: _num(v) for k, v in transfer_times.items()}, _num(time), bound,
        bool(program.masks()), formulas, warnings,
    )


def evaluate_report(report: IOReport, sizes: Mapping[str, int]) -> dict[str, Number]:
    """The transfer formulas of a symbolic report at ``sizes``."""
    mapping = {sympy.Symbol(k, positive=True): v for k, v in sizes.items()}
    return {k: _num(v.subs(mapping)) for k, v in report.formulas.items()}
