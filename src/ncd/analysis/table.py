"""Printing a :class:`~ncd.analysis.cost.CostReport`: a one-line summary and a ``rich`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sympy

if TYPE_CHECKING:
    from ncd.analysis.cost import CostReport, Metrics

__all__ = ["render_text", "cost_table", "human"]


def human(value: Any, unit: str = "") -> str:
    """``12.3 M`` for numbers (``B`` for bytes uses powers of 1024), the formula otherwise."""
    if value is None:
        return "—"
    if isinstance(value, sympy.Basic) and value.free_symbols:
        return str(value)
    number = int(value)
    base, prefixes = (1024, ["", "Ki", "Mi", "Gi", "Ti"]) if unit == "B" else (1000, ["", "k", "M", "G", "T", "P"])
    scaled, k = float(number), 0
    while abs(scaled) >= base and k < len(prefixes) - 1:
        scaled, k = scaled / base, k + 1
    text = f"{number}" if k == 0 else f"{scaled:.3g} {prefixes[k]}"
    return f"{text}{unit}" if k == 0 or not unit else f"{text}{unit}"


def render_text(report: CostReport) -> str:
    return (
        f"forward {human(report.forward_flops)}FLOPs ({human(report.forward_matmul)} in matrix products),"
        f" backward {human(report.backward_flops)}FLOPs, {human(report.params)} parameters,"
        f" {human(report.activation_bytes, 'B')} of activations stored, peak {human(report.peak_bytes, 'B')}"
    )


def _row(report: CostReport, metrics: Metrics) -> list[str]:
    value = report.value
    return [human(value(metrics.forward_flops)), human(value(metrics.forward_matmul)), human(value(metrics.backward_flops)),
            human(value(metrics.params)), human(value(metrics.activation_bytes), "B")]


def cost_table(report: CostReport, *, boxes: bool = True, formulas: bool = False) -> Any:
    """Rows per block (indented by depth) and, optionally, per box; a total row last."""
    from rich.table import Table

    title = getattr(report.diagram, "name", None) or "diagram"
    table = Table(title=f"Costs of {title}" + (f" at {_sizes(report)}" if report.sizes else ""))
    for column in ("block / box", "forward FLOPs", "of which matmul", "backward FLOPs", "params", "activations"):
        table.add_column(column, justify="left" if column == "block / box" else "right")
    source = report.formulas if formulas else None
    blocks = report.blocks
    shown: set[str] = set()
    for box in report.boxes:
        for depth in range(1, len(box.blocks) + 1):
            key = "/".join(box.blocks[:depth])
            if key not in shown:
                shown.add(key)
                table.add_row("  " * (depth - 1) + f"[bold]{box.blocks[depth - 1]}[/bold]", *_row(report, blocks[key]))
        if boxes and not _zero(box.metrics):
            table.add_row("  " * len(box.blocks) + box.text, *_row(report, box.metrics))
    total = report.numbers if report.numbers is not None and source is None else report.formulas
    table.add_row("[bold]total[/bold]", *_row(report, total), end_section=True)
    table.caption = (f"peak forward memory {human(report.peak_bytes, 'B')}; FLOPs = 2 x multiply-accumulates for matrix"
                     " products; 'of which matmul' is what torch.utils.flop_counter counts")
    return table


def _zero(metrics: Metrics) -> bool:
    return all(getattr(metrics, f) == 0 for f in ("forward_matmul", "forward_other", "backward_matmul", "backward_other",
                                                  "params", "activation_bytes"))


def _sizes(report: CostReport) -> str:
    return ", ".join(f"{k}={v}" for k, v in report.sizes.items())
