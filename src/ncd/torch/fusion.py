"""Pattern fusion during lowering: softmax-then-contract attention -> ``F.scaled_dot_product_attention``.

The code generator calls :func:`match_attention` at every position of every sequential
composition; the pattern is recognised by :func:`ncd.prims.patterns.recognise_attention`
and written here as one SDPA call (codegen records it as a ``fused`` step of the program, the pattern
with it, which is what the cost analysis reads): the code
permutes and reshapes with negative dimensions, so extra leading batch dimensions pass through.

Exactly the same function is computed, with two documented differences: dropout draws its
random mask inside SDPA (same distribution, different random numbers than ``nn.Dropout``),
and a query whose keys are *all* masked gets zeros from SDPA where the unfused softmax
gives NaN.  Use :func:`disabled` to lower without fusion (for comparison).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import sympy

from ncd.ir.axes import Axis
from ncd.ir.diagram import Diagram
from ncd.ir.program import OpKind
from ncd.ir.size import evaluate, symbolic_lowering, symbolic_text
from ncd.prims.patterns import Attention, disabled, packs, recognise_attention
from ncd.prims.patterns import chosen_columns as _chosen_columns
from ncd.prims.patterns import chosen_rows as _chosen_rows

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter, Codegen
    from ncd.torch.rules import Value

__all__ = ["match_attention", "disabled", "inherited_layouts", "chosen_rows", "chosen_columns"]

#: whether SDPA operands whose last axis an arrangement moves are packed densely (:func:`ncd.prims.patterns.packs`)
LAYOUTS_CHOSEN = True


@contextlib.contextmanager
def inherited_layouts() -> Iterator[None]:
    """Lower with the operands' inherited (strided) layouts, for comparison (``benchmarks/bench_lowering.py``).

    Costs are computed for the chosen layouts; use this only to measure the difference.
    """
    global LAYOUTS_CHOSEN
    before, LAYOUTS_CHOSEN = LAYOUTS_CHOSEN, False
    try:
        yield
    finally:
        LAYOUTS_CHOSEN = before

def chosen_rows(parts: Sequence[Diagram], k: int) -> dict[int, tuple[str, ...]]:
    """The row orders chosen for the learned maps of ``parts[k]`` (none under :func:`inherited_layouts`)."""
    return _chosen_rows(parts, k) if LAYOUTS_CHOSEN else {}


def chosen_columns(parts: Sequence[Diagram], k: int) -> dict[int, tuple[str, ...]]:
    """The column order chosen for the learned map ``parts[k]`` (none under :func:`inherited_layouts`)."""
    return _chosen_columns(parts, k) if LAYOUTS_CHOSEN else {}


Emit = Callable[["Codegen", "ClassEmitter", "list[Value]"], "list[Value]"]


def match_attention(parts: Sequence[Diagram], k: int) -> tuple[int, Emit, Attention] | None:
    """If ``parts[k:]`` starts with an attention pattern, its length, emitter and the pattern."""
    found = recognise_attention(parts, k)
    if found is None:
        return None
    length, attention = found

    def emit(gen: Codegen, em: ClassEmitter, values: list[Value]) -> list[Value]:
        return _emit(attention, em, values)

    return length, emit, attention


# -- code ---------------------------------------------------------------------------------------
def _assign(em: ClassEmitter, hint: str, expr: str, layout: list[str], sizes: dict[str, sympy.Expr],
            kind: OpKind = "view", dtype: str = "float") -> str:
    """Bind ``expr`` (axes ``layout``, grouped ones written ``(y x)``) as an op of the program."""
    return em.assign(hint, expr, tuple(_axis(n, sizes) for n in layout), dtype, comment=f"# {' '.join(layout)}",
                     kind=kind)


def _axis(name: str, sizes: dict[str, sympy.Expr]) -> Axis:
    if not name.startswith("("):
        return Axis(name, sizes[name])
    parts = tuple(Axis(n, sizes[n]) for n in name[1:-1].split())
    return Axis(name, sympy.Mul(*(p.size for p in parts)), parts=parts)


def _arrange(em: ClassEmitter, var: str, have: list[str], target: list[str], hint: str,
             sizes: dict[str, sympy.Expr], dtype: str = "float", pack: bool = False, stored: list[str] | None = None,
             given: bool = False) -> str:
    """Permute the trailing axes ``have`` (stored in the order ``stored``, by default ``have``) into the order of
    ``target``; size-1 axes where ``have`` lacks one.  ``given``: the operand is an input of the generated class,
    stored as its caller made it, so once its axes are moved it is packed only if its last dimension is strided."""
    n = len(have)
    order = [t for t in target if t in have]
    src = tuple(have.index(t) - n for t in order)
    dst = tuple(range(-n, 0))
    expr = var
    if src != dst:
        expr = f"torch.movedim({expr}, {src}, {dst})"
    if len(order) != len(target):
        expr += "[..., " + ", ".join(":" if t in have else "None" for t in target) + "]"
    if pack and LAYOUTS_CHOSEN and given and stored is None and src != dst:  # moved in the caller's layout:
        if expr != var:  # pack only a strided last dim
            expr = _assign(em, hint, expr, target, sizes, dtype=dtype)
        return _assign(em, hint, f"{expr} if {expr}.stride(-1) == 1 else {expr}.contiguous()", target, sizes,
                       dtype=dtype, kind="expr")
    if pack and LAYOUTS_CHOSEN and packs(have if stored is None else stored, target):  # SDPA reads a dense last dim
        expr += ".contiguous()"
    if expr == var:
        return var
    return _assign(em, hint, expr, target, sizes, dtype=dtype)


def _group(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "(" + " ".join(names) + ")"


def _emit(a: Attention, em: ClassEmitter, values: list[Value]) -> list[Value]:
    from ncd.torch.rules import Value

    q, k = values[0].var, values[1].var
    v = values[-1].var
    sizes = {name: evaluate(value, what=f'axis {name}') for name, value in a.sizes.items()}
    known = a.sizes
    em.line(f"# attention fused into SDPA: batch ({' '.join(a.batch)}), queries ({' '.join(a.query)}), keys {a.key},"
            f" contracted ({' '.join(a.contracted)}), values ({' '.join(a.value)})")
    given = {v.var for v in em.function.inputs}
    q, k, v = (_arrange(em, var, have, target, hint, known, pack=True, stored=a.stored.get(j), given=var in given)
               for var, hint, (j, have, target) in zip((q, k, v), "qkv", a.operands()))
    nc, nq, nv = len(a.contracted), len(a.query), len(a.value)
    contracted, queries, values_ = _group(a.contracted), _group(a.query), _group(a.value)
    if nc > 1:
        q = _assign(em, "q", f"{q}.flatten({-nc})", a.batch + a.query + [contracted], known)
        k = _assign(em, "k", f"{k}.flatten({-nc})", a.batch + [a.key, contracted], known)
    if nq > 1:
        q = _assign(em, "q", f"{q}.flatten({-nq - 1}, -2)", a.batch + [queries, contracted], known)
    if nv > 1:
        v = _assign(em, "v", f"{v}.flatten({-nv})", a.batch + [a.key, values_], known)
    options = []
    if a.mask is not None:
        m = _arrange(em, values[2].var, a.mask, a.batch + a.query + [a.key], "attn_mask", known, "bool")
        missing = [n for n in a.query if n not in a.mask]
        if nq > 1:
            if missing:
                width = len(a.batch) + nq + 1
                shape = [str(sizes[n]) if n in missing else "-1" for n in a.batch + a.query + [a.key]]
                m = _assign(em, "attn_mask", f"{m}.expand(*{m}.shape[:-{width}], {', '.join(shape)})",
                            a.batch + a.query + [a.key], known, dtype="bool")
            m = _assign(em, "attn_mask", f"{m}.flatten({-nq - 1}, -2)", a.batch + [queries, a.key], known, dtype="bool")
        if a.causal:
            rows, cols = sizes[a.query[0]], sizes[a.key]
            m = _assign(em, "attn_mask", f"{m} & torch.ones({rows}, {cols}, dtype=torch.bool, device={m}.device).tril()",
                        a.batch + [queries, a.key], known, dtype="bool")
        options.append(f"attn_mask={m}")
    if a.dropout:
        options.append(f"dropout_p={a.dropout!r} if self.training else 0.0")
    if a.causal and a.mask is None:
        options.append("is_causal=True")
    options.append(f"scale={float(a.scale)!r}" if not (a.scale.free_symbols and symbolic_lowering())
                   else f"scale={symbolic_text(a.scale)}")
    out = _assign(em, "attention", f"F.scaled_dot_product_attention({q}, {k}, {v}, {', '.join(options)})",
                  a.batch + [queries, values_], known, kind="call")
    if nv > 1:
        out = _assign(em, "attention", f"{out}.unflatten(-1, {tuple(sizes[n] for n in a.value)})",
                      a.batch + [queries] + a.value, known)
    if nq > 1:
        out = _assign(em, "attention", f"{out}.unflatten({-nv - 1}, {tuple(sizes[n] for n in a.query)})",
                      a.batch + a.query + a.value, known)
    have = a.batch + a.query + a.value
    out = _arrange(em, out, have, a.out, "attention", known)
    return [Value(out, a.out_axes, "float")]
