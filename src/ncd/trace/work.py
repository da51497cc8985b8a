"""A call's arithmetic, estimated from the shapes of its arguments before it runs: how much the recorder's real kernels
would compute for it (:mod:`ncd.trace.record` records a large model on the meta device, shapes only, once its calls
would compute more than a budget of it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["work", "multiply_adds"]

#: a tensor's entries and sizes as plain ints: asked while recording, where ``Tensor.numel`` and ``Tensor.shape`` are
#: patched to follow the sizes the model reads (:class:`ncd.trace.shapes.Shapes`), which these reads are not
_entries = torch._C.TensorBase.numel
_shape: Callable[[torch.Tensor], torch.Size] = torch._C.TensorBase.shape.__get__  # type: ignore[attr-defined]


#: contractions ``a @ b``: the index of ``a`` among the arguments (``b`` follows it)
_PRODUCTS = {"matmul": 0, "mm": 0, "bmm": 0, "mv": 0, "dot": 0, "vdot": 0, "inner": 0, "addmm": 1, "baddbmm": 1,
             "addbmm": 1, "addmv": 1}
_CONVOLUTIONS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
                           "conv_transpose2d", "conv_transpose3d"})


def _largest(value: Any) -> int:
    """The most entries of a tensor among ``value`` (and in its lists)."""
    if isinstance(value, torch.Tensor):
        return int(_entries(value))
    if isinstance(value, (tuple, list)):
        most = 0
        for v in value:  # (a loop, plain tensors and numbers first: asked for every call recorded within a budget)
            kind = type(v)
            if kind is _TENSOR:
                n = _entries(v)
            elif kind in _NO_TENSOR:
                continue
            else:
                n = _largest(v)
            if n > most:
                most = n
        return int(most)
    if isinstance(value, dict):
        return _largest(list(value.values()))
    return 0


_TENSOR = torch.Tensor


#: argument types that hold no tensor
_NO_TENSOR = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})


def _size(value: Any) -> int:
    """A stride argument's product (an int, or one per spatial axis)."""
    if isinstance(value, int):
        return max(value, 1)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return max(math.prod(value), 1)
    return 1


#: what reading or writing one entry costs, in multiply-adds (an elementwise kernel, a depthwise convolution's)
ENTRY = 5


#: the operators :func:`multiply_adds` counts
_CONTRACTIONS = frozenset({"linear", "scaled_dot_product_attention", "einsum", *_PRODUCTS, *_CONVOLUTIONS})


def work(packet: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """:func:`multiply_adds` plus :data:`ENTRY` for each entry of the largest tensor argument."""
    return multiply_adds(packet, args, kwargs) + ENTRY * _largest(args)


def multiply_adds(packet: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The multiply-adds of a contraction (``linear``, ``matmul``, a convolution, attention, ``einsum``), else none: with
    :func:`work`, a deterministic stand-in for the time a call's kernel takes, read from the shapes of its arguments."""
    if packet not in _CONTRACTIONS:
        return 0
    tensor = torch.Tensor
    first = args[0] if args else None
    second = args[1] if len(args) > 1 else None
    if packet == "linear" and isinstance(first, tensor) and isinstance(second, tensor) and second.dim() == 2:
        return int(_entries(first)) * _shape(second)[0]
    index = _PRODUCTS.get(packet)
    if index is not None and len(args) > index + 1 and isinstance(args[index], tensor) \
            and isinstance(args[index + 1], tensor):
        a, b = args[index], args[index + 1]
        return int(_entries(a)) * (_shape(b)[-1] if b.dim() > 1 else 1)
    if packet in _CONVOLUTIONS and isinstance(first, tensor) and isinstance(second, tensor) \
            and len(weight := _shape(second)) > 2:
        kernel = weight[1] * math.prod(weight[2:])  # (out, in/groups, *kernel)
        transposed = packet.startswith("conv_transpose") or (len(args) > 6 and args[6] is True)
        if transposed:  # (in, out/groups, *kernel): each input entry spreads over out/groups · kernel outputs
            return int(_entries(first)) * kernel
        sizes = _shape(first)
        channels = sizes[1] if len(sizes) == len(weight) else sizes[0]  # (batched or not)
        stride = _size(args[3] if len(args) > 3 else kwargs.get("stride", 1))
        return int(_entries(first)) // max(channels, 1) // stride * weight[0] * kernel
    if packet == "scaled_dot_product_attention" and len(args) > 2 \
            and all(isinstance(a, tensor) and a.dim() > 1 for a in args[:3]):
        q, k, v = (_shape(t) for t in args[:3])
        rows = int(_entries(args[0])) // max(q[-1], 1)  # every query against every key: scores and their weighted sum
        return rows * k[-2] * (q[-1] + v[-1])
    if packet == "einsum" and isinstance(first, str) and isinstance(second, (tuple, list)):
        return _einsum(first, second)
    return 0


def _einsum(equation: str, operands: Any) -> int:
    """The product of every index's size (the terms of the sum the equation is), or none where the equation is not the
    plain form (ellipses)."""
    sizes: dict[str, int] = {}
    inputs = equation.split("->")[0].split(",")
    if "." in equation or len(inputs) != len(operands):
        return 0
    for letters, operand in zip(inputs, operands):
        letters = letters.strip()
        if not isinstance(operand, torch.Tensor) or len(letters) != operand.dim():
            return 0
        for letter, size in zip(letters, _shape(operand)):
            sizes[letter] = size
    return math.prod(sizes.values())
