"""Lowering rules for the primitives of backward diagrams (``ncd.prims.derivative``)."""

from __future__ import annotations

import string

from ncd.ir.size import evaluate
from ncd.prims.derivative import (
    DerivativeOp,
    EmbeddingGradOp,
    ExpandOp,
    InsertOp,
    LinearTransposeOp,
    LinearWeightGradOp,
    MaskBackwardOp,
    NormBackwardOp,
    SoftmaxBackwardOp,
    ZerosOp,
)
from ncd.torch.rules import NotWeaveAware, RuleContext, register

#: f′ written in terms of the stored value ``{v}`` (the input or the output, see DERIVATIVES)
FORMULAS = {
    "relu": "({v} > 0).to({v}.dtype)",
    "tanh": "1 - {v} * {v}",
    "sigmoid": "{v} * (1 - {v})",
    "exp": "{v}",
    "sqrt": "0.5 / {v}",
    "gelu": "0.5 * (1 + torch.erf({v} * 0.7071067811865476)) + {v} * torch.exp(-0.5 * {v} * {v}) * 0.3989422804014327",
    "silu": "torch.sigmoid({v}) * (1 + {v} * (1 - torch.sigmoid({v})))",
    "log": "1 / {v}",
    "square": "2 * {v}",
    "abs": "torch.sign({v})",
}
_GELU_TANH = ("0.5 * (1 + torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)))"
              " + 0.5 * {v} * (1 - torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)) ** 2)"
              " * 0.7978845608028654 * (1 + 0.134145 * {v} * {v})")


@register(DerivativeOp, weave_aware=True)
def lower_derivative(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, DerivativeOp)
    formula = _GELU_TANH if prim.function == "gelu_tanh" else FORMULAS[prim.function]
    return [formula.format(v=ctx.args[0].var)]


@register(SoftmaxBackwardOp, weave_aware=True)
def lower_softmax_backward(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SoftmaxBackwardOp)
    if ctx.markers("dom", 0) != ctx.markers("dom", 1) or ctx.markers("dom", 0) != ctx.markers("cod", 0):
        raise NotWeaveAware
    (dim,) = ctx.own_dims("dom", 0)
    y, g = ctx.args[0].var, ctx.args[1].var
    if prim.log:
        return [f"{g} - torch.exp({y}) * {g}.sum({dim}, keepdim=True)"]
    return [f"{y} * ({g} - ({g} * {y}).sum({dim}, keepdim=True))"]


@register(ExpandOp)
def lower_expand(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ExpandOp)
    x = ctx.args[0].var
    src, dst = list(prim.source.names), list(prim.target.names)
    present = [n for n in dst if n in src]
    k = len(src)
    if present != src:
        x = f"torch.movedim({x}, {tuple(range(-k, 0))}, {tuple(present.index(n) - k for n in src)})"
    index = ", ".join(":" if n in src else "None" for n in dst)
    sizes = ", ".join(str(evaluate(a.size, what=f"axis {a.name}")) for a in prim.target)
    batch = f"{ctx.args[0].var}.shape[:-{k}]" if k else f"{x}.shape"
    return [f"{x}[..., {index}].expand(*{batch}, {sizes})"]


@register(ZerosOp)
def lower_zeros(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ZerosOp)
    return [f"torch.zeros({tuple(evaluate(a.size, what=f'axis {a.name}') for a in seg)})" for seg in prim.type]


def _positional(n: int, skip: str = "") -> list[str]:
    pool = [c for c in string.ascii_letters if c not in skip]
    return pool[:n]


@register(LinearTransposeOp, weave_aware=True)
def lower_linear_transpose(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, LinearTransposeOp)
    letters = _positional(len(prim.cod_axes) + len(prim.dom_axes))
    out, inp = letters[: len(prim.cod_axes)], letters[len(prim.cod_axes):]
    subs = ctx.subscripts([out, out + inp], inp)
    return [f"torch.einsum('{subs}', {ctx.args[0].var}, {ctx.args[1].var})"]


