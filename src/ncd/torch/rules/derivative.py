"""Lowering rules for the primitives of backward diagrams (``ncd.prims.derivative``)."""

from __future__ import annotations

import string

from ncd.ir.size import evaluate
from ncd.prims.derivative import (
    ExpandOp,
    LinearTransposeOp,
    LinearWeightGradOp,
)
from ncd.torch.rules import RuleContext, register


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
    letters = _positional(len(prim.cod_axes) + len(prim.dom_axes) + len(prim.batch))
    out, inp = letters[: len(prim.cod_axes)], letters[len(prim.cod_axes):len(prim.cod_axes) + len(prim.dom_axes)]
    batch = letters[len(prim.cod_axes) + len(prim.dom_axes):]
    subs = ctx.subscripts([batch + inp, batch + out], out + inp)
    return [f"torch.einsum('{subs}', {ctx.args[0].var}, {ctx.args[1].var})"]


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------
from ncd.prims.derivative import (  # noqa: E402
    AvgPoolTransposeOp,
    ConvWeightGradOp,
    ConvWithWeightOp,
    DiagonalOp,
    MaxPoolArgmaxOp,
    MaxPoolBackwardOp,
)


def _ints(ctx: RuleContext, axes: object) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]


def _tuple(values: object) -> str:
    return str(tuple(values))  # type: ignore[call-overload]


@register(DiagonalOp)
def lower_diagonal(ctx: RuleContext) -> list[str]:
    """``einsum`` of the source with one identity matrix (a cup) per repeated axis."""
    prim = ctx.prim
    assert isinstance(prim, DiagonalOp)
    letters = dict(zip(prim.source.names, string.ascii_letters))
    spare = iter(c for c in string.ascii_letters[len(letters):])
    x = ctx.args[0].var
    out, eyes, seen = "", [], set()
    for a in prim.target:
        if a.name in seen:
            fresh = next(spare)
            out += fresh
            eyes.append((letters[a.name] + fresh, ctx.int(a.size, f"axis {a.name}")))
        else:
            seen.add(a.name)
            out += letters[a.name]
    subs = ",".join(["..." + "".join(letters.values())] + [e for e, _ in eyes]) + "->..." + out
    mats = "".join(f", torch.eye({n}, dtype={x}.dtype, device={x}.device)" for _, n in eyes)
    return [f"torch.einsum('{subs}', {x}{mats})"]


@register(MaxPoolArgmaxOp)
def lower_maxpool_argmax(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, MaxPoolArgmaxOp)
    n = len(prim.axes)
    shape, out = _ints(ctx, prim.axes), _ints(ctx, prim.positions)
    x = ctx.args[0].var
    options = f"{_tuple(prim.kernel)}, stride={_tuple(prim.stride)}, padding={_tuple(prim.padding)}, " \
              f"dilation={_tuple(prim.dilation)}, return_indices=True"
    pooled, where = ctx.em.fresh("pooled"), ctx.em.fresh("argmax")
    ctx.em.line(f"{pooled}, {where} = F.max_pool{n}d({x}.reshape(-1, 1, {', '.join(map(str, shape))}), {options})")
    restore = f".view(*{x}.shape[:-{n}], {', '.join(map(str, out))})"
    return [pooled + restore, where + restore]


@register(MaxPoolBackwardOp)
def lower_maxpool_backward(ctx: RuleContext) -> list[str]:
    """Scatter-add each cotangent to its window's argmax (overlapping windows add up)."""
    prim = ctx.prim
    assert isinstance(prim, MaxPoolBackwardOp)
    n = len(prim.axes)
    shape = _ints(ctx, prim.axes)
    plane = 1
    for v in shape:
        plane *= v
    i, g = ctx.args[0].var, ctx.args[1].var
    zeros = f"torch.zeros(*{g}.shape[:-{n}], {plane}, dtype={g}.dtype, device={g}.device)"
    scatter = f"{zeros}.scatter_add(-1, {i}.flatten(-{n}), {g}.flatten(-{n}))"
    return [f"{scatter}.view(*{g}.shape[:-{n}], {', '.join(map(str, shape))})"]


