"""Kernels chosen for whole layers: in inference, a post-norm encoder layer and a multi-head self-attention project
Q, K and V with one product over their packed weights, and an encoder layer fuses its feed-forward's activation.

``nn.TransformerEncoderLayer`` has an inference fast path (eval, no autograd): one native op,
``torch._transformer_encoder_layer_fwd``, that projects Q, K and V with one matrix product over the
packed weight, adds biases and the residual in place and fuses the feed-forward's bias and activation
into its first product.  But on CPU it computes the attention with its score matrix in memory (``bmm``,
``_softmax``, ``bmm``, as ``torch._native_multi_head_attention`` does), which measured from 10 % faster to 7 %
slower than SDPA's flash kernel depending on what else the machine ran (``docs/performance.md``).
:func:`fuse_layers` finds, in a lowered :class:`~ncd.ir.program.Program`, every class whose forward *is*
such a layer and gives it a guarded first statement that computes it as the fused kernel does, except for the
attention: one product for Q, K and V packed, SDPA on views of it, ``L₊^O``, the residual added in place and
layer norm; for an encoder layer then the feed-forward's first product with its bias and activation fused
(``torch._addmm_activation``), its second, the residual in place and layer norm.
Training, autograd, ``torch.compile`` (which fuses the public ops itself) and any other input rank run the
ops below it unchanged.

A class is taken only if its ops, followed into the blocks it calls, are exactly (views and layout
glue aside; dropout is the identity in eval)::

    q, k, v = L₊^Q(x), L₊^K(x), L₊^V(x)         rows stored (heads, features): torch's packed layout
    a = SDPA(q, k, v, scale=features**-0.5)    self-attention, no mask, no dropout
    y = LN(L₊^O(a) + x)                         L^O's columns stored (heads, features)
    out = LN(L₊²(act(L₊¹(y))) + y)             act = ReLU or exact GELU; both layer norms affine

(an encoder layer) or its first three lines up to ``L₊^O(a)`` (a multi-head self-attention), which is what
the kernels compute (``tests/test_layouts.py`` checks both against the torch modules and against the unfused
ops).  Anything else is left as it is.

>>> import ncd
>>> from ncd.zoo.heads import heads_attention
>>> from ncd.zoo.transformers import add_norm, feed_forward
>>> attention = heads_attention(self_attention=True, tokens="t")
>>> layer = (add_norm(attention, "t", 0.1) >> add_norm(feed_forward(ncd.ReLU()), "t", 0.1)).block("EncoderLayer")
>>> "torch._addmm_activation(" in layer.to_source(t=5, m=8, h=2, k=4, f=16)
True
>>> "self._packed[0], self._packed[1]).unflatten(-1, (3, 2, 4))" in attention.block("MHA").to_source(t=5, m=8, h=2, k=4)
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import sympy

from ncd.ir.program import Function, Op, Program
from ncd.ir.size import symbolic_text

if TYPE_CHECKING:
    from ncd.prims.linear import LinearOp

__all__ = ["fuse_layers", "FUSED_ENCODER", "FUSED_ATTENTION"]

#: the op only the inference branch of an encoder layer calls: the feed-forward's first product with its bias and
#: activation fused (as in ``nn.TransformerEncoderLayer``'s fused kernel, whose attention it does not take)
FUSED_ENCODER = "torch._addmm_activation"
#: what the inference branch of a multi-head self-attention runs: one product over Q, K and V packed, SDPA, L^O
FUSED_ATTENTION = "packed_attention"

_MODULE_CALL = re.compile(r"^self\.(\w+)\(")
_PACK_GUARD = re.compile(r"^(\w+) if \1\.stride\(-1\) == 1 else \1\.contiguous\(\)$")


@dataclass(frozen=True)
class _Node:
    """One op of a class's inlined forward: what it is, the module it calls (a path from the class) and the
    ids of the tensors it reads and writes (a block call's inputs and outputs are its callee's)."""

    op: Op
    path: str
    args: tuple[int, ...]
    outs: tuple[int, ...]


def _inline(program: Program, function: Function, most: int | None = None) -> tuple[list[_Node], int] | None:
    """The flat forward of ``function`` (input id 0) and its output's id; ``None`` for loops or several
    inputs/outputs, or with more than ``most`` ops that compute (neither glue nor comments, as :func:`_flat`
    keeps them: no pattern matches then, and a model's top class is not walked whole)."""
    by_name = {f.name: f for f in program.functions}
    nodes: list[_Node] = []
    count = [1]
    computing = [0]

    def walk(f: Function, env: dict[str, int], prefix: str) -> list[int] | None:
        for op in f.ops:
            if op.kind == "loop":
                return None
            args = tuple(env[a.var] for a in op.args if a.var in env)
            if op.kind == "block":
                callee = by_name[op.callee]
                inner = {v.var: i for v, i in zip(callee.inputs, args)}
                if len(inner) != len(callee.inputs):
                    return None
                result = walk(callee, inner, prefix + op.target.removeprefix("self.") + ".")
                if result is None or len(result) != len(op.outputs):
                    return None
                env.update((v.var, i) for v, i in zip(op.outputs, result))
                continue
            outs = tuple(range(count[0], count[0] + len(op.outputs)))
            count[0] += len(op.outputs)
            env.update((v.var, i) for v, i in zip(op.outputs, outs))
            call = _MODULE_CALL.match(op.code)
            nodes.append(_Node(op, prefix + call.group(1) if call else "", args, outs))
            if most is not None and not _is_comment(op) and not _is_glue(nodes[-1]):
                computing[0] += 1
                if computing[0] > most:
                    return None
        return [env[v.var] for v in f.outputs]

    if len(function.inputs) != 1 or len(function.outputs) != 1:
        return None
    result = walk(function, {function.inputs[0].var: 0}, "")
    return (nodes, result[0]) if result is not None else None


def _is_comment(op: Op) -> bool:
    return op.kind == "statement" and all(line.lstrip().startswith("#") for line in op.code.splitlines())


def _prim(node: _Node) -> object:
    return getattr(node.op.box, "prim", None)


def _is_glue(node: _Node) -> bool:
    """A view, an alias, a pack of a strided operand, or dropout (the identity in eval): the same tensor."""
    from ncd.prims.regularization import DropoutOp

    op = node.op
    if len(node.args) != 1 or len(node.outs) != 1:
        return False
    if op.kind in ("view", "alias") and op.box is None:
        return True
    if op.kind == "expr" and op.box is None and _PACK_GUARD.match(op.code):
        return True
    return isinstance(_prim(node), DropoutOp)


@dataclass(frozen=True)
class _Attention:
    """The modules of one matched self-attention (paths from the class), its sizes, and its nodes."""

    q: str
    k: str
    v: str
    o: str
    width: sympy.Expr
    heads: sympy.Expr
    #: what the kernel needs that symbolic sizes leave open (``sizes.h*sizes.k == sizes.m``), checked when it runs
    conditions: tuple[str, ...]
    #: the ids of the tensors the projections, SDPA and ``L^O`` write (views may arrange only these)
    arranged: frozenset[int]
    #: the id of ``L^O``'s output
    out: int
    #: the name of the width axis (``m``) every map reads or writes
    width_axes: tuple[str, ...]
    #: the scale SDPA is called with, as lowering printed it
    scale: str
    #: the per-head feature size
    features: sympy.Expr


@dataclass(frozen=True)
class _Layer:
    """The modules of one matched encoder layer (paths from the class) beyond its attention, and its activation."""

    attention: _Attention
    norm1: str
    norm2: str
    ff1: str
    ff2: str
    gelu: bool


def _flat(nodes: list[_Node], out: int) -> tuple[list[_Node], int, dict[bool, set[int]]]:
    """The ops of ``nodes`` that compute (glue collapsed: a view, alias or dropout reads as its input), the output's
    id, and the tensors glue rearranges (``False``: views) or drops out (``True``: dropout)."""
    from ncd.prims.regularization import DropoutOp

    same: dict[int, int] = {0: 0}  # tensor id -> the id it is a view/alias of (glue collapsed)
    real: list[_Node] = []
    moved: dict[bool, set[int]] = {False: set(), True: set()}
    for node in nodes:
        if _is_comment(node.op):
            continue
        if _is_glue(node):
            same[node.outs[0]] = same.get(node.args[0], node.args[0])
            moved[isinstance(_prim(node), DropoutOp)].add(same[node.outs[0]])
        else:
            real.append(_Node(node.op, node.path, tuple(same.get(a, a) for a in node.args), node.outs))
    return real, same.get(out, out), moved


def _linear(node: _Node, source: int, bias: bool = True) -> LinearOp | None:
    from ncd.prims.linear import LinearOp

    prim = _prim(node)
    ok = isinstance(prim, LinearOp) and prim.bias == bias and node.path and node.args == (source,)
    return prim if ok and isinstance(prim, LinearOp) else None


def _attention(real: list[_Node], rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]],
               program: Program | None = None) -> _Attention | None:
    """The self-attention of the class's input (id 0) that ``real`` (its first five computing ops) is:
    ``L₊^O(SDPA(L₊^Q(x), L₊^K(x), L₊^V(x), scale=features**-0.5))`` with rows and ``L^O``'s columns stored
    (heads, features), as torch packs them; ``None`` otherwise."""
    if len(real) < 5:
        return None
    q, k, v, sdpa, o = real[:5]
    projections = [_linear(n, 0) for n in (q, k, v)]
    if any(p is None for p in projections) or sdpa.op.target != "F.scaled_dot_product_attention":
        return None
    call = re.fullmatch(r"F\.scaled_dot_product_attention\(\w+, \w+, \w+, scale=([^,=]+)\)", sdpa.op.code)
    from ncd.torch.fusion import fused_scale

    scale = fused_scale(program, sdpa.op) if program is not None else None  # read off the program, not its text
    if sdpa.args != tuple(n.outs[0] for n in (q, k, v)) or call is None:
        return None
    q_axes = sdpa.op.args[0].axes  # heads, queries, features as SDPA reads them
    if len(q_axes) != 3 or any(len(a.axes) != 3 for a in sdpa.op.args):
        return None
    head, feature = q_axes[0].name, q_axes[2].name
    order = (head, feature)
    projection = [p for p in projections if p is not None]
    if any(rows.get(id(n.op.box), p.cod_axes.names) != order for n, p in zip((q, k, v), projection)):
        return None  # rows stored (heads, features): chosen so, or declared so
    if any(a.axes[0].name != head or a.axes[2].size != q_axes[2].size for a in sdpa.op.args):
        return None
    out_map = _linear(o, sdpa.outs[0])
    if out_map is None or cols.get(id(o.op.box), out_map.dom_axes.names) != order:
        return None
    features, heads = q_axes[2].size, q_axes[0].size
    if not _is_inverse_root(scale, features):  # the kernels scale by features**-0.5
        return None
    width = out_map.cod_axes.sizes
    if len(width) != 1 or any(p.dom_axes.sizes != width for p in projection):
        return None
    conditions: list[str] = []  # equal at every bound size, or checked when the program runs (symbolic sizes)
    products = [heads * features, sympy.Mul(*out_map.dom_axes.sizes), *(sympy.Mul(*p.cod_axes.sizes) for p in projection)]
    for product in products:
        if sympy.expand(product - width[0]) != 0:
            conditions.append(f"{_size(product)} == {_size(width[0])}")
            if _planned(product - width[0]) not in (None, 0):  # unequal where lowering plans: as the bound program
                return None
    m = out_map.cod_axes.names
    reads = [n.op.args[0].axes for n in (q, k, v)] + [o.op.outputs[0].axes]
    if any(p.dom_axes.names != m for p in projection) or any(not axes or axes[-1].name != m[0] for axes in reads):
        return None  # every projection acts on the width m, the last axis of what it reads, and L^O writes it there
    arranged = frozenset(n.outs[0] for n in (q, k, v, sdpa))
    return _Attention(q.path, k.path, v.path, o.path, width[0], heads, tuple(dict.fromkeys(conditions)), arranged,
                      o.outs[0], m, call.group(1), features)


