"""The root-mean-square normalisation an RMS-norm module computes (and the centred one of a layer-norm module written
out), read off its recorded operations when the module as a whole is not one box.

:meth:`~ncd.trace.module_idioms.ModuleIdioms.module_idiom` draws an RMS-norm module as one ``RMS`` box when it computes
``rms_norm(x, w)``, or Gemma's ``rms_norm(x) * (1 + w)`` (checked on values).  A module that scales by something
else — a gated norm's ``w * silu(gate)``, Gemma's ``(1 + w)`` in another type than float32 — is walked operation by
operation, and its normalisation ``x * rsqrt(mean(x ** 2, -1, keepdim) +
eps)`` (the square also written ``x.square()``, the root ``pow(…, -0.5)``: Gemma 4's, Muse Spark's, the unweighted
norms of Inkling 2, DeepSeek V4, GLM-5 Next) was five boxes (square, mean, add, root,
product) in every definition of every such module.  Those five recorded operations, in that order, each read only by
the next, are that normalisation over the last axis exactly: one ``RMS`` box (no weight,
:class:`~ncd.prims.normalization.RMSNormOp`); the rest of the module (its scale) is walked as before.

Likewise a layer norm written out in a ``*LayerNorm`` module (Cohere's, without a bias): ``(x - mean(x)) *
rsqrt(mean((x - mean(x)) ** 2) + eps)`` over the last axis, each step read only by the next, is one weightless ``LN``
box (:class:`~ncd.prims.normalization.LayerNormOp`, the biased variance as ``nn.LayerNorm`` takes it), and the
module's weight after it is walked as before.

The L2 normalisation ``x * rsqrt(sum(x * x, -1, keepdim) + eps)`` (Gated DeltaNet's ``l2norm`` on its queries and keys,
in Qwen3.5 / Qwen3-Next / OLMo-Hybrid, after the FLA library's; Kimi Linear's and Bailing's ``x / sqrt(…)``) was eleven
boxes (product, sum, a view keeping the summed wire, the constant ``eps``, its addition, root, the view back, product,
and the copies and crossings around them).  A sum is ``n`` means: ``x / √(Σx² + ε) = RMS_{ε/n}(x) / √n`` over the
``n`` entries of the last axis, for every ``x``, so those recorded operations, in that order, each read only by the
next, are drawn as a weightless ``RMS`` box (its ``eps`` divided by ``n``) and a ``*1/√n`` scale, after the two are
checked equal to the recorded result on the traced values (they differ by rounding only).

The operations are matched by what they are, not by the module's class; the class only says where to look for the
RMS and layer norms (inside a module named an RMS norm, where the module idiom looks too, or an ``*L2Norm``: Llama 4's
weightless root mean square).  The L2 normalisation is looked for anywhere: its check on values is its proof."""

from __future__ import annotations

import math

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter
from ncd.trace.naming import PRIME
from ncd.trace.registry import op_name

__all__ = ["root_mean_square", "layer_norm", "l2_norm"]


def _reader(conv: Converter, node: Node, full: str) -> Node | None:
    """The one call reading ``node`` when it is live, of the operator ``full`` and reads nothing else of ``node``'s;
    else None (``node`` read twice, by another operator, or an output of the model)."""
    readers = conv.consumers.get(id(node), ())
    if len(readers) != 1 or any(o is node for o in conv.captured.outputs):
        return None
    reader = readers[0]
    if reader.kind != "call" or not reader.live or reader.guard or op_name(reader.target)[1] != full \
            or id(reader) in conv.skip or id(reader) in conv.values:
        return None
    return reader


