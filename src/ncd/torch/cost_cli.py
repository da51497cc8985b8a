"""``ncd cost``: print the costs of a zoo model or a diagram JSON file as a table.

    ncd cost gpt2 --size N=2 --size m=256
    ncd cost model.json --size b=8 --formulas --complexity

It lives beside the PyTorch backend because ``--measure`` runs the lowered module
(:mod:`ncd.torch.measure`); the costs themselves come from :mod:`ncd.analysis`, which runs
no lowering.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ncd.cli import load_diagram, parse_sizes

if TYPE_CHECKING:
    from ncd.analysis.cost import CostReport

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("diagram", help="a zoo model name (see `ncd gallery`) or a diagram JSON file")
    parser.add_argument("--size", action="append", default=[], metavar="K=V", help="bind an axis size (repeatable)")
    parser.add_argument("--dtype", default="float32", help="element type of activations (float32, float16, bfloat16, float64)")
    parser.add_argument("--no-boxes", action="store_true", help="only blocks and the total, not every box")
    parser.add_argument("--formulas", action="store_true", help="also print the totals as formulas in the axis sizes")
    parser.add_argument("--complexity", action="store_true", help="also print the leading terms per block")
    parser.add_argument("--measure", action="store_true", help="also measure the lowered module (FLOP counter, autograd)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ncd.analysis.cost import cost

    diagram = load_diagram(args.diagram)
    sizes = parse_sizes(args.size)
    report = cost(diagram, dtype=args.dtype, training=True, **sizes)
    console = Console()
    console.print(report.table() if not args.no_boxes else _blocks_only(report))
    if args.formulas:
        f = report.formulas
        for name in ("forward_macs", "forward_flops", "backward_flops", "params", "activation_bytes"):
            console.print(f"{name} = {getattr(f, name)}", highlight=False)
    if args.complexity:
        for block, terms in report.complexity().items():
            text = " + ".join(str(t) for t, _ in terms) or "0"
            console.print(f"{block}: {text}", highlight=False)
    if args.measure:
        from ncd.torch.measure import measure

        m = measure(diagram, module=None, inputs=None, seed=0, training=True, **report.sizes)
        console.print(f"measured: forward {m.forward_flops} matmul FLOPs (model {report.forward_matmul}), backward"
                      f" {m.backward_flops} (model {report.backward_matmul}), activations {m.activation_bytes} B"
                      f" (model {report.activation_bytes})", highlight=False)
    return 0


def _blocks_only(report: CostReport) -> Any:
    from ncd.analysis.table import cost_table

    return cost_table(report, boxes=False)
