"""Unread values dropped from a lowered program: the generated forward computes nothing it does not read.

A diagram may compute values no wire carries on (a trace records ``h, c = lstm(x)`` and uses ``h`` only; a
maximum's positions beside its values; a reshape the model made and never read), and a multi-output primitive's
rule writes every output (``x.amax(d)`` lowers to an ``amax`` and an ``argmax``).  :func:`drop_unread` rewrites each
class of a lowered :class:`~ncd.ir.program.Program` backwards from what it returns: an op whose outputs nothing reads
is dropped when it is **pure** (no write, no random draw, no module or block call: see :func:`pure`), and the
unread outputs of a tuple assignment that stays are bound to ``_``.  An impure op stays as it is, read or not.

The drawing and the costs keep the diagram's boxes (the steps of :class:`~ncd.ir.program.Function` are untouched);
only the ops, what the source prints and ``to_torch`` runs, change.

>>> import ncd
>>> d = ncd.Identity.of("b t") >> ncd.TopK("t", 2, "k") >> (ncd.ReLU() @ ncd.Delete("k:2 [t]"))
>>> src = d.to_source(b=3, t=5)
>>> "torch.topk(" in src, "topk.values" in src, "topk.indices" in src
(True, True, False)
"""

from __future__ import annotations

import ast
import dataclasses

from ncd.ir.program import Function, Op, Program, Value
from ncd.torch.layouts_free import reads

__all__ = ["drop_unread", "pure"]

#: functions and tensor methods that only read their operands and draw nothing (a whitelist: anything else is kept)
PURE_CALLS = frozenset("""
    abs amax amin argmax argmin argsort broadcast_shapes cat clamp clone contiguous cumsum div einsum exp expand eye float
    flatten gather index_select int long matmul max mean min movedim mul narrow neg permute relu reshape rsqrt select
    sigmoid sort split sqrt square squeeze stack sub sum tanh to topk transpose unflatten unsqueeze view where
""".split())

#: expression nodes that evaluate without effects of their own (names, attributes, literals, arithmetic, indexing)
_PLAIN = (ast.Expression, ast.Name, ast.Load, ast.Attribute, ast.Constant, ast.Tuple, ast.List, ast.Subscript,
          ast.Slice, ast.Starred, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp, ast.keyword,
          ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def pure(code: str) -> bool:
    """Whether the Python expression ``code`` only reads: every call is one of :data:`PURE_CALLS` (as ``torch.f``,
    ``F.f`` or a tensor's method, never ``self.``'s), nothing is bound (no ``:=``, no lambda).

    >>> pure("torch.argmax(x, -1, keepdim=True)"), pure("topk.indices"), pure("x.reshape(*x.shape[:-2], 12)")
    (True, True, True)
    >>> pure("F.dropout(x, 0.1, self.training)"), pure("self.l(x)"), pure("x.add_(y)"), pure("(s := x.sum())")
    (False, False, False, False)
    """
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "slice":  # (an index written out: ``x[(..., slice(None))]``)
                continue
            if not isinstance(func, ast.Attribute) or func.attr not in PURE_CALLS:
                return False
            if isinstance(func.value, ast.Name) and func.value.id == "self":
                return False
        elif not isinstance(node, _PLAIN):
            return False
    return True


def _assigned(op: Op) -> tuple[str, str] | None:
    """``(name, expression)`` of a statement ``name = expression`` (a rule's line binding one local), else ``None``."""
    try:
        tree = ast.parse(op.code)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(stmt := tree.body[0], ast.Assign) or len(stmt.targets) != 1:
        return None
    target = stmt.targets[0]
    return (target.id, ast.unparse(stmt.value)) if isinstance(target, ast.Name) else None


def _unread_function(function: Function) -> None:
    live = {v.var for v in function.outputs} | {"self", "store"}
    kept: list[Op] = []
    for op in reversed(function.ops):
        if op.kind == "statement":
            bound = _assigned(op)
            if bound is not None and bound[0] not in live and pure(bound[1]):
                continue
            if bound is not None:
                live.discard(bound[0])
        elif op.kind != "loop" and op.outputs:
            names = {v.var for v in op.outputs}
            if not names & live:
                if op.kind in ("view", "alias", "einsum") or (op.kind in ("call", "expr") and pure(op.code)):
                    continue
            if not names <= live:  # an impure op nothing reads runs as a statement; a tuple binds the rest to ``_``
                op = dataclasses.replace(op, outputs=() if len(op.outputs) == 1 else tuple(
                    v if v.var in live else Value("_", v.axes, v.dtype) for v in op.outputs))
            live -= names
        live |= reads(op)
        kept.append(op)
    function.ops = kept[::-1]


def drop_unread(program: Program) -> None:
    """Drop from every class of ``program`` the pure ops whose outputs nothing reads, and bind the unread outputs of
    the tuple assignments that stay to ``_`` (the classes' steps, what costs read, are left as they are)."""
    for function in program.functions:
        _unread_function(function)