def root_mean_square(conv: Converter, node: Node) -> bool:
    """At ``x ** 2`` or ``x.square()`` (``node``): when it starts ``x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps)``
    inside an RMS-norm module (the root perhaps cast to its own dtype), that product is drawn as one ``RMS`` box on
    ``x`` (the later operations skipped) and True is returned; else nothing is drawn and False is returned.

    >>> import torch, ncd
    >>> class ExpScaledRMSNorm(torch.nn.Module):  # scaled by exp(w): not one box, its normalisation one
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.weight = torch.nn.Parameter(torch.zeros(4))
    ...     def forward(self, x):
    ...         return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight.exp()
    >>> d = ncd.trace(torch.nn.Sequential(ExpScaledRMSNorm()), torch.randn(2, 3, 4))
    >>> [b.prim.label() for b in d.boxes()]
    ['RMS', 'θ weight', 'exp', '⊙']
    """
    if not node.stack or not any(k in node.stack[-1][1] for k in ("RMSNorm", "L2Norm")):
        return False
    full = op_name(node.target)[1]
    x = node.args[0] if node.args else None
    if full == "aten.pow.Tensor_Scalar":
        if len(node.args) != 2 or node.args[1] not in (2, 2.0) or type(node.args[1]) is bool:
            return False
    elif full != "aten.square.default" or len(node.args) != 1:  # (``x.square()``: ATen's own pow(x, 2))
        return False
    if node.kwargs or not isinstance(x, Node) or not x.live or not isinstance(x.value, torch.Tensor):
        return False
    value = x.value
    if value.dtype != torch.float32 or value.dim() < 1 or value.shape[-1] < 1 or id(x) not in conv.values:
        return False
    mean = _reader(conv, node, "aten.mean.dim")
    if mean is None or len(mean.args) != 3 or mean.kwargs or mean.args[0] is not node \
            or list(mean.args[1] or ()) not in ([-1], [value.dim() - 1]) or mean.args[2] is not True:
        return False
    found = _root(conv, mean)
    if found is None:
        return False
    add, eps, root = found
    cast = _same_type(conv, root)  # (``rsqrt(…).to(x.dtype)``: x's own dtype, the same values)
    factor = root if cast is None else cast
    product = _reader(conv, factor, "aten.mul.Tensor")
    if product is None or product.kwargs or len(product.args) != 2 \
            or {id(a) for a in product.args} != {id(x), id(factor)} \
            or not isinstance(product.value, torch.Tensor) or product.value.shape != value.shape \
            or product.value.dtype != value.dtype:
        return False
    from ncd.prims.normalization import RMSNormOp

    vid = conv.value(x)
    seg = conv.segs[vid]
    out = conv.apply(Box(RMSNormOp(Segment(seg.axes[-1:]), float(eps), affine=False)), [vid])
    conv.skip |= {id(mean), id(add), id(root), id(product)} | ({id(cast)} if cast is not None else set())
    conv.bind(product, out)
    return True


def _same_type(conv: Converter, node: Node) -> Node | None:
    """The one call reading ``node`` when it casts it to its own dtype (``.to(dtype)``, ``_to_copy``: the same values,
    the same shape); else None."""
    readers = conv.consumers.get(id(node), ())
    if len(readers) != 1 or any(o is node for o in conv.captured.outputs):
        return None
    cast = readers[0]
    if cast.kind != "call" or not cast.live or cast.guard or op_name(cast.target)[1] not in _CASTS \
            or not cast.args or cast.args[0] is not node or id(cast) in conv.skip or id(cast) in conv.values:
        return None
    given, got = node.value, cast.value
    if not isinstance(given, torch.Tensor) or not isinstance(got, torch.Tensor) or got.dtype != given.dtype \
            or got.shape != given.shape or got.device != given.device:
        return None
    return cast


#: the casts :func:`_same_type` looks through (to the value's own dtype, device and shape)
_CASTS = ("aten.to.dtype", "aten._to_copy.default")


def _eps_added(conv: Converter, total: Node) -> tuple[Node, float] | None:
    """``total + eps`` read off ``total`` (read only by that addition, ``eps`` a finite number >= 0): the addition and
    ``eps``; none when the recording is not that."""
    add = _reader(conv, total, "aten.add.Tensor")
    if add is None or add.kwargs or len(add.args) != 2 or add.args[0] is not total or add.sized:
        return None
    eps = add.args[1]
    if type(eps) not in (int, float) or not 0 <= eps < math.inf:
        return None
    return add, eps


def _root(conv: Converter, mean: Node) -> tuple[Node, float, Node] | None:
    """``rsqrt(mean + eps)`` (or ``pow(mean + eps, -0.5)``) read off ``mean`` (each step read only by the next, ``eps`` a
    finite number >= 0): the addition, ``eps`` and the root; none when the recording is not that."""
    added = _eps_added(conv, mean)
    if added is None:
        return None
    add, eps = added
    root = _reader(conv, add, "aten.rsqrt.default")
    if root is not None:
        return (add, eps, root) if len(root.args) == 1 and not root.kwargs else None
    # ``pow(mean + eps, -0.5)`` (Gemma 4's and Muse Spark's norms, "over rsqrt for compiler differences"): the same
    # root — ATen computes a power of -0.5 by its reciprocal square root
    root = _reader(conv, add, "aten.pow.Tensor_Scalar")
    if root is None or len(root.args) != 2 or root.kwargs or root.args[0] is not add or type(root.args[1]) is not float \
            or root.args[1] != -0.5:
        return None
    return add, eps, root


