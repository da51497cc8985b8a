"""Lowering rules for learned linear maps, einsum wirings and the unit.

A learned linear map is an ``nn.Linear`` over the flattened input and output axes (so
weights load straight from ``torch.nn`` models); when its axes are the trailing ones it is
called directly, as hand-written code would, otherwise it becomes an einsum on a view of
the weight.  Einsums keep woven axes as extra letters, and ``torch.einsum`` picks the
contraction order with ``opt_einsum`` for three or more operands.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from ncd.ir.size import evaluate
from ncd.prims.linear import EinsumOp, LinearOp, UnitOp
from ncd.torch.rules import Expr, RuleContext, register

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter


def _letters(names: list[list[str]]) -> dict[str, str]:
    table: dict[str, str] = {}
    pool = iter(string.ascii_letters)
    for group in names:
        for n in group:
            if n not in table:
                table[n] = next(pool)
    return table


def _sizes(ctx: RuleContext, axes: object) -> list[int]:
    return [evaluate(a.size, what=f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]


def linear_module(em: ClassEmitter, prim: LinearOp, label: str | None) -> str:
    """Declare the ``nn.Linear`` holding a learned linear map's weights (flattened axes, torch layout)."""
    fan_in = _product([evaluate(a.size, what=f"axis {a.name}") for a in prim.dom_axes])
    fan_out = _product([evaluate(a.size, what=f"axis {a.name}") for a in prim.cod_axes])
    hint = ("L_plus" if prim.bias else "L") + (f"_{label}" if label else "")
    return em.attr(hint, f"nn.Linear({fan_in}, {fan_out}, bias={prim.bias})".replace(", bias=True", ""))


@register(LinearOp, weave_aware=True)
def lower_linear(ctx: RuleContext) -> list[Expr]:
    prim = ctx.prim
    assert isinstance(prim, LinearOp)
    n_in, n_out = len(prim.dom_axes), len(prim.cod_axes)
    ins, outs = _sizes(ctx, prim.dom_axes), _sizes(ctx, prim.cod_axes)
    module = linear_module(ctx.em, prim, ctx.box.label)
    x = ctx.args[0]
    dims_in, dims_out = ctx.own_dims("dom", 0), ctx.own_dims("cod", 0)
    trailing_in = dims_in == list(range(-n_in, 0))
    trailing_out = dims_out == list(range(-n_out, 0))
    same_woven = [m for m in ctx.markers("dom", 0) if m[0] == "woven"] == [m for m in ctx.markers("cod", 0) if m[0] == "woven"]
    if trailing_in and trailing_out and same_woven:
        call = ctx.module(module, x if n_in == 1 else ctx.method(x, "flatten", -n_in))
        return [call if n_out == 1 else ctx.method(call, "unflatten", -1, tuple(outs))]
    letters = _letters([[a.name + "_in" for a in prim.dom_axes], [a.name + "_out" for a in prim.cod_axes]])
    own_in = [letters[a.name + "_in"] for a in prim.dom_axes]
    own_out = [letters[a.name + "_out"] for a in prim.cod_axes]
    subs = ctx.subscripts([own_in], own_out)
    weight_spec = "".join(own_out + own_in)
    lhs, rhs = subs.split("->")
    weight = f"{module}.weight.view({', '.join(map(str, outs + ins))})"
    expr = ctx.einsum(f"{lhs},{weight_spec}->{rhs}", x, weight)
    if prim.bias:
        layout = ctx.markers("cod", 0)
        first = min(i for i, (kind, _) in enumerate(layout) if kind == "own")
        shape = [outs[k] if kind == "own" else 1 for kind, k in layout[first:]]
        expr = Expr(f"{expr} + {module}.bias.view({', '.join(map(str, shape))})", "expr", "", expr.args)
    return [expr]


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


@register(EinsumOp, weave_aware=True)
def lower_einsum(ctx: RuleContext) -> list[Expr]:
    prim = ctx.prim
    assert isinstance(prim, EinsumOp)
    letters = _letters([list(seg.names) for seg in prim.inputs])
    own_in = [[letters[n] for n in seg.names] for seg in prim.inputs]
    own_out = [letters[n] for n in prim.output.names]
    return [ctx.einsum(ctx.subscripts(own_in, own_out), *ctx.args)]


@register(UnitOp)
def lower_unit(ctx: RuleContext) -> list[Expr]:
    prim = ctx.prim
    assert isinstance(prim, UnitOp)
    return [ctx.call("torch.eye", evaluate(prim.first.size, what=f"axis {prim.first.name}"))]
