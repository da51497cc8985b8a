"""Pattern fusion during lowering: softmax-then-contract attention -> ``F.scaled_dot_product_attention``.

The code generator calls :func:`match_attention` at every position of every sequential
composition.  It recognises the attention pattern built from primitives, in the paper's
wiring::

    (Einsum("y k h, x k h -> y x h") >> Scale(c) >> [CausalMask | PaddingMask] >> Softmax("x") >> [Dropout(p)])
        @ Identity("x k h")
    >> Einsum("y x h, x k h -> y k h")

with any axis names and any woven (broadcast) axes, possibly spread over several parts each
of the form ``scores-part @ Identity(V)``.  Every box is checked *by axis name* on the full
(woven) types: the first einsum must contract only axes shared by Q and K, the softmax must
run over the single key axis ``x`` (present in K, absent from Q), the second einsum must
contract exactly ``x`` against V, and masks must act on the query/key axes.  Axes in both
Q and K become SDPA's batch dimensions, Q-only axes its query length ``L`` (bound together
if several, so a K shared across heads — multi-query attention — fuses too), contracted
axes its ``E`` and V-only axes its ``Ev``; the code permutes and reshapes with negative
dimensions, so extra leading batch dimensions pass through.  Anything else returns
``None`` and the boxes are lowered one by one.

Exactly the same function is computed, with two documented differences: dropout draws its
random mask inside SDPA (same distribution, different random numbers than ``nn.Dropout``),
and a query whose keys are *all* masked gets zeros from SDPA where the unfused softmax
gives NaN.  Use :func:`disabled` to lower without fusion (for comparison).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, unweave
from ncd.ir.size import evaluate
from ncd.prims.attention import CausalMaskOp, PaddingMaskOp
from ncd.prims.elementwise import ScaleOp
from ncd.prims.linear import EinsumOp
from ncd.prims.regularization import DropoutOp
from ncd.prims.softmax import SoftmaxOp

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter, Codegen
    from ncd.torch.rules import Value

__all__ = ["match_attention", "disabled", "ENABLED"]

Emit = Callable[["Codegen", "ClassEmitter", "list[Value]"], "list[Value]"]

#: Set to False (or use :func:`disabled`) to lower attention box by box.
ENABLED = True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Lower without attention fusion inside this ``with`` block."""
    global ENABLED
    before, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = before


def _chain(d: Diagram) -> list[Box] | None:
    """The boxes acting on the scores, in order, if ``d`` is a plain chain (mask wires may run beside)."""
    d = unweave(d)[0]
    if isinstance(d, Box):
        return [d]
    if isinstance(d, Seq):
        boxes: list[Box] = []
        for part in d.parts:
            inner = _chain(part)
            if inner is None:
                return None
            boxes += inner
        return boxes
    if isinstance(d, Par) and len(d.parts) == 2 and _is_wire(d.parts[1], "bool"):
        return _chain(d.parts[0])
    return None


def _is_wire(d: Diagram, dtype: str) -> bool:
    d = unweave(d)[0]
    return isinstance(d, Identity) and len(d.type) == 1 and d.type[0].dtype == dtype


@dataclass
class Attention:
    """A recognised attention pattern, by axis name."""

    q: list[str]
    k: list[str]
    v: list[str]
    mask: list[str] | None
    out: list[str]
    batch: list[str]
    query: list[str]
    key: str
    contracted: list[str]
    value: list[str]
    scale: float
    causal: bool
    dropout: float
    sizes: dict[str, int]
    out_axes: tuple


def _unique(names: tuple[str, ...]) -> bool:
    return len(set(names)) == len(names)