@register(AvgPoolTransposeOp)
def lower_avgpool_transpose(ctx: RuleContext) -> list[str]:
    """ATen's average-pooling transposes (1-d runs as 2-d with a unit axis); the input is only a shape."""
    prim = ctx.prim
    assert isinstance(prim, AvgPoolTransposeOp)
    n = len(prim.axes)
    shape, out = _ints(ctx, prim.axes), _ints(ctx, prim.positions)
    g = ctx.args[0].var
    dims = max(n, 2)
    pad1 = [1] * (dims - n)
    grad = f"{g}.reshape(-1, 1, {', '.join(map(str, pad1 + out))})"
    like = f"{g}.new_zeros(1, 1, {', '.join(map(str, pad1 + shape))}).expand({grad}.shape[0], 1, " \
           f"{', '.join(map(str, pad1 + shape))})"
    if prim.adaptive:
        call = f"torch.ops.aten._adaptive_avg_pool{dims}d_backward({grad}, {like})"
    else:
        kernel, stride = [1] * (dims - n) + list(prim.kernel), [1] * (dims - n) + list(prim.stride)
        padding = [0] * (dims - n) + list(prim.padding)
        call = (f"torch.ops.aten.avg_pool{dims}d_backward({grad}, {like}, {kernel}, {stride}, {padding}, False,"
                f" {prim.count_include_pad}, None)")
    return [f"{call}.view(*{g}.shape[:-{n}], {', '.join(map(str, shape))})"]


def _channel_view(ctx: RuleContext, x: str, axes: object, channel: int) -> tuple[str, int]:
    """``x`` viewed as ``(N, C, L)`` like batch normalisation's lowering, and ``C``."""
    sizes = _ints(ctx, axes)
    after = 1
    for v in sizes[channel + 1:]:
        after *= v
    return f"{x}.reshape(-1, {sizes[channel]}, {after})", sizes[channel]


@register(ConvWithWeightOp)
def lower_conv_with_weight(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConvWithWeightOp)
    n = len(prim.kernel)
    shape, out = _ints(ctx, prim.dom_axes), _ints(ctx, prim.cod_axes)
    groups = ctx.int(prim.groups, "groups")
    x, w = ctx.args[0].var, ctx.args[1].var
    arg = f"{x}.reshape(-1, {', '.join(map(str, shape))})"
    if prim.transposed:
        call = (f"F.conv_transpose{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)},"
                f" {_tuple(prim.output_padding)}, {groups}, {_tuple(prim.dilation)})")
    else:
        call = f"F.conv{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)}, {_tuple(prim.dilation)}, {groups})"
    return [f"{call}.view(*{x}.shape[:-{n + 1}], {', '.join(map(str, out))})"]


@register(ConvWeightGradOp)
def lower_conv_weight_grad(ctx: RuleContext) -> list[str]:
    """Windows (``★``: pad, unfold, dilate) contracted with the other operand over positions and batch: one einsum."""
    prim = ctx.prim
    assert isinstance(prim, ConvWeightGradOp)
    n, nb = len(prim.kernel), len(prim.batch)
    groups = ctx.int(prim.groups, "groups")
    x, g = ctx.args[0].var, ctx.args[1].var
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    w_sizes, o_sizes = _ints(ctx, w_axes), _ints(ctx, o_axes)
    bsizes = _ints(ctx, prim.batch)
    lead = f"{x}.shape[:-{nb + n + 1}]"
    expr = f"{windowed}.reshape(-1, {', '.join(map(str, [*bsizes, *w_sizes]))})"
    if any(prim.padding):
        expr = f"F.pad({expr}, {tuple(p for p in reversed(prim.padding) for _ in (0, 1))})"
    for k, s, d in zip(prim.kernel, prim.stride, prim.dilation):
        expr += f".unfold({-n}, {d * (k - 1) + 1}, {s})"
    positions = o_sizes[1:]
    expr += "[..., " + ", ".join(f":{p}" for p in positions) + ", " + ", ".join(f"::{d}" for d in prim.dilation) + "]"
    win = ctx.em.assign("windows", expr, ())
    letters = iter(string.ascii_letters)
    L, G, Ii, J = (next(letters) for _ in range(4))
    B = "".join(next(letters) for _ in range(nb))
    P = "".join(next(letters) for _ in range(n))
    K = "".join(next(letters) for _ in range(n))
    cw, co = w_sizes[0] // groups, o_sizes[0] // groups
    wv = f"{win}.reshape(-1, {', '.join(map(str, [*bsizes, groups, cw, *positions, *prim.kernel]))})"
    ov = f"{other}.reshape(-1, {', '.join(map(str, [*bsizes, groups, co, *positions]))})"
    subs = f"{L}{B}{G}{Ii}{P}{K},{L}{B}{G}{J}{P}->{L}{G}{J}{Ii}{K}"
    weight = _ints(ctx, prim.weight)
    return [f"torch.einsum('{subs}', {wv}, {ov}).reshape(*{lead}, {', '.join(map(str, weight))})"]