def _match_attention(nodes: list[_Node], out: int, rows: dict[int, tuple[str, ...]],
                     cols: dict[int, tuple[str, ...]], program: Program | None = None) -> _Attention | None:
    """The multi-head self-attention ``nodes`` compute (exactly ``nn.MultiheadAttention``'s, no mask), or ``None``."""
    real, out, moved = _flat(nodes, out)
    attention = _attention(real, rows, cols, program) if len(real) == 5 else None
    if attention is None or out != attention.out:
        return None
    if not moved[False] <= attention.arranged or not moved[True] <= {attention.out}:
        return None  # views only arrange the attention's operands and output; dropout only follows L^O
    return attention


def _match(nodes: list[_Node], out: int, rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]],
           program: Program | None = None) -> _Layer | None:
    """The encoder layer ``nodes`` compute, or ``None`` unless they are exactly one (see the module's docstring)."""
    from ncd.prims.elementwise import ElementwiseOp
    from ncd.prims.normalization import LayerNormOp
    from ncd.prims.structure import AddOp

    real, out, moved = _flat(nodes, out)
    attention = _attention(real, rows, cols, program) if len(real) == 12 else None
    if attention is None:
        return None
    add1, norm1, ff1, act, ff2, add2, norm2 = real[5:]
    width = (attention.width,)

    def layer_norm(node: _Node, source: int) -> LayerNormOp | None:
        prim = _prim(node)
        ok = isinstance(prim, LayerNormOp) and prim.affine and prim.bias and node.path and node.args == (source,)
        return prim if ok and isinstance(prim, LayerNormOp) else None

    def add(node: _Node, a: int, b: int) -> bool:
        return isinstance(_prim(node), AddOp) and sorted(node.args) == sorted((a, b))

    ln1 = layer_norm(norm1, add1.outs[0])
    if not add(add1, attention.out, 0) or ln1 is None:
        return None
    up, down = _linear(ff1, norm1.outs[0]), None
    fn = _prim(act)
    if up is None or not isinstance(fn, ElementwiseOp) or fn.function not in ("relu", "gelu") or act.args != ff1.outs:
        return None
    down = _linear(ff2, act.outs[0])
    ln2 = layer_norm(norm2, add2.outs[0])
    if down is None or not add(add2, ff2.outs[0], norm1.outs[0]) or ln2 is None or norm2.outs[0] != out:
        return None
    if ln1.axes.sizes != width or ln2.axes.sizes != width or down.cod_axes.sizes != width:
        return None
    # views only arrange the attention's operands and output (by axis name, as checked above), dropout only follows
    # L^O and the feed-forward: a view anywhere else could move another axis under a map the kernel applies to m
    if not moved[False] <= attention.arranged or not moved[True] <= {attention.out, ff2.outs[0]}:
        return None
    m = attention.width_axes
    reads = [n.op.args[0].axes for n in (ff1, norm1, norm2)] + [ff2.op.outputs[0].axes]
    named = [up.dom_axes, down.cod_axes, ln1.axes, ln2.axes]
    if any(seg.names != m for seg in named) or any(not axes or axes[-1].name != m[0] for axes in reads):
        return None  # every map, norm and residual acts on the width m, the last axis of what it reads
    if up.cod_axes.names != down.dom_axes.names:
        return None
    return _Layer(attention, norm1.path, norm2.path, ff1.path, ff2.path, fn.function == "gelu")


