"""The per-rank table ``ncd shard`` prints: what one rank computes, holds and sends."""

from __future__ import annotations

from typing import Any

from ncd.distributed.derive import KINDS
from ncd.distributed.report import INFINIBAND, NVLINK, Link, ShardedCost, TwoLevel, collective_time

__all__ = ["per_rank_table", "collective_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def per_rank_table(cost: ShardedCost, link: Link | TwoLevel = NVLINK) -> Any:
    """A ``rich`` table: per-rank and whole-model FLOPs and bytes, then one row per collective kind and pass."""
    from rich.table import Table

    report, sharding = cost.report, cost.derivation.sharding
    places = ", ".join(f"{a}→{m}" for a, m in sharding.placements.items())
    table = Table(title=f"per rank on {sharding.mesh} ({cost.mesh.world_size} ranks): {places}", title_justify="left")
    table.add_column("quantity")
    table.add_column("per rank", justify="right")
    table.add_column("whole model", justify="right")
    item = cost.itemsize
    whole_params = report.params * item if isinstance(report.params, int) else report.params
    table.add_row("forward FLOPs", _fmt(cost.forward_flops), _fmt(report.forward_flops))
    table.add_row("backward FLOPs", _fmt(cost.backward_flops), _fmt(report.backward_flops))
    table.add_row("parameter bytes", _fmt(cost.param_bytes), _fmt(whole_params))
    table.add_row("activation bytes", _fmt(cost.activation_bytes), _fmt(report.activation_bytes))
    return table


def collective_table(cost: ShardedCost, link: Link | TwoLevel = NVLINK) -> Any:
    """One row per pass and collective kind: count, bytes and time per rank under ``link``."""
    from rich.table import Table

    name = link.name if isinstance(link, Link) else \
        f"{link.intra.name} within {link.ranks_per_node} ranks, {link.inter.name} across"
    table = Table(title=f"collectives per rank and step (time: α–β ring model, {name})", title_justify="left")
    for column in ("pass", "collective", "count", "bytes", "time (µs)"):
        table.add_column(column, justify="left" if column in ("pass", "collective") else "right")
    bound = not any(not isinstance(v, int) for v in cost.counts().values())
    for phase in ("forward", "backward"):
        counts, nbytes = cost.counts(phase), cost.collective_bytes(phase)
        for kind in KINDS:
            if counts[kind] == 0:
                continue
            seconds = _time(cost, phase, kind, link) if bound else None
            table.add_row(phase, kind, _fmt(counts[kind]), _fmt(nbytes[kind]), "" if seconds is None else f"{seconds * 1e6:,.1f}")
    return table


def _time(cost: ShardedCost, phase: str, kind: str, link: Link | TwoLevel) -> float:
    total = 0.0
    for c in cost.derivation.collectives:
        if c.phase != phase or c.kind != kind:
            continue
        chosen = link.link(cost.mesh, c.mesh_axis) if isinstance(link, TwoLevel) else link
        numel = int(cost._value(c.numel * (cost.batch if c.activation else 1)))
        total += int(cost._value(c.count)) * collective_time(kind, cost.mesh[c.mesh_axis], numel * cost.itemsize, chosen)
    return total


LINKS: dict[str, Link | TwoLevel] = {"nvlink": NVLINK, "infiniband": INFINIBAND, "two-level": TwoLevel()}
