"""The converter's side of the numbers a model computes from its inputs' shapes (:mod:`ncd.trace.shapes` records
them): a recorded expression tree read as a size expression of the diagram's symbols (``*1/b``, ``t**-0.5``), a scale
factor matched to one, and the calls whose arguments hold traced sizes no box follows (the diagram's ``fixed`` boxes:
lowering at other values of those sizes is refused, naming the call).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import sympy
import torch

from ncd.ir.size import symbol

if TYPE_CHECKING:
    from ncd.trace.shapes import Tree

__all__ = ["expression", "factor_of", "check_node", "fixed_boxes"]


_UNKNOWN = sympy.Symbol("?")  # an atom whose wire cannot be named: the expression may hold any size


def _symbolized(conv: Any) -> dict[str, int]:
    """The traced sizes of the inputs' ``b`` and ``t`` wires (the sizes :func:`ncd.trace.symbolic.symbolize` makes
    symbols), read once per conversion."""
    sizes: dict[str, int] | None = conv.__dict__.get("_symbolized")
    if sizes is None:
        sizes = {}
        for vid in conv.inputs:
            for a in conv.segs[vid].axes:
                if a.name in ("b", "t") and not a.size.free_symbols:
                    sizes.setdefault(a.name, int(a.size))
        conv.__dict__["_symbolized"] = sizes
    return sizes


def _atom(conv: Any, node: Any, dim: int) -> sympy.Expr:
    import re

    from ncd.trace.idioms import size_constant

    vid = conv.values.get(id(node))
    value = node.value
    if vid is None and (source := _picked_from(node, dim)) is not None:  # ``len(ids[0])``: ids[0] drawn nowhere
        return _atom(conv, *source)
    if vid is None or not isinstance(value, torch.Tensor) or len(conv.segs[vid].axes) != value.dim():
        return _UNKNOWN
    axis = conv.segs[vid].axes[dim]
    if axis.size.free_symbols:
        return _UNKNOWN
    base = axis.name.rstrip("ʹ")
    sizes = _symbolized(conv)
    if sizes.get(base) == int(axis.size):
        s = size_constant(conv, base)
        return s if s is not None else sympy.Integer(int(axis.size))
    if set(re.findall(r"[^\W\d]\w*", axis.name)) & set(sizes):  # a wire merging b or t under another name
        return _UNKNOWN
    return sympy.Integer(int(axis.size))


def _picked_from(node: Any, dim: int) -> tuple[Any, int] | None:
    """The recorded tensor and dimension whose size dimension ``dim`` of ``node`` is, when ``node`` is a pick of it
    that keeps that dimension whole (``ids[0]``: ``select``, a dimension fewer; a ``slice`` along another dimension)
    and no wire draws ``node`` itself (a value only measured: ``len(ids[0])``).  ``None`` otherwise."""
    target = str(getattr(node, "target", ""))
    if getattr(node, "kind", "") != "call" or target not in ("aten.select.int", "aten.slice.Tensor") or not node.args:
        return None
    source, value = node.args[0], node.value
    if not isinstance(value, torch.Tensor) or not isinstance(getattr(source, "value", None), torch.Tensor):
        return None
    n = source.value.dim()
    at = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if type(at) is not int or not -n <= at < n or not 0 <= dim < value.dim():
        return None
    at %= n
    if target == "aten.select.int":
        mapped = dim if dim < at else dim + 1
    elif dim == at:  # the sliced dimension itself: its size is the slice's, not the source's
        return None
    else:
        mapped = dim
    return (source, mapped) if source.value.shape[mapped] == value.shape[dim] else None


def _number(value: Any) -> sympy.Expr:
    """A number the model wrote: ``-0.5`` is ``-1/2`` (so ``t**(-1/2)`` reads as a root), a long float stays one."""
    if isinstance(value, float):
        if value.is_integer():
            return sympy.Integer(int(value))
        text = repr(value)
        return sympy.Rational(text) if len(text) <= 8 else sympy.Float(value)
    return sympy.Integer(value)


def expression(conv: Any, tree: Tree) -> sympy.Expr:
    """``tree`` as an expression of the diagram's size symbols (``b``, ``t``; ``?`` where a wire cannot be named)."""
    head = tree[0]
    if head == "atom":
        return _atom(conv, tree[1], tree[2])
    if head == "num":
        return _number(tree[1])
    if head == "neg":
        return -expression(conv, tree[1])
    a, b = expression(conv, tree[1]), expression(conv, tree[2])
    if head == "add":
        return a + b
    if head == "sub":
        return a - b
    if head == "mul":
        return a * b
    if head == "truediv":
        return a / b
    if head == "pow":
        return a ** b
    # a size's symbol, an unknown wire or minus either, by a whole number > 1: sympy's eval leaves floor(-t/64) and
    # Mod(-t, 64) as they are, at 6-9 ms per new pair on a first call (its assumptions' queries); built without it
    plain = b.is_Integer and b > 1 and _signed_atom(a)
    if head == "floordiv":
        return sympy.floor(a / b, evaluate=not plain)
    return sympy.Mod(a, b, evaluate=not plain) if plain else _padding(a, b)


