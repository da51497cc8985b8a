"""Attention fusion as a rewrite of the lowered program: softmax-then-contract -> ``F.scaled_dot_product_attention``.

Lowering writes every box as its own op (:class:`~ncd.ir.program.Step` by step).  :func:`fuse_attention` is
the rewrite: when a step that may close the pattern is recorded (an einsum of two operands), it follows the
program's dataflow back through the steps — the values each step reads, by identity — to the score einsum::

    scores = einsum(q, k) → scale … → [causal / padding mask] → softmax → [dropout] → einsum(scores, v)

or, under a float mask ``m`` (SDPA's ``attn_mask``: T5's position bias), ``… scale … → + m → padding mask (m > -inf)
→ softmax …`` (the sum lowered with its woven axes moved in front and back, the comparison too, and the crossings
the values pass through are read past: ``_unframe``, ``_through``; the crossings keep their other wires),

checks the axes by name on each step's full (woven) types (:func:`ncd.prims.patterns.attention_of`, the same
check a diagram's reading makes), and replaces those steps, their ops and anything they declared (a dropout
module) by one ``fused`` step whose ops call SDPA.  Every value between the two einsums must be read by the next
step of the chain only, so removing them changes nothing else.  The rewrite reads no diagram: ``to_source``,
``to_torch`` and ``ncd.cost`` all see the rewritten program.  It runs as each step is recorded so that the
locals keep the names they would have had, had the steps never been written.  The code permutes and
reshapes with negative dimensions, so extra leading batch dimensions pass through.

Exactly the same function is computed, with three documented differences: dropout draws its
random mask inside SDPA (same distribution, different random numbers than ``nn.Dropout``),
a query whose keys are *all* masked gets zeros from SDPA where the unfused softmax
gives NaN, and in bfloat16/float16 SDPA keeps the scores and the softmax in float32 where the
unfused steps round each to the half type (a traced ``softmax(q @ k.T) @ v`` in bfloat16: one
bfloat16 step off the model on ~25 % of the entries; unfused, bit-equal).  Use :func:`disabled` to
lower without fusion (for comparison, or to round as such a model does).

>>> import ncd
>>> scores = ncd.Einsum("y k, x k -> y x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
>>> d = (scores @ ncd.Identity.of("x k")) >> ncd.Einsum("y x, x k -> y k")
>>> from ncd.torch.codegen import to_program
>>> [s.kind for s in to_program(d, y=3, x=5, k=4).top.steps]
['enter', 'fused', 'exit']
>>> with disabled():
...     [s.box.prim.op for s in to_program(d, y=3, x=5, k=4).top.steps if s.kind == "box"]
['einsum', 'scale', 'softmax', 'einsum']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import sympy

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.program import Expr, Op, OpKind, Program, Step, Value, size_code
from ncd.ir.size import evaluate, symbolic_lowering, symbolic_text
from ncd.prims import patterns
from ncd.prims.attention import CausalMaskOp, PaddingMaskOp
from ncd.prims.elementwise import ScaleOp
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.patterns import Attention, attention_of, disabled, packs
from ncd.prims.patterns import chosen_columns as _chosen_columns
from ncd.prims.patterns import chosen_rows as _chosen_rows
from ncd.prims.regularization import DropoutOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp
from ncd.torch.fusion_steps import _finite_of, _full, _producer, _scores_side, _through, _uncrossed, _unframe

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter, Codegen

__all__ = ["fuse_attention", "fused_scale", "disabled", "inherited_layouts", "chosen_rows", "chosen_columns"]

#: whether SDPA operands whose last axis an arrangement moves are packed densely (:func:`ncd.prims.patterns.packs`)
LAYOUTS_CHOSEN = True

#: per lowering (its :class:`~ncd.torch.codegen.Codegen`), the producer index of every step list searched


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


# -- the rewrite on the program's steps --------------------------------------------------------------
_CHAIN = (ScaleOp, CausalMaskOp, PaddingMaskOp, SoftmaxOp, DropoutOp)


def fuse_attention(gen: Codegen, em: ClassEmitter) -> list[Value] | None:
    """Rewrite the attention the last recorded step closes, if any (see the module's docstring): the steps and
    ops of the pattern are replaced by one ``fused`` step calling SDPA; returns its outputs, else ``None``."""
    steps = em.function.steps
    end = len(steps) - 1
    last = steps[end]
    if not patterns.ENABLED or last.kind != "box" or last.box is None or last.inner:
        return None
    if not isinstance(last.box.prim, EinsumOp) or len(last.box.prim.inputs) != 2 or len(last.inputs) != 2:
        return None
    chain: list[int] = []  # the steps from the softmax side back to the score einsum
    mask: Value | None = None
    mask_seg: Segment | None = None
    bias: Value | None = None  # a float mask added to the scores (SDPA's float attn_mask: T5's position bias)
    bias_seg: Segment | None = None
    crossings: list[int] = []  # crossings of wires the chain's values pass through (no op: their other wires stay)
    passed: list[int] = []  # the woven axes moved in front of a sum with the bias and back (views: SDPA broadcasts)
    fulls: dict[int, tuple[Box, Type, Type, tuple[Value, ...]]] = {}  # such a sum: its full types and inputs
    implied = padded = -1
    value, at = last.inputs[0], end
    while True:
        i = _through(gen, steps, at, value, crossings)
        if i is None:
            return None
        framed = _unframe(gen, steps, i, last.frame)
        if framed is not None:
            i, around, fulls[i] = framed
            passed += around
        step = steps[i]
        if step.kind != "box" or step.box is None or step.inner or step.frame != last.frame and i not in fulls:
            return None
        if not isinstance(step.box.prim, (EinsumOp, AddOp, *_CHAIN)) or len(step.outputs) != 1:
            return None
        if i in fulls and not isinstance(step.box.prim, AddOp):
            return None
        inputs = fulls[i][3] if i in fulls else step.inputs
        chain.append(i)
        if isinstance(step.box.prim, EinsumOp):
            break
        side = 0
        if isinstance(step.box.prim, PaddingMaskOp):
            if len(inputs) != 2 or mask is not None:
                return None
            mask, mask_seg, padded = inputs[1], _full(step)[1][1], i
        elif isinstance(step.box.prim, AddOp):
            sum_side = _scores_side(gen, steps, i, inputs, crossings)
            if sum_side is None or bias is not None:
                return None
            side, bias = sum_side, inputs[1 - sum_side]
            bias_seg = fulls[i][1][1 - side] if i in fulls else _full(step)[1][1 - side]
        elif len(inputs) != 1:
            return None
        value, at = inputs[side], min([i] + [k for k in passed if k < i])
    chain.reverse()
    finite: list[int] = []  # the steps comparing the bias with -inf: the padding mask SDPA's float mask implies
    if bias is not None and mask is None:
        return None  # a sum the model wrote (its scores rounded before the softmax): only SDPA's float mask, which the
        # importer reads with the padding mask of its finite entries, is SDPA's call
    if bias is not None and mask is not None:
        found_finite = _finite_of(gen, steps, chain[-1], mask, bias, crossings)
        if found_finite is None:
            return None  # a padding mask of its own beside the bias: SDPA takes one mask
        finite = [k for k in found_finite if k > chain[0]]
        mask, mask_seg, implied = None, None, padded  # (the padding mask SDPA's float mask implies: no box of its own)
    first = steps[chain[0]]
    if len(first.inputs) != 2:
        return None
    final, final_dom, final_cod = _full(last)
    boxes = [fulls[i][:3] if i in fulls else _full(steps[i]) for i in chain if i != implied]
    _, q_dom, _ = boxes[0]
    v_seg = final_dom[1]
    found = attention_of([b for b, _, _ in boxes], q_dom[0], q_dom[1], mask_seg, v_seg,
                         [cod[0].names for _, _, cod in boxes], final, final_dom, final_cod, bias_seg)
    if found is None:
        return None
    matched = sorted(set(chain + passed + finite)) + [end]
    inner = [v for i in matched[:-1] for v in steps[i].outputs]  # the values the rewrite removes
    crossed = _uncrossed(steps, crossings, {id(v) for v in inner})
    removed = {id(op) for i in matched for op in steps[i].ops}
    gone = {v.var for i in matched for op in steps[i].ops for v in op.outputs}
    attributes = [op.target[5:] for i in matched for op in steps[i].ops if op.kind == "module"]
    ids, own, since = {id(v) for v in inner}, set(matched) | set(crossings), chain[0]  # nothing before the scores
    # reads what they write
    if any(id(v) in ids for k, s in enumerate(steps[since:], since) if k not in own for v in s.inputs):
        return None  # a value between the einsums is read by another step: the rewrite would lose it
    ops = em.function.ops
    tail = _position(ops, next((op for i in matched for op in steps[i].ops), None))
    if any(a.var in gone for op in ops[tail:] if id(op) not in removed for a in op.args):
        return None
    if any(line.startswith(f"self.{name}") and line != f"self.{name} = {em.function.attributes.get(name)}"
           for name in attributes for line in em.function.init):
        return None  # a module the pattern declared is configured further: leave it
    operands = [first.inputs[0], first.inputs[1]] + ([mask] if mask is not None else []) \
        + ([bias] if bias is not None else []) + [last.inputs[1]]
    for j, operand in ((0, operands[0]), (1, operands[1]), (-1, operands[-1])):
        stored = _stored(gen, em, steps, end, operand)
        if stored is not None:
            have = found.operands()[j if j >= 0 else 2][1]
            found.stored[j] = have[: len(have) - len(stored)] + list(stored)
    # -- the rewrite: the pattern's steps, ops and declarations go; one fused step calls SDPA -----------------
    ops[tail:] = [op for op in ops[tail:] if id(op) not in removed]
    for name in attributes:
        em.function.init.remove(f"self.{name} = {em.function.attributes.pop(name)}")
        em.release(name)
    for var in gone:
        em.values.pop(var, None)
        em.release(var)
    parts = tuple(steps[i].box for i in matched if steps[i].kind == "box")  # the boxes replaced
    steps[since:] = [crossed.get(k) or s for k, s in enumerate(steps[since:], since)
                     if k not in own or crossed.get(k) is not None]
    written = sympy.Mul(*(em.written(b.prim.factor) for b, _, _ in boxes if isinstance(b.prim, ScaleOp)))
    start = len(em.function.ops)
    results = _emit(found, em, operands, em.size_code(written))
    steps.append(Step("fused", tuple(operands), tuple(results), last.frame, pattern=found, parts=parts,
                      ops=tuple(em.function.ops[start:])))
    return results


def _position(ops: list[Op], first: Op | None) -> int:
    """The position of ``first`` in ``ops`` (by identity; 0 if absent), searched from the end: the rewrite touches
    only what follows it, so that it costs what the pattern spans, not the whole program."""
    for i in range(len(ops) - 1, -1, -1):
        if ops[i] is first:
            return i
    return 0


def fused_scale(program: Program, op: Op) -> sympy.Expr | None:
    """The scale of the SDPA call ``op`` (the product of the fused scales: a number when sizes are bound), read off
    the ``fused`` step that wrote it, not off its text (which may print it by name: ``scale=sizes.k ** -0.5``)."""
    for function in program.functions:
        for step in function.steps:
            if step.kind == "fused" and any(o is op for o in step.ops) and isinstance(step.pattern, Attention):
                return step.pattern.scale
    return None


def _stored(gen: Codegen, em: ClassEmitter, steps: list[Step], before: int, value: Value
            ) -> tuple[str, ...] | None:
    """The order the learned map writing ``value`` stores its output axes in, when lowering chose one
    (:func:`ncd.prims.patterns.chosen_rows`), following a value out of the class that computed it."""
    i = _producer(gen, steps, before, value)
    while i is not None:
        step = steps[i]
        if step.kind == "box" and step.box is not None and isinstance(step.box.prim, LinearOp):
            return em.rows.get(id(step.box))
        if step.kind != "call" or len(step.callees) != 1 or step.count is not None:
            return None
        callee = next((f for f in gen.program.functions if f.name == step.callees[0]), None)
        position = next((j for j, v in enumerate(step.outputs) if v is value), None)
        if callee is None or position is None or position >= len(callee.outputs):
            return None
        value, steps = callee.outputs[position], callee.steps
        i = _producer(gen, steps, len(steps), value)
    return None


# -- code ---------------------------------------------------------------------------------------
def _assign(em: ClassEmitter, hint: str, expr: str | Expr, layout: list[str], sizes: dict[str, sympy.Expr],
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
            expr = _assign(em, hint, _arranging(em, var, expr, target), target, sizes, dtype=dtype)
        return _assign(em, hint, _arranging(em, expr, f"{expr} if {expr}.stride(-1) == 1 else {expr}.contiguous()",
                                            target, "strided"), target, sizes, dtype=dtype)
    packed = pack and LAYOUTS_CHOSEN and packs(have if stored is None else stored, target)  # SDPA reads a dense last dim
    if packed:
        expr += ".contiguous()"
    if expr == var:
        return var
    return _assign(em, hint, _arranging(em, var, expr, target, "always" if packed else ""), target, sizes, dtype=dtype)


def _arranging(em: ClassEmitter, var: str, text: str, target: list[str], pack: str = "") -> Expr:
    """``text``, which arranges the value ``var`` into the ``target`` order of axes (a view: ``movedim``, size-1 axes
    added) and then packs it densely (``.contiguous()``) ``"always"``, only when its last dimension is
    ``"strided"``, or not (``""``), as a typed op: its ``arrange`` and ``pack`` options are what costs read."""
    kind: OpKind = "call" if pack else "view"
    target_ = "Tensor.contiguous" if pack else "torch.movedim" if text.startswith("torch.movedim(") else "Tensor.__getitem__"
    return Expr(text, kind, target_, (em.values[var],), options=(("arrange", tuple(target)), ("pack", pack)))


def _group(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "(" + " ".join(names) + ")"


def _emit(a: Attention, em: ClassEmitter, values: list[Value], scale: str | None = None) -> list[Value]:
    """SDPA's ops for ``a`` on ``values`` (``scale``: its scale printed by name, when it was written with sizes)."""
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
    gqa = a.gqa is not None
    if gqa:  # the query heads (g r): SDPA's grouped queries read key/value head g, as the model's enable_gqa call
        heads = _group([a.batch[-1], a.query[0]])
        q = _assign(em, "q", f"{q}.flatten(-4, -3)", a.batch[:-1] + [heads, a.query[1], contracted], known)
    elif nq > 1:
        q = _assign(em, "q", f"{q}.flatten({-nq - 1}, -2)", a.batch + [queries, contracted], known)
    if nv > 1:
        v = _assign(em, "v", f"{v}.flatten({-nv})", a.batch + [a.key, values_], known)
    options = []
    if a.mask is not None:
        m = _arrange(em, values[2].var, a.mask, a.batch + a.query + [a.key], "attn_mask", known, "bool")
        missing = [n for n in a.query if n not in a.mask]
        if gqa:  # on the query heads (g r), as the queries: each made whole first where the mask has the other
            grouped = [a.batch[-1], a.query[0]]
            if any(n in a.mask for n in grouped):
                shape = [str(sizes[n]) if n in grouped else "-1" for n in a.batch + a.query + [a.key]]
                m = _assign(em, "attn_mask", f"{m}.expand(*{m}.shape[:-{len(shape)}], {', '.join(shape)})",
                            a.batch + a.query + [a.key], known, dtype="bool")
            m = _assign(em, "attn_mask", f"{m}.flatten(-4, -3)", a.batch[:-1] + [heads, a.query[1], a.key], known,
                        dtype="bool")
            if a.causal:
                rows, cols = sizes[a.query[1]], sizes[a.key]
                m = _assign(em, "attn_mask", f"{m} & torch.ones({rows}, {cols}, dtype=torch.bool, device={m}.device)"
                            ".tril()", a.batch[:-1] + [heads, a.query[1], a.key], known, dtype="bool")
        elif nq > 1:
            if missing:
                width = len(a.batch) + nq + 1
                shape = [str(sizes[n]) if n in missing else "-1" for n in a.batch + a.query + [a.key]]
                m = _assign(em, "attn_mask", f"{m}.expand(*{m}.shape[:-{width}], {', '.join(shape)})",
                            a.batch + a.query + [a.key], known, dtype="bool")
            m = _assign(em, "attn_mask", f"{m}.flatten({-nq - 1}, -2)", a.batch + [queries, a.key], known, dtype="bool")
        if a.causal and not gqa:
            rows, cols = sizes[a.query[0]], sizes[a.key]
            m = _assign(em, "attn_mask", f"{m} & torch.ones({rows}, {cols}, dtype=torch.bool, device={m}.device).tril()",
                        a.batch + [queries, a.key], known, dtype="bool")
        options.append(f"attn_mask={m}")
    elif a.bias is not None:  # the float mask: added to the scaled scores, -inf rows give 0 (as the model's call)
        m = _arrange(em, values[2].var, a.bias, a.batch + a.query + [a.key], "attn_mask", known)
        options.append(f"attn_mask={m}")
    if a.dropout:
        options.append(f"dropout_p={a.dropout!r} if self.training else 0.0")
    if a.causal and a.mask is None:
        options.append("is_causal=True")
    if gqa:
        options.append("enable_gqa=True")
    if a.scale.free_symbols and symbolic_lowering():
        options.append(f"scale={size_code(a.scale) or symbolic_text(a.scale)}")
    else:
        options.append(f"scale={scale if scale is not None else repr(float(a.scale))}")
    operands = [q, k, v] + ([m] if a.mask is not None or a.bias is not None else [])  # what it reads, in order (q is
    # k: still three)
    call = Expr(f"F.scaled_dot_product_attention({q}, {k}, {v}, {', '.join(options)})", "call",
                "F.scaled_dot_product_attention", tuple(em.values[n] for n in operands),
                options=(("scale", a.scale), ("is_causal", a.causal and a.mask is None), ("dropout_p", a.dropout)))
    if gqa:
        out = _assign(em, "attention", call, a.batch[:-1] + [heads, a.query[1], values_], known, kind="call")
        if nv > 1:
            out = _assign(em, "attention", f"{out}.unflatten(-1, {tuple(sizes[n] for n in a.value)})",
                          a.batch[:-1] + [heads, a.query[1]] + a.value, known)
        out = _assign(em, "attention", f"{out}.unflatten({-nv - 2}, {(sizes[a.batch[-1]], sizes[a.query[0]])})",
                      a.batch + a.query + a.value, known)
        return [Value(_arrange(em, out, a.batch + a.query + a.value, a.out, "attention", known), a.out_axes, "float")]
    out = _assign(em, "attention", call, a.batch + [queries, values_], known, kind="call")
    if nv > 1:
        out = _assign(em, "attention", f"{out}.unflatten(-1, {tuple(sizes[n] for n in a.value)})",
                      a.batch + [queries] + a.value, known)
    if nq > 1:
        out = _assign(em, "attention", f"{out}.unflatten({-nv - 1}, {tuple(sizes[n] for n in a.query)})",
                      a.batch + a.query + a.value, known)
    have = a.batch + a.query + a.value
    out = _arrange(em, out, have, a.out, "attention", known)
    return [Value(out, a.out_axes, "float")]
