"""Conversion rules for products fused with something else: ``baddbmm`` and the gated linear unit ``glu``.

``baddbmm(input, b1, b2, beta=β, alpha=α)`` is ``β·input + α·(b1 @ b2)``: the recorded call is read as the product (the
einsum wiring :func:`ncd.trace.idioms.matmul` draws for ``bmm``) and the broadcasting sum
(:func:`ncd.trace.idioms.arithmetic` with its ``alpha``), each from a step made for the occasion whose value is
computed from the recorded operands, so each part is exactly what torch computes (BLOOM's ALiBi scores, GPT-NeoX
Japanese, WavLM).  ``β = 0`` ignores ``input`` (as torch does, NaN included).

``linear(x, W, b)`` whose weight the model computes from parameters (spectral norm's ``W / σ``; a weight that is a
parameter is a learned linear map, :func:`ncd.trace.idioms.linear`) is the einsum ``...i, oi -> ...o`` and the sum with
the bias, each from a step made for the occasion.  ``a @ b`` with a vector on either side is the einsum torch reads it
as (``i,i->``, ``...ij,j->...i``, ``j,...jk->...k``).

``glu(x, dim)`` is ``a · σ(b)`` for the two halves ``a, b`` of ``x`` along ``dim`` (its definition): two slices, the
sigmoid and the product, each read by the rule of its own operator (a conformer's convolution module, wav2vec2).
"""

from __future__ import annotations

import torch

from ncd.trace.boxes_einsum import emit_einsum
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms import _live, _tensor, arithmetic, linear, matmul, slice_, unary
from ncd.trace.registry import hook

__all__: list[str] = []


def _step(node: Node, suffix: str, target: object, args: tuple[object, ...], value: torch.Tensor, live: bool,
          **kwargs: object) -> Node:
    return Node(f"{node.name}_{suffix}", "call", target, args, dict(kwargs), value=value, stack=node.stack,
                live=live, line=node.line)


@rule("aten.baddbmm")
def baddbmm(conv: Converter, node: Node) -> None:
    """``β·input + α·(b1 @ b2)`` as a product, then a (broadcast) sum with ``α`` on the product."""
    bias, first, second = node.args[:3]
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    if not (_tensor(first) and _tensor(second) and _tensor(bias)) or not node.value.is_floating_point():
        raise Decline("not a product of float tensors")
    if not (_live(first) or _live(second)):
        raise Decline("a product of constants")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (beta, alpha)):
        raise Decline("beta or alpha not a number")
    if node.value.dtype in _ROUNDED_ONCE and first.value.dtype == second.value.dtype == bias.value.dtype:
        _baddbmm_rounded_once(conv, node, bias, first, second)
        return
    # the product's value is read for its shape and dtype only (the rules of its steps see wires, and the sum's value
    # is the call's own): a meta tensor, whose entries no one can read, not the product computed again (recurrent_gemma:
    # 4 × (4, 16, 640) @ (4, 640, 640), ~3.4 ms of a first trace)
    shape = (first.value.shape[0], first.value.shape[1], second.value.shape[-1])
    product = _step(node, "product", torch.ops.aten.bmm.default, (first, second),
                    torch.empty(shape, dtype=first.value.dtype, device="meta"), True)
    made = [product]  # the steps made here, read by no other node: unbound once this node is (conv.forget)
    matmul(conv, product)
    if beta == 0:
        if alpha != 1:
            product = _step(node, "alpha", torch.ops.aten.mul.Tensor, (product, float(alpha)), product.value * alpha, True)
            made.append(product)
            arithmetic(conv, product)
        conv.bind(node, conv.values[id(product)])
        conv.forget(*made)
        return
    if beta != 1:
        if _live(bias):
            bias = _step(node, "beta", torch.ops.aten.mul.Tensor, (bias, float(beta)), bias.value * beta, True)
            made.append(bias)
            arithmetic(conv, bias)
        else:
            bias = Node(f"{node.name}_beta", "constant", value=bias.value * beta, source=bias.source)
    total = _step(node, "sum", torch.ops.aten.add.Tensor, (bias, product), node.value, True, alpha=alpha)
    made.append(total)
    arithmetic(conv, total)
    conv.bind(node, conv.values[id(total)])
    conv.forget(*made)


#: float types whose ``baddbmm`` torch computes in float32 and rounds once (the product is not rounded before the sum)
_ROUNDED_ONCE = (torch.bfloat16, torch.float16)