def _planned(size: sympy.Expr) -> int | None:
    """``size`` where lowering plans (a whole number; ``None`` if symbolic there): a program on symbolic sizes
    takes the fused kernel iff the program at those sizes does (:func:`ncd.prims.contraction.planned_at`)."""
    from ncd.prims.contraction import plan_sizes

    bound = plan_sizes([("size", size)])
    return None if bound is None else bound["size"]


def _is_inverse_root(scale: sympy.Expr | None, size: sympy.Expr) -> bool:
    """Whether ``scale`` (the fused attention's, :func:`ncd.torch.fusion.fused_scale`: the source may print it by
    name, ``sizes.k ** -0.5``) is ``size**-0.5``."""
    if scale is None:
        return False
    if scale.free_symbols or not size.is_Integer:
        return bool(sympy.simplify(scale - 1 / sympy.sqrt(size)) == 0)
    return bool(abs(float(scale) * float(size) ** 0.5 - 1) < 1e-12)


def _size(value: sympy.Expr) -> str:
    return str(value) if value.is_Integer else symbolic_text(value)


def _guard(attention: _Attention, x: str, kernel: str) -> list[str]:
    """The guard of a fused branch (inference of a batched plain input, as torch's own fast paths ask) and the packing
    of Q, K and V: the kernels read them as one weight, packed once and again only when a weight changes (its storage
    or its version: an optimiser step or ``load_state_dict`` writes in place), not on every call."""
    s = {name: f"self.{path}" for name, path in vars(attention).items() if isinstance(path, str)}
    even = "".join(f" and {c}" for c in attention.conditions)
    return [
        f"# in inference, {kernel}: proven equal to the ops below (ncd.torch.layouts)",
        f"if {x}.dim() == 3 and not (self.training or torch.is_grad_enabled() or torch.is_autocast_enabled()"
        f" or torch.compiler.is_compiling()){even} and torch.backends.mha.get_fastpath_enabled():",
        f"    qkv = [p for m in ({s['q']}, {s['k']}, {s['v']}) for p in (m.weight, m.bias)]",
        "    if getattr(self, '_packed_for', None) != [(p.data_ptr(), p._version) for p in qkv]:  # weights changed",
        "        self._packed = (torch.cat(qkv[0::2]), torch.cat(qkv[1::2]), [p.detach() for p in qkv])",
        "        self._packed_for = [(p.data_ptr(), p._version) for p in qkv]",
    ]