def _recognise(parts: list[Diagram], k: int) -> tuple[int, Attention] | None:
    run: list[Diagram] = []
    boxes: list[Box] = []
    i = k
    while i < len(parts):
        inner = unweave(parts[i])[0]
        if not (isinstance(inner, Par) and len(inner.parts) == 2 and _is_wire(inner.parts[1], "float")):
            break
        chain = _chain(inner.parts[0])
        if chain is None:
            break
        run.append(parts[i])
        boxes += chain
        i += 1
    if not run or i >= len(parts):
        return None
    final = unweave(parts[i])[0]
    if not (isinstance(final, Box) and isinstance(final.prim, EinsumOp) and len(final.prim.inputs) == 2):
        return None
    # -- the chain: einsum, scales and masks, softmax, optional dropout ------------------------
    if not boxes or not isinstance(boxes[0].prim, EinsumOp) or len(boxes[0].prim.inputs) != 2:
        return None
    scale, causal, padding, masked, softmax, dropout = 1.0, None, None, False, None, None
    for box in boxes[1:]:
        prim = box.prim
        if softmax is None and isinstance(prim, ScaleOp):
            if prim.factor.free_symbols:
                return None
            factor = float(prim.factor)
            if masked and factor <= 0:
                return None
            scale *= factor
        elif softmax is None and isinstance(prim, CausalMaskOp) and causal is None:
            causal, masked = prim, True
        elif softmax is None and isinstance(prim, PaddingMaskOp) and padding is None:
            padding, masked = prim, True
        elif softmax is None and isinstance(prim, SoftmaxOp) and not prim.log:
            softmax = prim
        elif softmax is not None and isinstance(prim, DropoutOp) and dropout is None:
            dropout = prim.p
        else:
            return None
    if softmax is None:
        return None
    # -- names on the full (woven) types -------------------------------------------------------
    first, last = run[0], run[-1]
    n_in = 4 if padding is not None else 3
    if len(first.dom) != n_in or any(len(p.cod) != 2 for p in run):
        return None
    q, kk, v = first.dom[0].names, first.dom[1].names, first.dom[-1].names
    mask = first.dom[2].names if padding is not None else None
    if padding is not None and first.dom[2].dtype != "bool":
        return None
    scores = last.cod[0].names
    out = parts[i].cod[0].names
    if not all(_unique(n) for n in (q, kk, v, scores, out) + ((mask,) if mask else ())):
        return None
    contracted = set(boxes[0].prim.contracted)  # type: ignore[attr-defined]
    if not contracted <= set(q) & set(kk) or (set(q) | set(kk)) - contracted != set(scores):
        return None
    if any(set(p.cod[0].names) != set(scores) or p.cod[1].names != v for p in run):
        return None
    if parts[i].dom[0].names != scores or parts[i].dom[1].names != v:
        return None
    key = softmax.axis.name
    if key not in kk or key in q or set(kk) - set(q) - contracted != {key}:
        return None
    batch = [n for n in out if n in scores and n in q and n in kk]
    query = [n for n in out if n in scores and n in q and n not in kk]
    if not query or set(batch) | set(query) | {key} != set(scores):
        return None
    if causal is not None and (query != [causal.query.name] or causal.key.name != key):
        return None
    if padding is not None and (padding.key.name != key or key not in mask or not set(mask) <= set(scores)):  # type: ignore[operator]
        return None
    if set(final.prim.contracted) != {key} or key not in v:  # type: ignore[attr-defined]
        return None
    value = [n for n in out if n in v and n not in scores]
    if not value or not (set(v) - {key} - set(value)) <= set(batch) or set(out) != set(batch) | set(query) | set(value):
        return None
    sizes: dict[str, int] = {}
    for seg in list(first.dom) + list(parts[i].cod):
        for a in seg:
            if a.size.free_symbols:
                return None
            sizes[a.name] = evaluate(a.size, what=f"axis {a.name}")
    found = Attention(
        list(q), list(kk), list(v), list(mask) if mask else None, list(out), batch, query, key,
        [n for n in q if n in contracted], value, scale, causal is not None, dropout or 0.0, sizes, parts[i].cod[0].axes,
    )
    return i + 1 - k, found


def match_attention(parts: list[Diagram], k: int) -> tuple[int, Emit] | None:
    """If ``parts[k:]`` starts with an attention pattern, its length and emitter."""
    if not ENABLED:
        return None
    found = _recognise(parts, k)
    if found is None:
        return None
    length, attention = found

    def emit(gen: Codegen, em: ClassEmitter, values: list[Value]) -> list[Value]:
        return _emit(attention, em, values)

    return length, emit


