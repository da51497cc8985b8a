"""Registers a new family's rules (written ``rule(prim, ctx)``, one primitive per rule) in the interpreters' tables.

A bridge until the typed registry of ``ncd.ir.rules`` is on main: the rules already take their own
primitive first, so moving them is a change of decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ncd.ir.primitive import Primitive

__all__ = ["register_family"]


def register_family(cls: type[Primitive], lower: Callable[..., Any], cost: Callable[..., Any] | None,
                    backward: Callable[..., Any] | None, draw: Callable[..., Any] | None,
                    scalar_draw: Callable[..., Any] | None = None) -> None:
    """Register ``cls``' lowering, cost, backward and drawing rules (``None``: declared elsewhere or unsupported)."""
    from ncd.analysis.tables import backward_rule, cost_rule
    from ncd.render.pictograms import rule, scalar
    from ncd.torch.rules import register

    register(cls)(lambda ctx: lower(ctx.prim, ctx))
    if cost is not None:
        cost_rule(cls)(lambda ctx: cost(ctx.prim, ctx))
    if backward is not None:
        backward_rule(cls)(lambda box, builder: backward(box.prim, box, builder))
    if draw is not None:
        rule(cls.op)(lambda ctx, box: draw(box.prim, ctx, box))
    if scalar_draw is not None:
        scalar(cls.op)(lambda ctx, box, dom, cod: scalar_draw(box.prim, ctx, box, dom, cod))