def _fused_branch(layer: _Layer, x: str) -> str:
    """The guarded statement: in inference, the layer as torch's fused encoder kernel computes it (Q, K and V in one
    product, bias and activation fused into the feed-forward's first product, residuals added in place), but with
    SDPA's flash kernel for the attention (:func:`_packed_attention`) instead of the kernel's score matrix in memory."""
    a = layer.attention
    s = {name: f"self.{path}" for name, path in vars(layer).items() if isinstance(path, str)}
    n1, n2, up, down = s["norm1"], s["norm2"], s["ff1"], s["ff2"]
    return "\n".join([
        *_guard(a, x, "Q, K and V in one product, the feed-forward's activation fused into its first product"),
        *_packed_attention(a, x, "y ="),
        f"    y = F.layer_norm(y.add_({x}), {n1}.normalized_shape, {n1}.weight, {n1}.bias, {n1}.eps)",
        f"    z = {FUSED_ENCODER}({up}.bias, y.flatten(0, 1), {up}.weight.t(), use_gelu={layer.gelu})",
        f"    z = F.linear(z, {down}.weight, {down}.bias).unflatten(0, y.shape[:2]).add_(y)",
        f"    return F.layer_norm(z, {n2}.normalized_shape, {n2}.weight, {n2}.bias, {n2}.eps)",
    ])