def _mean_of_last(node: Node, x: Node) -> bool:
    """Whether ``node`` is ``mean(x, -1, keepdim=True)`` (``x``'s last axis, as recorded: no dtype)."""
    value = x.value
    return op_name(node.target)[1] == "aten.mean.dim" and len(node.args) == 3 and not node.kwargs \
        and node.args[0] is x and isinstance(value, torch.Tensor) \
        and list(node.args[1] or ()) in ([-1], [value.dim() - 1]) and node.args[2] is True


def layer_norm(conv: Converter, node: Node) -> bool:
    """At ``mean(x, -1, keepdim=True)`` (``node``): when it starts ``(x - mean) * rsqrt(mean((x - mean) ** 2, -1,
    keepdim=True) + eps)`` inside a layer-norm module (the difference made once or twice), that product is drawn as one
    ``LN`` box on ``x`` without weight or bias (the later operations skipped) and True is returned; else nothing is
    drawn and False is returned.

    >>> import torch, ncd
    >>> class CohereLikeLayerNorm(torch.nn.Module):  # a layer norm written out, without bias
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.weight = torch.nn.Parameter(torch.ones(4))
    ...     def forward(self, x):
    ...         mean = x.mean(-1, keepdim=True)
    ...         variance = (x - mean).pow(2).mean(-1, keepdim=True)
    ...         return self.weight * ((x - mean) * torch.rsqrt(variance + 1e-5))
    >>> d = ncd.trace(torch.nn.Sequential(CohereLikeLayerNorm()), torch.randn(2, 3, 4))
    >>> sum(b.prim.op == "layernorm" for b in d.boxes())
    1
    """
    if not node.stack or "LayerNorm" not in node.stack[-1][1] or "RMS" in node.stack[-1][1]:
        return False
    x = node.args[0] if node.args else None
    if not isinstance(x, Node) or not x.live or not _mean_of_last(node, x) or id(x) not in conv.values:
        return False
    value = x.value
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float32 or value.dim() < 1 or value.shape[-1] < 2:
        return False
    if any(o is node for o in conv.captured.outputs):
        return False
    centred = conv.consumers.get(id(node), ())
    if not 1 <= len(centred) <= 2 or any(
            c.kind != "call" or not c.live or op_name(c.target)[1] != "aten.sub.Tensor" or c.kwargs
            or len(c.args) != 2 or c.args[0] is not x or c.args[1] is not node or id(c) in conv.skip
            or id(c) in conv.values or any(o is c for o in conv.captured.outputs) for c in centred):
        return False
    readers = [(c, r) for c in centred for r in conv.consumers.get(id(c), ())]
    if len(readers) != 2 or len({id(c) for c, _ in readers}) != len(centred):
        return False
    square = next((r for _, r in readers if op_name(r.target)[1] == "aten.pow.Tensor_Scalar"), None)
    product = next((r for _, r in readers if op_name(r.target)[1] == "aten.mul.Tensor"), None)
    if square is None or product is None or square.kwargs or len(square.args) != 2 \
            or square.args[1] not in (2, 2.0) or type(square.args[1]) is bool \
            or not square.live or id(square) in conv.skip or id(square) in conv.values:
        return False
    mean = _reader(conv, square, "aten.mean.dim")
    if mean is None or not _mean_of_last(mean, square):
        return False
    found = _root(conv, mean)
    if found is None or _reader(conv, found[2], "aten.mul.Tensor") is not product:
        return False
    add, eps, root = found
    centre = next(c for c, r in readers if r is product)
    if product.kwargs or len(product.args) != 2 or {id(a) for a in product.args} != {id(centre), id(root)} \
            or any(o is product for o in conv.captured.outputs) or not isinstance(product.value, torch.Tensor) \
            or product.value.shape != value.shape or product.value.dtype != value.dtype:
        return False
    from ncd.prims.normalization import LayerNormOp

    vid = conv.value(x)
    seg = conv.segs[vid]
    out = conv.apply(Box(LayerNormOp(Segment(seg.axes[-1:]), float(eps), affine=False, bias=False)), [vid])
    conv.skip |= {id(c) for c in centred} | {id(square), id(mean), id(add), id(root), id(product)}
    conv.bind(product, out)
    return True


