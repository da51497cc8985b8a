"""A plan: a sequence of kernels, each a diagram with its own relabelling, run one after another.

A whole model is rarely one fused kernel: a transformer block runs its projections as tiled
matmuls, its attention as FlashAttention, its feed-forward as two more matmuls.  A plan
costs each kernel with :func:`ncd.io` and adds them up: transfers per level and times add
(kernels run in sequence); memory per level is the largest kernel's.

>>> import ncd
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> mm = ncd.Einsum("t m, m f -> t f")
>>> p = plan(h, [Kernel(mm, {"smem": {"t": 128, "f": 128}}, {"smem": {"m": 64}}, "up"),
...              Kernel(ncd.Einsum("t f, f m -> t m"), {"smem": {"t": 128, "m": 128}}, {"smem": {"f": 64}}, "down")],
...          t=4096, m=1024, f=4096)
>>> p.transfers["smem"] == sum(r.transfers["smem"] for r in p.reports)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ncd.iomodel.hierarchy import Hierarchy
from ncd.iomodel.report import IOReport, _fmt, _time, io
from ncd.iomodel.schedule import SizeMap
from ncd.ir.diagram import Diagram

__all__ = ["Kernel", "Plan", "plan"]


@dataclass(frozen=True)
class Kernel:
    """One kernel of a plan: a diagram, its relabelling (``group``, ``stream``) and a name."""

    diagram: Diagram
    group: SizeMap | None = None
    stream: SizeMap | None = None
    name: str = ""


@dataclass
class Plan:
    """Kernels' reports and their totals (transfers and times add; memory is the largest)."""

    kernels: list[Kernel]
    reports: list[IOReport]

    @property
    def transfers(self) -> dict[str, float]:
        levels = self.reports[0].hierarchy.levels
        return {lv: sum(r.transfers[lv] for r in self.reports) for lv in levels}

    @property
    def memory(self) -> dict[str, float]:
        levels = self.reports[0].hierarchy.levels
        return {lv: max(r.memory[lv] for r in self.reports) for lv in levels}

    @property
    def time(self) -> float:
        return float(sum(r.time for r in self.reports))

    @property
    def compute_time(self) -> float:
        return float(sum(r.compute_time for r in self.reports))

    def table(self) -> str:
        levels = self.reports[0].hierarchy.levels[1:]
        head = f"{'kernel':<14}" + "".join(f" {lv + ' (el)':>16}" for lv in levels) + f" {'time':>12}  bound"
        rows = [head]
        for k, r in zip(self.kernels, self.reports):
            fits = "" if all(r.feasible.values()) else "  (does not fit)"
            rows.append(f"{k.name or '-':<14}" + "".join(f" {_fmt(r.transfers[lv]):>16}" for lv in levels)
                        + f" {_time(r.time):>12}  {r.bound}{fits}")
        rows.append(f"{'total':<14}" + "".join(f" {_fmt(self.transfers[lv]):>16}" for lv in levels)
                    + f" {_time(self.time):>12}  (compute alone {_time(self.compute_time)})")
        return "\n".join(rows)


def plan(hierarchy: Hierarchy, kernels: Sequence[Kernel], *, dtype: str = "float16", **sizes: int) -> Plan:
    """Cost each kernel on ``hierarchy`` with the shared ``sizes``."""
    reports = [io(k.diagram, hierarchy, group=k.group, stream=k.stream, dtype=dtype, **sizes) for k in kernels]
    return Plan(list(kernels), reports)
