"""The analysis rule tables, now views of the typed registries of :mod:`ncd.ir.rules`.

Rules live beside their primitive (``ncd.prims.<family>``), registered with
``COST.rule(XxxOp)`` and ``BACKWARD.rule(XxxOp)`` of :mod:`ncd.ir.rules`.  This module keeps
the older decorators (:func:`cost_rule`, :func:`backward_rule`, :func:`unsupported`), which
register an untyped ``fn(ctx)`` / ``fn(box, builder)`` into the same registries, and the
look-ups the cost and backward interpreters call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ncd.ir.primitive import PRIMITIVES, Primitive
from ncd.ir.rules import BACKWARD, BATCHED_BACKWARD, COST, AnalysisError, load
from ncd.ir.weaving import lowers_in_place

__all__ = ["COST", "BACKWARD", "cost_rule", "backward_rule", "unsupported", "cost_entry", "backward_entry",
           "AnalysisError", "load_all"]


@dataclass(frozen=True)
class CostEntry:
    fn: Callable[[Any], Any]
    #: whether lowering handles woven axes in place for this box (else codegen moves them to the front)
    in_place: Callable[[Any, tuple[Any, ...]], bool]


def _cls(op: str | type[Primitive]) -> type[Primitive]:
    return PRIMITIVES[op] if isinstance(op, str) else op


def cost_rule(op: str | type[Primitive]) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register an untyped cost rule ``fn(ctx)`` (prefer ``ncd.ir.rules.COST.rule``: ``fn(prim, ctx)``)."""

    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        COST.rule(_cls(op))(lambda prim, ctx: fn(ctx))
        return fn

    return deco


def backward_rule(op: str | type[Primitive]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an untyped backward rule ``fn(box, builder)`` (prefer ``ncd.ir.rules.BACKWARD.rule``)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        BACKWARD.rule(_cls(op))(lambda prim, box, builder: fn(box, builder))
        if getattr(fn, "batched", False):
            BATCHED_BACKWARD.rule(_cls(op))(lambda prim, box, builder, batch: fn(box, builder, batch=batch))
        return fn

    return deco


def unsupported(op: str, why: str, *, cost: bool = False, backward: bool = False) -> None:
    """Declare that the cost and/or backward interpreter does not handle ``op`` (a tested, explicit entry)."""
    if cost:
        COST.unsupported(op, why)
    if backward:
        BACKWARD.unsupported(op, why)


def load_all() -> None:
    """Load every rule (:func:`ncd.ir.rules.load`, the one loader)."""
    load()


def cost_entry(prim: Primitive) -> CostEntry:
    load_all()
    fn = COST.lookup(prim)
    return CostEntry(lambda ctx: fn(prim, ctx), lowers_in_place)


def backward_entry(prim: Primitive) -> Callable[..., Any]:
    load_all()
    fn = BACKWARD.lookup(prim)
    return lambda box, builder: fn(prim, box, builder)