def _padding(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """``a mod b``, evaluated as sympy does; the padding of a size to a whole number of chunks,
    ``(q − t mod q) mod q`` (Mamba-2's and the chunked delta rule's ``pad_size``), built as the ``(−t) mod q``
    sympy's eval makes of it without that eval (6-13 ms of its assumptions' queries per new ``q`` on a first call:
    zamba2's trace)."""
    if b.is_Integer and b > 1 and a.is_Add and len(a.free_symbols) == 1:
        (t,) = a.free_symbols
        if t == symbol(t.name) and a == b - sympy.Mod(t, b, evaluate=False):
            return sympy.Mod(-t, b, evaluate=False)
    return sympy.Mod(a, b)


def _signed_atom(a: sympy.Expr) -> bool:
    """Whether ``a`` is a size's symbol (``t``), the unknown wire (``?``) or minus one of them (``-t``: a padding to a
    multiple, ``-t % 64``), whose ``Mod`` and ``floor`` by a whole number > 1 sympy's eval leaves as they are."""
    if a.is_Mul and len(a.args) == 2 and a.args[0] == -1:
        a = a.args[1]
    return bool(a.is_Symbol and (a == _UNKNOWN or a == symbol(a.name)))


def _numbers_only(conv: Any, tree: Tree) -> bool:
    """Whether every wire ``tree`` reads is a number (no symbol, no unknown): its expression follows no size, and is
    not built (``8 ** -0.5`` costs sympy 0.5-1.3 ms per new head width on a first call, to be dropped)."""
    head = tree[0]
    if head == "atom":
        return _atom(conv, tree[1], tree[2]).is_Integer  # type: ignore[no-any-return]
    if head == "num":
        return True
    return all(_numbers_only(conv, part) for part in tree[1:])


def _follows(conv: Any, expr: sympy.Expr) -> set[str]:
    """The symbolized sizes (``b``, ``t``) an expression depends on (all of them for an unknown wire)."""
    sizes = _symbolized(conv)
    names = {str(s) for s in expr.free_symbols}
    if "?" in names:
        return set(sizes)
    return names & set(sizes)


def factor_of(conv: Any, factor: float) -> sympy.Expr | None:
    """The expression of sizes a scale ``factor`` of the call being converted is (or is one over), where the model
    computed it from the symbolized sizes; None otherwise (the number is drawn as before)."""
    node = conv.current
    sized = getattr(node, "sized", None)
    if not sized:
        return None
    for key, tree in sized.items():
        value = node.args[key] if isinstance(key, int) else node.kwargs.get(key)
        if not isinstance(value, (int, float)) or value == 0:
            continue
        if math.isclose(factor, value, rel_tol=1e-12, abs_tol=0.0):
            power = 1
        elif math.isclose(factor, 1 / value, rel_tol=1e-12, abs_tol=0.0):
            power = -1
        else:
            continue
        if _numbers_only(conv, tree):
            return None
        expr = expression(conv, tree)
        if "?" in {str(s) for s in expr.free_symbols} or not _follows(conv, expr):
            return None
        conv.__dict__.setdefault("_sized_done", set()).add((_op(node), key, expr))
        result: sympy.Expr = expr ** power
        return result
    return None


def _op(node: Any) -> str:
    from ncd.trace.registry import op_name

    return op_name(node.target)[1]


def check_node(conv: Any, node: Any) -> None:
    """After the walk: a live call's argument computed from the symbolized sizes that no box draws as their
    expression holds the traced sizes (a ``fixed`` entry naming the call and the sizes)."""
    from ncd.trace.registry import where

    done = conv.__dict__.get("_sized_done", set())
    for key, tree in (node.sized or {}).items():
        if _numbers_only(conv, tree) or id(node) in conv.sized_drawn:
            continue  # (its rule drew them as the sizes: a pad to a length, ncd.trace.boxes.pad; a whole slice)
        expr = expression(conv, tree)
        held = _follows(conv, expr)
        if not held or (_op(node), key, expr) in done or expr.is_Symbol and "slice" in _op(node):
            continue  # (``x[:, :t]``: a slice to a size the symbolized diagram names as that size)
        whole, item = key if type(key) is tuple else (key, None)  # a pad's amount: (argument, index in its list)
        value = node.args[whole] if isinstance(whole, int) else node.kwargs.get(whole)
        value = value[item] if item is not None else value
        what = f"argument {whole}" if isinstance(whole, int) else whole
        what = f"{what}[{item}]" if item is not None else what
        conv.__dict__.setdefault("_size_fixed", []).append(
            (tuple(sorted(held)), f"{_op(node)} {where(node)}: its {what} {value:g} = {expr} was computed in Python"
                                  " from the input's shape"))


#: how a ``fixed`` entry of a ``len(x)`` starts saying what the model did: the traced diagram holding its model lowers at
#: another value of that size when the model run there agrees (:meth:`TracedDiagram._lowered`), a read-back refuses it
LEN_HELD = "a plain int ("
#: how a ``fixed`` entry of a size turned into a float (``math.sqrt(t)``) says it: checked by running the model as a
#: ``len(x)`` is (a clipped scale, ``min(math.sqrt(t), 2.0)``, lowers where it agrees; a scale by it differs, refused)
FLOAT_HELD = "a Python float (math.sqrt, float())"


def fixed_boxes(conv: Any, escaped: list[tuple[Any, ...]]) -> list[tuple[tuple[str, ...], str]]:
    """The ``fixed`` entries of the arguments no box follows, and of sizes turned into floats (``math.sqrt(t)``) or
    plain ints (``len(x)``)."""
    for node in conv.captured.nodes:
        if getattr(node, "sized", None):
            check_node(conv, node)
    out = list(conv.__dict__.get("_size_fixed", []))
    from ncd.trace.size_guards import Compared

    for entry in escaped:
        if isinstance(entry, Compared):  # a branch on a size: a guard (ncd.trace.size_guards.guards_of)
            continue
        tree, line, *how = entry
        if _numbers_only(conv, tree):
            continue
        expr = expression(conv, tree)
        held = _follows(conv, expr)
        if held:
            into = f"a plain int ({how[0]})" if how else FLOAT_HELD
            size = "a size of a tensor" if "?" in {str(s) for s in expr.free_symbols} else f"the size {expr}"
            out.append((tuple(sorted(held)), f"at {line} the model turned {size} into {into}: what it computes from"
                                             " it is not followed"))
    return out