def _squared(node: Node) -> Node | None:
    """``x`` when ``node`` is ``x * x``, ``x ** 2`` or ``x.square()`` of a live float32 ``x``; else None."""
    full = op_name(node.target)[1]
    args = node.args
    if node.kwargs or not args:
        return None
    x = args[0]
    if full == "aten.mul.Tensor":
        if len(args) != 2 or args[1] is not x:
            return None
    elif full == "aten.pow.Tensor_Scalar":
        if len(args) != 2 or args[1] not in (2, 2.0) or type(args[1]) is bool:
            return None
    elif full != "aten.square.default" or len(args) != 1:
        return None
    if not isinstance(x, Node) or not x.live or not isinstance(x.value, torch.Tensor):
        return None
    return x


def l2_norm(conv: Converter, node: Node) -> bool:
    """At ``x * x`` (or ``x ** 2``, ``x.square()``: ``node``): when it starts ``x * rsqrt(sum(x * x, -1, keepdim=True) +
    eps)`` or ``x / sqrt(…)`` (float32, each step read by the next only), that product is drawn as a weightless ``RMS`` box of
    ``eps / n`` then a ``*1/√n`` scale on ``x`` (``n``: the size of ``x``'s last axis) — once equal to the recorded
    product on the traced values — and True is returned; else nothing is drawn and False is returned.

    >>> import torch, ncd
    >>> class QueryNorm(torch.nn.Module):  # Gated DeltaNet's l2norm (after the FLA library)
    ...     def forward(self, x):
    ...         return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)
    >>> d = ncd.trace(QueryNorm(), torch.randn(2, 3, 16))
    >>> [b.prim.label() for b in d.boxes()]
    ['RMS', '*1/√(m)']
    >>> x = torch.randn(4, 5, 16)
    >>> torch.allclose(d.to_torch(b=4, t=5)(x), QueryNorm()(x), rtol=1e-5, atol=1e-7)
    True
    """
    x = _squared(node)
    if x is None or id(x) not in conv.values:
        return False
    value = x.value
    if value.dtype != torch.float32 or value.device.type == "meta" or value.dim() < 1 or value.shape[-1] < 1:
        return False
    total = _reader(conv, node, "aten.sum.dim_IntList")
    if total is None or total.kwargs or len(total.args) != 3 or total.args[0] is not node \
            or list(total.args[1] or ()) not in ([-1], [value.dim() - 1]) or total.args[2] is not True:
        return False
    added = _eps_added(conv, total)
    if added is None:
        return False
    add, eps = added
    root = _reader(conv, add, "aten.rsqrt.default")  # x * rsqrt(…) (Qwen's), or x / sqrt(…) (Kimi's, Bailing's)
    divided = root is None
    if divided:
        root = _reader(conv, add, "aten.sqrt.default")
    if root is None or len(root.args) != 1 or root.kwargs:
        return False
    product = _reader(conv, root, "aten.div.Tensor" if divided else "aten.mul.Tensor")
    if product is None or product.kwargs or len(product.args) != 2 \
            or (product.args[0] is not x or product.args[1] is not root if divided
                else {id(a) for a in product.args} != {id(x), id(root)}) \
            or not isinstance(product.value, torch.Tensor) or product.value.shape != value.shape \
            or product.value.dtype != value.dtype:
        return False
    n = int(value.shape[-1])
    # the proof: the boxes' computation (``nn.RMSNorm``'s: x * rsqrt(mean(x * x) + eps / n), then the scale) on the
    # traced values is the recorded product up to rounding: within 1e-5 of its largest entry (at most 1), NaN never;
    # written with the operations the model ran already (``torch.rms_norm`` and ``allclose`` called for the first time
    # took ~1.7 ms a norm)
    want = product.value
    got = value * torch.rsqrt((value * value).mean(-1, keepdim=True) + float(eps) / n) * n ** -0.5
    if not float((got - want).abs_().max()) <= 1e-5 * float(want.abs().max()):
        return False
    import sympy

    from ncd.prims.elementwise import ScaleOp
    from ncd.prims.normalization import RMSNormOp
    from ncd.trace.scale_factors import count_of

    vid = conv.value(x)
    seg = conv.segs[vid]
    if eps and seg.axes[-1].name.rstrip(PRIME) in ("b", "t"):  # ε/n is a number of the traced n: on the input's b or
        return False  # t wire the box, lowered at another size, would not be the model (its steps follow the size)
    out = conv.apply(Box(RMSNormOp(Segment(seg.axes[-1:]), float(eps) / n, affine=False)), [vid])
    out = conv.apply(Box(ScaleOp(count_of(conv, seg.axes[-1:]) ** sympy.Rational(-1, 2))), [out])
    conv.skip |= {id(total), id(add), id(root), id(product)}
    conv.bind(product, out)
    return True
