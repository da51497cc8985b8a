"""Cost annotations for drawings: ``ncd.draw(diagram, path, costs=True)`` writes, under each block's
title, its forward FLOPs and parameters as :func:`ncd.cost` counts them.

>>> import ncd
>>> d = (ncd.Identity.of("b m") >> ncd.Linear("m -> n", bias=True)).block("Layer")
>>> annotations(d, b=2, m=3, n=4)
{'Layer': '56 FLOPs · 16 params'}
"""

# no ``from __future__ import annotations``: this module's public function is named ``annotations``
from typing import Any

import sympy

from ncd.ir.diagram import Diagram

__all__ = ["annotations", "human"]


def human(value: Any) -> str:
    """A count in short form (``56``, ``1.5k``, ``12.9G``); a formula as its text."""
    if isinstance(value, sympy.Expr) and value.free_symbols:
        return str(value).replace("**", "^").replace("*", "·")
    n = int(value)
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def annotations(diagram: Diagram, /, **sizes: int) -> dict[str, str]:
    """The annotation text of every block, by block path (``"Outer/Inner"``, as :attr:`CostReport.blocks`)."""
    from ncd.analysis.cost import cost

    report = cost(diagram, dtype="float32", training=True, **sizes)
    source = report.blocks
    return {path: f"{human(report.value(m.forward_flops))} FLOPs · {human(report.value(m.params))} params"
            for path, m in source.items()}
