"""The analysis rule tables, now views of the typed registries of :mod:`ncd.ir.rules`.

Rules live beside their primitive (``ncd.prims.<family>``), registered with
``COST.rule(XxxOp)`` and ``BACKWARD.rule(XxxOp)`` of :mod:`ncd.ir.rules`.  This module keeps the
look-ups the cost and backward interpreters call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ncd.ir.primitive import Primitive
from ncd.ir.rules import BACKWARD, COST, AnalysisError, load

__all__ = ["COST", "BACKWARD", "cost_entry", "backward_entry", "AnalysisError", "load_all"]


@dataclass(frozen=True)
class CostEntry:
    fn: Callable[[Any], Any]


def load_all() -> None:
    """Load every rule (:func:`ncd.ir.rules.load`, the one loader)."""
    load()


def cost_entry(prim: Primitive) -> CostEntry:
    load_all()
    fn = COST.lookup(prim)
    return CostEntry(lambda ctx: fn(prim, ctx))


def backward_entry(prim: Primitive) -> Callable[..., Any]:
    load_all()
    fn = BACKWARD.lookup(prim)
    return lambda box, builder: fn(prim, box, builder)