# -- code ---------------------------------------------------------------------------------------
def _assign(em: ClassEmitter, hint: str, expr: str, layout: list[str]) -> str:
    name = em.fresh(hint)
    em.line(f"{name} = {expr}  # {' '.join(layout)}")
    return name


def _arrange(em: ClassEmitter, var: str, have: list[str], target: list[str], hint: str) -> str:
    """Permute the trailing axes ``have`` into the order of ``target``; size-1 axes where ``have`` lacks one."""
    n = len(have)
    order = [t for t in target if t in have]
    src = tuple(have.index(t) - n for t in order)
    dst = tuple(range(-n, 0))
    expr = var
    if src != dst:
        expr = f"torch.movedim({expr}, {src}, {dst})"
    if len(order) != len(target):
        expr += "[..., " + ", ".join(":" if t in have else "None" for t in target) + "]"
    if expr == var:
        return var
    return _assign(em, hint, expr, target)


def _group(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "(" + " ".join(names) + ")"


def _emit(a: Attention, em: ClassEmitter, values: list[Value]) -> list[Value]:
    from ncd.torch.rules import Value

    q, k = values[0].var, values[1].var
    v = values[-1].var
    sizes = a.sizes
    em.line(f"# attention fused into SDPA: batch ({' '.join(a.batch)}), queries ({' '.join(a.query)}), keys {a.key},"
            f" contracted ({' '.join(a.contracted)}), values ({' '.join(a.value)})")
    q = _arrange(em, q, a.q, a.batch + a.query + a.contracted, "q")
    k = _arrange(em, k, a.k, a.batch + [a.key] + a.contracted, "k")
    v = _arrange(em, v, a.v, a.batch + [a.key] + a.value, "v")
    nc, nq, nv = len(a.contracted), len(a.query), len(a.value)
    contracted, queries, values_ = _group(a.contracted), _group(a.query), _group(a.value)
    if nc > 1:
        q = _assign(em, "q", f"{q}.flatten({-nc})", a.batch + a.query + [contracted])
        k = _assign(em, "k", f"{k}.flatten({-nc})", a.batch + [a.key, contracted])
    if nq > 1:
        q = _assign(em, "q", f"{q}.flatten({-nq - 1}, -2)", a.batch + [queries, contracted])
    if nv > 1:
        v = _assign(em, "v", f"{v}.flatten({-nv})", a.batch + [a.key, values_])
    options = []
    if a.mask is not None:
        m = _arrange(em, values[2].var, a.mask, a.batch + a.query + [a.key], "attn_mask")
        missing = [n for n in a.query if n not in a.mask]
        if nq > 1:
            if missing:
                width = len(a.batch) + nq + 1
                shape = [str(sizes[n]) if n in missing else "-1" for n in a.batch + a.query + [a.key]]
                m = _assign(em, "attn_mask", f"{m}.expand(*{m}.shape[:-{width}], {', '.join(shape)})",
                            a.batch + a.query + [a.key])
            m = _assign(em, "attn_mask", f"{m}.flatten({-nq - 1}, -2)", a.batch + [queries, a.key])
        if a.causal:
            rows, cols = sizes[a.query[0]], sizes[a.key]
            m = _assign(em, "attn_mask", f"{m} & torch.ones({rows}, {cols}, dtype=torch.bool, device={m}.device).tril()",
                        a.batch + [queries, a.key])
        options.append(f"attn_mask={m}")
    if a.dropout:
        options.append(f"dropout_p={a.dropout!r} if self.training else 0.0")
    if a.causal and a.mask is None:
        options.append("is_causal=True")
    options.append(f"scale={a.scale!r}")
    out = _assign(em, "attention", f"F.scaled_dot_product_attention({q}, {k}, {v}, {', '.join(options)})",
                  a.batch + [queries, values_])
    if nv > 1:
        out = _assign(em, "attention", f"{out}.unflatten(-1, {tuple(sizes[n] for n in a.value)})", a.batch + [queries] + a.value)
    if nq > 1:
        out = _assign(em, "attention", f"{out}.unflatten({-nv - 1}, {tuple(sizes[n] for n in a.query)})",
                      a.batch + a.query + a.value)
    have = a.batch + a.query + a.value
    out = _arrange(em, out, have, a.out, "attention")
    return [Value(out, a.out_axes, "float")]
