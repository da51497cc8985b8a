"""The root-mean-square normalisation an RMS-norm module computes, read off its recorded operations when the module
as a whole is not one box.

:meth:`~ncd.trace.module_idioms.ModuleIdioms.module_idiom` draws an RMS-norm module as one ``RMS`` box when it computes
``rms_norm(x, w)`` (checked on values).  A module that scales by something else — Gemma's ``(1 + w)``, a gated norm's
``w * silu(gate)`` — is walked operation by operation, and its normalisation ``x * rsqrt(mean(x ** 2, -1, keepdim) +
eps)`` was five boxes (square, mean, add, root, product) in every definition of every such module.  Those five recorded
operations, in that order, each read only by the next, are that normalisation over the last axis exactly: one ``RMS``
box (no weight, :class:`~ncd.prims.normalization.RMSNormOp`); the rest of the module (its scale) is walked as before.

The operations are matched by what they are, not by the module's class; the class only says where to look (inside a
module named an RMS norm, where the module idiom looks too)."""

from __future__ import annotations

import math

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter
from ncd.trace.registry import op_name

__all__ = ["root_mean_square"]


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
    """At ``x ** 2`` (``node``): when it starts ``x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps)`` inside an RMS-norm
    module, that product is drawn as one ``RMS`` box on ``x`` (the four later operations skipped) and True is returned;
    else nothing is drawn and False is returned.

    >>> import torch, ncd
    >>> class ZeroCentredRMSNorm(torch.nn.Module):  # Gemma's: scaled by (1 + w)
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.weight = torch.nn.Parameter(torch.zeros(4))
    ...     def forward(self, x):
    ...         return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + self.weight)
    >>> d = ncd.trace(torch.nn.Sequential(ZeroCentredRMSNorm()), torch.randn(2, 3, 4))
    >>> sum(b.prim.op == "rmsnorm" for b in d.boxes())
    1
    """
    if not node.stack or "RMSNorm" not in node.stack[-1][1] or op_name(node.target)[1] != "aten.pow.Tensor_Scalar":
        return False
    x = node.args[0] if node.args else None
    if len(node.args) != 2 or node.kwargs or node.args[1] not in (2, 2.0) or type(node.args[1]) is bool \
            or not isinstance(x, Node) or not x.live or not isinstance(x.value, torch.Tensor):
        return False
    value = x.value
    if value.dtype != torch.float32 or value.dim() < 1 or value.shape[-1] < 1 or id(x) not in conv.values:
        return False
    mean = _reader(conv, node, "aten.mean.dim")
    if mean is None or len(mean.args) != 3 or mean.kwargs or mean.args[0] is not node \
            or list(mean.args[1] or ()) not in ([-1], [value.dim() - 1]) or mean.args[2] is not True:
        return False
    add = _reader(conv, mean, "aten.add.Tensor")
    if add is None or add.kwargs or len(add.args) != 2 or add.args[0] is not mean or add.sized:
        return False
    eps = add.args[1]
    if type(eps) not in (int, float) or not 0 <= eps < math.inf:
        return False
    root = _reader(conv, add, "aten.rsqrt.default")
    if root is None or len(root.args) != 1 or root.kwargs:
        return False
    product = _reader(conv, root, "aten.mul.Tensor")
    if product is None or product.kwargs or len(product.args) != 2 or {id(a) for a in product.args} != {id(x), id(root)} \
            or not isinstance(product.value, torch.Tensor) or product.value.shape != value.shape \
            or product.value.dtype != value.dtype:
        return False
    from ncd.prims.normalization import RMSNormOp

    vid = conv.value(x)
    seg = conv.segs[vid]
    out = conv.apply(Box(RMSNormOp(Segment(seg.axes[-1:]), float(eps), affine=False)), [vid])
    conv.skip |= {id(mean), id(add), id(root), id(product)}
    conv.bind(product, out)
    return True
