"""``ncd shard``: place a diagram's axes on a device mesh and print what each rank computes, holds and sends.

    ncd shard gpt2 --mesh tp=8 --place h=tp,f=tp
    ncd shard gpt2 --mesh dp=2,tp=4 --place b=dp,h=tp,f=tp,t=tp --size b=16 --link two-level --where
"""

from __future__ import annotations

import argparse

from ncd.cli import load_diagram, parse_sizes

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("diagram", help="a zoo model name (see `ncd gallery`) or a diagram JSON file")
    parser.add_argument("--mesh", required=True, metavar="AXES", help="mesh axes and sizes, outermost first, e.g. dp=2,tp=4")
    parser.add_argument("--place", required=True, metavar="PLACEMENTS",
                        help="diagram axis=mesh axis, e.g. h=tp,f=tp (t=tp: sequence parallel; b=dp: batch and FSDP)")
    parser.add_argument("--size", action="append", default=[], metavar="K=V", help="bind an axis size (repeatable); b is the batch")
    parser.add_argument("--dtype", default="float32", help="element type (float32, float16, bfloat16, float64)")
    parser.add_argument("--link", default="nvlink", choices=["nvlink", "infiniband", "two-level"],
                        help="α–β link model for the times (two-level: NVLink within 8 ranks, InfiniBand across)")
    parser.add_argument("--where", action="store_true", help="also list every collective: where it is and why")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ncd.analysis.cost import cost
    from ncd.distributed.mesh import Mesh, ShardingError
    from ncd.distributed.shard import shard
    from ncd.distributed.table import LINKS, collective_table, per_rank_table

    placements: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in args.place.split(","))):
        axis, sep, target = item.partition("=")
        if not sep or not axis.strip() or not target.strip():
            raise ShardingError(f"--place {args.place!r}: write axis=mesh-axis pairs separated by commas, e.g. h=tp,f=tp")
        placements[axis.strip()] = target.strip()
    sharded = shard(load_diagram(args.diagram), Mesh.parse(args.mesh), placements)
    report = cost(sharded, dtype=args.dtype, training=True, **parse_sizes(args.size))
    console = Console()
    link = LINKS[args.link]
    console.print(per_rank_table(report.per_rank, link))
    console.print(collective_table(report.per_rank, link))
    if args.where:
        value = report.per_rank._value
        for c in report.per_rank.collectives:
            count, numel = value(c.count), value(c.numel * (report.per_rank.batch if c.activation else 1))
            console.print(f"  {c.phase} {c.kind} over {c.mesh_axis} ×{count}: {numel} elements of {c.wire} at {c.where}"
                          f" ({c.reason})", highlight=False)
    return 0
