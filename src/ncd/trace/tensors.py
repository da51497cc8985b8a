"""Tensors' memory and values as the recorder compares them (:mod:`ncd.trace.record`, :mod:`ncd.trace.aliases`)."""

from __future__ import annotations

from typing import Any

import torch


def _sharing(names: list[str], leaves: list[Any]) -> dict[str, str]:
    """The tensor arguments that share memory with an earlier one (the same tensor twice, or views of one tensor):
    each one's name -> the earlier argument's name."""
    seen: dict[int, str] = {}
    shared = {}
    for name, value in zip(names, leaves):
        if not isinstance(value, torch.Tensor) or value.device.type == "meta" or value.untyped_storage().nbytes() == 0:
            continue
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen:
            shared[name] = seen[ptr]
        else:
            seen[ptr] = name
    return shared


def _like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)`` of a meta tensor: for a contiguous one (channels-last too) an ``empty_strided`` of its
    strides, as ``empty_like`` keeps them (its meta kernel is a Python reference, ~25 us a call; this ~2 us)."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    return torch.empty_like(x)


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` share memory (any two meta tensors might)."""
    if a.device.type == "meta" or b.device.type == "meta":
        return True
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


#: tensors of at least this many bytes are compared bit for bit first (:func:`_same_bits`)
WORDS_ABOVE = 1 << 16


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (of one shape and dtype) hold the same bits, compared as 8-byte words: both plain dense
    tensors laid out in the same order, with no lazy negation or conjugation.  Equal bits are equal values (a NaN the
    same NaN); False may also mean "not known" (other bits, or a layout not compared so).  ``torch.equal`` steps through
    float32 entries one at a time; a word holds two of them (longformer: 31 compares of 2-8 MB a trace, 1.2 -> 0.6 ms
    per 8 MB)."""
    if type(a) is not torch.Tensor or type(b) is not torch.Tensor or a.layout != torch.strided \
            or b.layout != torch.strided or a.device != b.device or a.device.type == "meta" or a.is_quantized \
            or a.is_neg() or b.is_neg() or a.is_conj() or b.is_conj() or not a.is_contiguous() or not b.is_contiguous():
        return False
    try:
        return bool(torch.equal(a.reshape(-1).view(torch.int64), b.reshape(-1).view(torch.int64)))
    except RuntimeError:  # a size or an offset not a whole number of words
        return False


def _one_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are the same entries of one memory: the same type, shape and first address, the same
    stride along every axis of more than one entry, no lazy negation or conjugation.  Then they hold the same bits;
    False says nothing (a view cut again from the tensor a write changed: longformer's 8 MB transposed band of scores,
    ~0.5 ms an entrywise comparison)."""
    if type(a) is not torch.Tensor or type(b) is not torch.Tensor or a.layout != torch.strided \
            or b.layout != torch.strided or a.device != b.device or a.device.type == "meta" or a.dtype != b.dtype \
            or a.shape != b.shape or a.is_neg() or b.is_neg() or a.is_conj() or b.is_conj() or a.is_quantized:
        return False
    return a.data_ptr() == b.data_ptr() and all(s == t for s, t, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values (NaN equal to NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.numel() * a.element_size() >= WORDS_ABOVE and _same_bits(a, b):
        return True
    if torch.equal(a, b):  # one pass, no temporaries: the usual answer
        return True
    if a.is_floating_point() or a.is_complex():  # unequal only where both are NaN?
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return False


def _discrete(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() and not value.is_complex()
    if isinstance(value, (tuple, list)):
        return any(_discrete(v) for v in value)
    return False


def _device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.device):
        return device if value.type == "meta" else value
    if isinstance(value, tuple):
        return tuple(_device(v, device) for v in value)
    if isinstance(value, list):
        return [_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _device(v, device) for k, v in value.items()}
    return value


def _laid_out_as(value: torch.Tensor) -> torch.Tensor:
    """A copy of an input with its strides and storage offset (``clone`` keeps the strides only for a dense tensor: a
    slice ``x[::2]`` became contiguous, and a model reading ``x.stride()`` was drawn computing with the copy's
    strides, not the input's; a slice ``x[1:]`` read at ``x.storage_offset()`` 0, not 4)."""
    copy = value.clone()
    if value.layout != torch.strided or 0 in value.stride() or not value.numel() or \
            (copy.stride() == value.stride() and (value.device.type == "meta" or not value.storage_offset())):
        return copy
    if value.device.type == "meta" or not value.storage_offset():
        out = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)
    else:  # the same offset into memory of its own (entries before it unread)
        offset = value.storage_offset()
        span = 1 + sum((n - 1) * s for n, s in zip(value.shape, value.stride()))
        memory = torch.empty(offset + span, dtype=value.dtype, device=value.device).untyped_storage()
        out = torch.empty(0, dtype=value.dtype, device=value.device).set_(memory, offset, value.shape, value.stride())
    try:
        return out.copy_(value)
    except RuntimeError:  # strides whose entries overlap: one copy of each entry, as before
        return copy
