"""A learned map whose weight is stored in another order than its axes are declared in (the order SDPA reads
or writes, :func:`ncd.prims.patterns.chosen_rows` / :func:`~ncd.prims.patterns.chosen_columns`): the lowered call
sees its output or input in the declared order, and state_dict hooks keep checkpoints in the declared order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd.ir.axes import Segment
from ncd.ir.size import evaluate

if TYPE_CHECKING:
    from ncd.ir.program import Value
    from ncd.prims.linear import LinearOp
    from ncd.torch.rules import Expr, RuleContext


def _sizes(axes: Segment) -> list[int]:
    return [evaluate(a.size, what=f"axis {a.name}") for a in axes]


def _keep_declared(ctx: RuleContext, module: str, axes: Segment, stored: tuple[str, ...], dim: int,
                   params: tuple[str, ...], why: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """State_dict hooks that show the parameters ``params`` of ``module`` (their dimension ``dim`` holding ``axes``
    stored in the order ``stored``) in the declared order, and load them from it.  Returns the permutations
    ``(declared -> stored, stored -> declared)``."""
    declared = [a.name for a in axes]
    size = dict(zip(declared, _sizes(axes)))
    n = len(declared)
    to_stored = tuple(declared.index(name) for name in stored)  # stored dim i holds declared axis to_stored[i]
    to_declared = tuple(stored.index(name) for name in declared)
    ctx.em.init.append(f"# {why} of {module[5:]} stored ({' '.join(stored)}), the order SDPA {'reads' if dim == 0 else 'writes'};"
                       f" its state_dict keeps the declared ({' '.join(declared)})")
    for hook, source, order in (("register_state_dict_post_hook", stored, to_declared),
                                ("register_load_state_dict_pre_hook", declared, to_stored)):
        sizes = tuple(size[name] for name in source)
        permuted = f"state[prefix + n].unflatten({dim}, {sizes})"
        permuted = (f"{permuted}.transpose({dim}, {dim + 1})" if n == 2 else
                    f"torch.movedim({permuted}, {tuple(i + dim for i in order)}, {tuple(range(dim, dim + n))})")
        ctx.em.init.append(f"{module}.{hook}(lambda module, state, prefix, *_: state.update("
                           f"{{prefix + n: {permuted}.flatten({dim}, {dim + n - 1}) for n in {params!r} if prefix + n in state}}))")
    return to_stored, to_declared


def _stored_rows(ctx: RuleContext, prim: LinearOp, module: str, call: Expr, stored: tuple[str, ...]) -> Expr:
    """The map's output seen in its declared axis order, its weight's rows stored in the ``stored`` order
    (:func:`ncd.prims.patterns.chosen_rows`); state_dict hooks keep checkpoints in the declared order."""
    _, to_declared = _keep_declared(ctx, module, prim.cod_axes, stored, 0, ("weight", "bias"), "rows")
    n = len(stored)
    size = dict(zip([a.name for a in prim.cod_axes], _sizes(prim.cod_axes)))
    view = ctx.method(call, "unflatten", -1, tuple(size[name] for name in stored))
    if n == 2:
        return ctx.method(view, "transpose", -1, -2)
    return ctx.call("torch.movedim", view, tuple(i - n for i in to_declared), tuple(range(-n, 0)))


def _stored_columns(ctx: RuleContext, prim: LinearOp, module: str, x: Value | Expr, stored: tuple[str, ...]) -> Expr:
    """The map's input seen in the ``stored`` order of its weight's columns (:func:`ncd.prims.patterns.chosen_columns`);
    state_dict hooks keep checkpoints in the declared order."""
    to_stored, _ = _keep_declared(ctx, module, prim.dom_axes, stored, 1, ("weight",), "columns")
    n = len(stored)
    if n == 2:
        return ctx.method(x, "transpose", -1, -2)
    return ctx.call("torch.movedim", x, tuple(i - n for i in to_stored), tuple(range(-n, 0)))