@register(LinearWeightGradOp, weave_aware=True)
def lower_linear_weight_grad(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, LinearWeightGradOp)
    letters = _positional(len(prim.cod_axes) + len(prim.dom_axes))
    out, inp = letters[: len(prim.cod_axes)], letters[len(prim.cod_axes):]
    subs = ctx.subscripts([inp, out], out + inp)
    return [f"torch.einsum('{subs}', {ctx.args[0].var}, {ctx.args[1].var})"]


@register(NormBackwardOp)
def lower_norm_backward(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, NormBackwardOp)
    n = len(prim.axes)
    dims = tuple(range(-n, 0))
    em, axes = ctx.em, ctx.args[0].axes
    x, g = ctx.args[0].var, ctx.args[-1].var
    if prim.norm == "layer":
        x = em.assign("centred", f"{x} - {x}.mean({dims}, keepdim=True)", axes)
    rstd = em.assign("rstd", f"torch.rsqrt(({x} * {x}).mean({dims}, keepdim=True) + {prim.eps!r})", axes)
    xhat = em.assign("x_hat", f"{x} * {rstd}", axes)
    gh = em.assign("g_hat", f"{g} * {ctx.args[1].var}", axes) if prim.affine else g
    centre = f" - {gh}.mean({dims}, keepdim=True)" if prim.norm == "layer" else ""
    dx = f"{rstd} * ({gh}{centre} - {xhat} * ({gh} * {xhat}).mean({dims}, keepdim=True))"
    return [dx] + ([f"{g} * {xhat}"] if prim.affine else []) + ([g] if prim.bias else [])


@register(MaskBackwardOp, weave_aware=True)
def lower_mask_backward(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, MaskBackwardOp)
    if ctx.markers("dom", 0) != ctx.markers("cod", 0):
        raise NotWeaveAware
    g = ctx.args[0].var
    if prim.query is None:
        want, have = ctx.markers("dom", 0), ctx.markers("dom", 1)
        if [m for m in want if m in have] != have:
            raise NotWeaveAware
        index = [":" if m in have else "None" for m in want]
        mask = ctx.args[1].var + ("" if all(i == ":" for i in index) else f"[..., {', '.join(index)}]")
        return [f"{g}.masked_fill(~{mask}, 0.0)"]
    rows, cols = evaluate(prim.query.size), evaluate(prim.key.size)
    layout = ctx.markers("dom", 0)
    first = layout.index(("own", 0))
    shape = [rows if m == ("own", 0) else cols if m == ("own", 1) else 1 for m in layout[first:]]
    mask = ctx.em.assign("causal", f"torch.ones({rows}, {cols}, dtype=torch.bool, device={g}.device).triu(1)",
                         (prim.query, prim.key))
    view = "" if len(shape) == 2 else f".view({', '.join(map(str, shape))})"
    return [f"{g}.masked_fill({mask}{view}, 0.0)"]


@register(InsertOp)
def lower_insert(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, InsertOp)
    n = evaluate(prim.axis.size, what=f"axis {prim.axis.name}")
    start, stop, step = (evaluate(v, what="insert bound") for v in (prim.start, prim.stop, prim.step))
    g = ctx.args[0].var
    value = f"{g}[..., None]" if prim.source is None else g
    where = f"torch.arange({start}, {stop}, {step}, device={g}.device)"
    return [f"torch.zeros(*{value}.shape[:-1], {n}, dtype={g}.dtype, device={g}.device).index_copy(-1, {where}, {value})"]


@register(EmbeddingGradOp)
def lower_embedding_grad(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, EmbeddingGradOp)
    n = len(prim.dim)
    vocab = evaluate(prim.vocab, what="vocabulary size")
    i, g = ctx.args[0].var, ctx.args[1].var
    return [f"F.one_hot({i}, {vocab}).to({g}.dtype)[..., :{', None' * n}] * {g}.unsqueeze({-n - 1})"]