def _packed_attention(attention: _Attention, x: str, out: str) -> list[str]:
    """The lines computing the self-attention, the last one starting with ``out`` (``"y ="``, ``"return"``): one
    matrix product over the packed Q, K and V weights (as ``nn.MultiheadAttention`` packs them), SDPA on views of
    its output, and ``L₊^O``."""
    o, heads, features = f"self.{attention.o}", _size(attention.heads), _size(attention.features)
    return [
        f"    q, k, v = F.linear({x}, self._packed[0], self._packed[1]).unflatten(-1, (3, {heads}, {features}))"
        ".transpose(1, 3).unbind(2)",
        f"    attention = F.scaled_dot_product_attention(q, k, v, scale={attention.scale})",
        f"    {out} F.linear(attention.transpose(1, 2).flatten(2), {o}.weight, {o}.bias)",
    ]


def _fused_attention(attention: _Attention, x: str) -> str:
    """The guarded statement: in inference, the self-attention with Q, K and V in one product
    (:func:`_packed_attention`)."""
    return "\n".join([
        *_guard(attention, x, "Q, K and V packed into one product as nn.MultiheadAttention packs them"),
        *_packed_attention(attention, x, "return"),
    ])


def encoder_layers(program: Program, rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]]
                   ) -> Iterator[tuple[Function, _Layer]]:
    """Every class of ``program`` that is a post-norm encoder layer, with its modules."""
    return _classes(program, rows, cols, 12, _match)  # _match reads twelve


def attention_layers(program: Program, rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]]
                     ) -> Iterator[tuple[Function, _Attention]]:
    """Every class of ``program`` that is a multi-head self-attention (as ``nn.MultiheadAttention``), with its
    modules."""
    return _classes(program, rows, cols, 5, _match_attention)  # _match_attention reads five


_Found = TypeVar("_Found")


def _classes(program: Program, rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]], most: int,
             match: Callable[[list[_Node], int, dict[int, tuple[str, ...]], dict[int, tuple[str, ...]], Program | None],
                             _Found | None]) -> Iterator[tuple[Function, _Found]]:
    """Every class of ``program`` whose body, inlined (at most ``most`` nodes read), ``match`` recognises."""
    for function in program.functions:
        flat = _inline(program, function, most)
        if flat is None:
            continue
        found = match(*flat, rows, cols, program)
        if found is not None:
            yield function, found


def fuse_layers(program: Program, rows: dict[int, tuple[str, ...]], cols: dict[int, tuple[str, ...]]) -> None:
    """Give every class of ``program`` that is a post-norm encoder layer or a multi-head self-attention a first
    statement calling torch's fused inference kernel for it (``rows``/``cols``: the layouts lowering chose,
    :func:`ncd.prims.patterns.chosen_rows`)."""
    fused = [(function, FUSED_ENCODER, _fused_branch(layer, function.inputs[0].var))
             for function, layer in encoder_layers(program, rows, cols)]
    fused += [(function, FUSED_ATTENTION, _fused_attention(attention, function.inputs[0].var))
              for function, attention in attention_layers(program, rows, cols)]
    for function, kernel, branch in fused:
        function.ops.insert(0, Op("statement", kernel, (), (), branch))