def _baddbmm_rounded_once(conv: Converter, node: Node, bias: Node, first: Node, second: Node) -> None:
    """``baddbmm`` in half precision: torch's kernel adds ``α·(b1 @ b2)`` to ``β·input`` in float32 and rounds the sum
    once; the product and sum of :func:`baddbmm` each rounded to the half type were 1 step off on ~30 % of the entries
    (BLOOM's ALiBi scores in bfloat16, with no word).  Here the operands are cast to float32, the same product and sum
    computed there, and the sum cast back."""
    from ncd.trace.indexing import float_cast

    kind = node.value.dtype
    made: list[Node] = []

    def wide(operand: Node, suffix: str) -> Node:
        value = operand.value.to(torch.float32)
        if not _live(operand):
            return Node(f"{node.name}_{suffix}", "constant", value=value, source=operand.source)
        step = _step(node, suffix, torch.ops.aten._to_copy.default, (operand,), value, True, dtype=torch.float32)
        made.append(step)
        conv.bind(step, conv.apply(float_cast(kind, torch.float32), [conv.value(operand)]))
        return step

    wide_bias, wide_first, wide_second = wide(bias, "bias32"), wide(first, "first32"), wide(second, "second32")
    real = all(v.value.device.type != "meta" for v in (bias, first, second))
    value = torch.baddbmm(wide_bias.value, wide_first.value, wide_second.value, beta=node.kwargs.get("beta", 1),
                          alpha=node.kwargs.get("alpha", 1)) if real else node.value.to(torch.float32)
    total = _step(node, "wide", torch.ops.aten.baddbmm.default, (wide_bias, wide_first, wide_second), value, True,
                  **node.kwargs)
    made.append(total)
    baddbmm(conv, total)
    conv.bind(node, conv.apply(float_cast(torch.float32, kind), [conv.values[id(total)]]))
    conv.forget(*made)


@rule("aten.glu")
def glu(conv: Converter, node: Node) -> None:
    """``a · σ(b)``, ``a`` and ``b`` the halves of the input along ``dim``."""
    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
    if not _live(x) or not x.value.is_floating_point() or node.value.dtype != x.value.dtype:
        raise Decline("not a float tensor")
    dim %= x.value.dim()
    half = int(x.value.shape[dim]) // 2
    first = _step(node, "a", torch.ops.aten.slice.Tensor, (x, dim, 0, half), x.value.narrow(dim, 0, half), True)
    second = _step(node, "b", torch.ops.aten.slice.Tensor, (x, dim, half, 2 * half), x.value.narrow(dim, half, half),
                   True)
    slice_(conv, first)
    slice_(conv, second)
    gate = _step(node, "gate", torch.ops.aten.sigmoid.default, (second,), torch.sigmoid(second.value), True)
    unary(conv, gate)
    product = _step(node, "product", torch.ops.aten.mul.Tensor, (first, gate), node.value, True)
    arithmetic(conv, product)
    conv.bind(node, conv.values[id(product)])
    conv.forget(first, second, gate, product)  # read by no other node: a layer holding a GLU stays copyable


def computed_weight_linear(conv: Converter, node: Node) -> bool:
    """``x @ Wᵀ (+ b)`` for a weight ``W`` computed in the forward (a live matrix): the einsum, then the bias's sum;
    False (the learned linear map's rule) for any other weight."""
    x, w = node.args[:2]
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if not (_live(w) and _tensor(x) and w.value.dim() == 2 and x.value.dim() >= 1 and w.value.is_floating_point()
            and x.value.dtype == w.value.dtype == node.value.dtype):
        return False
    product = _step(node, "product", torch.ops.aten.linear.default, (x, w), torch.nn.functional.linear(x.value, w.value),
                    True)
    emit_einsum(conv, product, "...i,oi->...o", [x, w])
    if b is None:
        conv.bind(node, conv.values[id(product)])
        return True
    if not (_tensor(b) and b.value.dtype == node.value.dtype):
        raise Decline("a bias that is not a tensor of the output's dtype")
    total = _step(node, "bias", torch.ops.aten.add.Tensor, (product, b), node.value, True)
    arithmetic(conv, total)
    conv.bind(node, conv.values[id(total)])
    return True


def vector_matmul(conv: Converter, node: Node) -> bool:
    """``a @ b`` with a vector on either side, as torch reads it: ``i,i->``, ``...ij,j->...i`` or ``j,...jk->...k``
    (the einsum); False (the matrix product's rule) when both have two dimensions or more, or a vector goes through a
    learned matrix (a linear map)."""
    a, b = node.args[:2]
    if not (_tensor(a) and _tensor(b)) or 1 not in (a.value.dim(), b.value.dim()) or not (_live(a) or _live(b)):
        return False
    if any(_live(x) and conv.learned(w) and w.value.dim() == 2 and not w.live for x, w in ((a, b), (b, a))):
        return False  # a vector through a learned matrix: the learned linear map
    if not (a.value.is_floating_point() and a.value.dtype == b.value.dtype == node.value.dtype):
        raise Decline("a product of vectors that are not floats of one dtype")
    equation = "i,i->" if a.value.dim() == b.value.dim() == 1 else "...ij,j->...i" if b.value.dim() == 1 else "j,...jk->...k"
    emit_einsum(conv, node, equation, [a, b])
    return True


assert linear is not None and matmul is not None  # their rules are registered: the hooks stand in front of them
hook(("aten.linear",), computed_weight_linear)
hook(("aten.matmul",), vector_matmul)
