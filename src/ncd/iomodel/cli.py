"""``ncd io``: IO-aware costs of a zoo model or a diagram JSON file on a memory hierarchy.

    ncd io attention --hierarchy h100 --levels hbm,smem --online \\
        --group smem:y=128 --stream smem:x=128 --size y=16384 --size x=16384 --size k=128
    ncd io attention --hierarchy a100 --size y=4096 --size x=4096     # the unfused baseline

Streams are listed outer loop first (repeat ``--stream``); ``--online`` first rewrites every
softmax-then-contraction into the online form (``ncd.online_softmax``), which streaming the
key axis needs.  ``--draw FILE`` writes the IO drawing, ``--pseudocode FILE`` the loop nest.
"""

from __future__ import annotations

import argparse

from ncd.cli import load_diagram, parse_sizes
from ncd.errors import SizeError

__all__ = ["add_arguments", "run", "parse_relabelling"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("diagram", help="a zoo model name (see `ncd gallery`) or a diagram JSON file")
    parser.add_argument("--hierarchy", default="h100", help="preset: h100, a100 or h200 (default h100)")
    parser.add_argument("--levels", default=None, help="keep only these levels, e.g. hbm,smem (the two-level model)")
    parser.add_argument("--group", action="append", default=[], metavar="LEVEL:AXIS=SIZE[,AXIS=SIZE]",
                        help="group an axis at a level (parallel groups on sibling units; repeatable)")
    parser.add_argument("--stream", action="append", default=[], metavar="LEVEL:AXIS=SIZE[,AXIS=SIZE]",
                        help="stream an axis at a level in chunks (repeatable, outer loop first)")
    parser.add_argument("--dtype", default="float16", help="element type: float16, bfloat16, float8, float32, float64")
    parser.add_argument("--size", action="append", default=[], metavar="K=V", help="bind an axis size (repeatable)")
    parser.add_argument("--online", action="store_true", help="rewrite softmax-then-contraction into the online form first")
    parser.add_argument("--draw", default=None, metavar="FILE", help="write the IO drawing (.svg or .png)")
    parser.add_argument("--pseudocode", default=None, metavar="FILE", help="write the pseudocode diagram (.svg or .png)")


def parse_relabelling(items: list[str], what: str) -> dict[str, dict[str, int]]:
    """``["smem:y=128", "smem:x=64,k=32"]`` -> ``{"smem": {"y": 128, "x": 64, "k": 32}}`` (order kept)."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        level, sep, rest = item.partition(":")
        if not sep or not level.strip() or not rest.strip():
            raise SizeError(f"--{what} {item!r} must look like LEVEL:AXIS=SIZE, e.g. --{what} smem:x=128")
        for pair in rest.split(","):
            axis, eq, value = pair.partition("=")
            if not eq or not axis.strip() or not value.strip().isdigit() or int(value) < 1:
                raise SizeError(f"--{what} {item!r}: {pair!r} must look like AXIS=positive-whole-number")
            out.setdefault(level.strip(), {})[axis.strip()] = int(value)
    return out


def run(args: argparse.Namespace) -> int:
    from ncd.iomodel import Hierarchy, io, online_softmax

    diagram = load_diagram(args.diagram)
    if args.online:
        diagram = online_softmax(diagram)
    hierarchy = Hierarchy.preset(args.hierarchy)
    if args.levels:
        hierarchy = hierarchy.restrict(*[n.strip() for n in args.levels.split(",") if n.strip()])
    group = parse_relabelling(args.group, "group")
    stream = parse_relabelling(args.stream, "stream")
    report = io(diagram, hierarchy, group=group or None, stream=stream or None, dtype=args.dtype,
                **parse_sizes(args.size))
    print(report.table())
    if args.draw:
        from ncd.iomodel.drawing import draw_io

        draw_io(diagram, report, args.draw)
        print(f"wrote {args.draw}")
    if args.pseudocode:
        from ncd.iomodel.drawing import draw_pseudocode

        draw_pseudocode(report, args.pseudocode)
        print(f"wrote {args.pseudocode}")
    return 0
