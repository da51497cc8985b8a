"""``nn.TransformerEncoder``'s inference fast path, recorded as what it computes.

The recorder turns torch's fused attention path off (``torch.backends.mha``: its kernel hides the attention it
computes), and with it the encoder's nested-tensor path.  That path does not only fuse: in eval mode without gradients,
given a ``src_key_padding_mask`` (and no ``mask``) on an encoder built with ``enable_nested_tensor``, the encoder packs
the unpadded rows into a nested tensor, runs its layers on them and pads the result back with zeros — the padded rows
of its output (before its final norm) are ``0``, where the path the recorder takes computes them.  So, where the model
would take that path, the last layer's output is recorded with its padded rows filled with ``0`` (only when every row's
padding is at its end, as torch checks unless ``mask_check=False``: otherwise torch takes the other path too), and a
warning says that with gradients enabled the model computes those rows (its values elsewhere are the same).

``nn.MultiheadAttention``'s own fast path (``torch._native_multi_head_attention``, in eval mode when no gradient is
recorded) differs from the path recorded on one input only: a sample whose keys are all padded (``key_padding_mask``
all True) gives NaN there, and 0 on the path with gradients (``scaled_dot_product_attention``, when
``need_weights=False``), which the diagram computes.  No value to record tells the two apart, so a warning names the
attention modules called so (:func:`padded_samples`); with ``need_weights=True`` both paths give NaN, as the diagram.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["nested_padding", "padded_samples"]

#: how many nn.TransformerEncoder calls taking the nested-tensor path are running (their padded rows are 0 anyway)
_NESTED: list[int] = [0]


def _applies(encoder: torch.nn.Module, src: Any, mask: Any, padding: Any) -> bool:
    """Whether ``encoder(src, mask, src_key_padding_mask=padding)`` would take the nested-tensor path (torch's checks
    but the left alignment of the padding, which depends on the values, and the gradient mode)."""
    layers = getattr(encoder, "layers", None)
    return (bool(getattr(encoder, "use_nested_tensor", False)) and isinstance(layers, torch.nn.ModuleList)
            and len(layers) > 0 and not layers[0].training and isinstance(src, torch.Tensor) and src.dim() == 3
            and isinstance(padding, torch.Tensor) and mask is None and not src.is_nested
            and not torch.is_autocast_enabled() and src.device.type in ("cpu", "cuda", "xpu"))


@contextlib.contextmanager
def nested_padding(model: torch.nn.Module, fast: bool, paths: dict[int, str]) -> Iterator[None]:
    """While recording ``model`` (``fast``: torch's fast path as the caller had it; ``paths``: its modules' paths by
    id): each ``nn.TransformerEncoder`` call that would take the nested-tensor path has its last layer's padded rows
    recorded as ``0``, and a warning names the encoders that did."""
    if not fast:
        yield
        return
    cls = torch.nn.TransformerEncoder
    original = cls.forward
    seen: set[str] = set()

    def forward(self: torch.nn.TransformerEncoder, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool | None = None) -> torch.Tensor:
        padding = src_key_padding_mask
        if not _applies(self, src, mask, padding):
            return original(self, src, mask, src_key_padding_mask, is_causal)
        assert isinstance(padding, torch.Tensor)
        pad = padding if padding.dtype == torch.bool else padding != 0
        check = getattr(self, "mask_check", True)

        def zeroed(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or output.dim() != 3:
                return None
            zero = pad
            if check:  # torch takes that path only when every row's padding is at its end
                valid = pad.logical_not()
                aligned = valid[:, 1:].logical_and(valid[:, :-1].logical_not()).any().logical_not()
                zero = pad.logical_and(aligned)
            return output.masked_fill(zero.unsqueeze(-1), 0.0)

        seen.add(paths.get(id(self), "") or type(self).__name__)
        handle = self.layers[-1].register_forward_hook(zeroed)
        _NESTED[0] += 1
        try:
            return original(self, src, mask, src_key_padding_mask, is_causal)
        finally:
            _NESTED[0] -= 1
            handle.remove()

    cls.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.forward = original  # type: ignore[method-assign]
    if seen:
        warnings.warn(f"ncd.trace({type(model).__name__}): nn.TransformerEncoder ({', '.join(sorted(seen))}) run in eval"
                      " mode with a src_key_padding_mask takes torch's nested-tensor path, which outputs 0 at the padded"
                      " positions (before its norm) when no gradient is recorded: the diagram computes that; with"
                      " gradients enabled the model computes those rows", RuntimeWarning, stacklevel=4)


def _fast_attention(attention: torch.nn.MultiheadAttention, query: Any, key: Any, value: Any, padding: Any,
                    need_weights: bool, attn_mask: Any) -> bool:
    """Whether ``attention(query, key, value, key_padding_mask=padding, need_weights=need_weights,
    attn_mask=attn_mask)``, a call given a boolean padding mask (or a boolean mask leaving a query no key) and no
    weights asked, would take torch's fast path
    when no gradient is recorded (torch's checks in ``MultiheadAttention.forward`` but the gradient mode)."""
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    masks = (isinstance(padding, torch.Tensor) and padding.dtype == torch.bool
             or padding is None and _empty_row(attn_mask))
    return (masks and not need_weights
            and (attn_mask is None or isinstance(attn_mask, torch.Tensor) and attn_mask.dtype == torch.bool)
            and isinstance(query, torch.Tensor) and query.dim() == 3 and query is key and key is value
            and not query.is_nested and weight is not None and bias is not None
            and query.dtype == weight.dtype == bias.dtype and not attention.training and attention.num_heads % 2 == 0
            and attention.batch_first and attention.bias_k is None and attention.bias_v is None
            and not attention.add_zero_attn and attention._qkv_same_embed_dim and not torch.is_autocast_enabled()
            and query.device.type in ("cpu", "cuda"))


def _empty_row(mask: Any) -> bool:
    """Whether an attention mask (bool: True where a key is masked; float: ``-inf`` there) leaves some query no key."""
    if not isinstance(mask, torch.Tensor) or mask.dim() < 2 or mask.is_meta or not mask.numel():
        return False
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch._C._DisablePythonDispatcher():  # (read outside the recording: no node, no
        masked = mask if mask.dtype == torch.bool else torch.isneginf(mask) if mask.is_floating_point() else None
        return masked is not None and bool(masked.all(-1).any())  # guard on a mask that depends on the inputs)


def _fast_layer(layer: torch.nn.TransformerEncoderLayer, src: Any, padding: Any, mask: Any = None) -> bool:
    """Whether ``layer(src, mask, src_key_padding_mask=padding)``, given a padding mask or a mask leaving a query no
    key, would take torch's fused encoder-layer path when no
    gradient is recorded (torch's checks in ``TransformerEncoderLayer.forward`` but the gradient mode; the layer
    turns the mask into a float one, which ``nn.MultiheadAttention``'s own fast path refuses)."""
    attention = layer.self_attn
    return ((isinstance(padding, torch.Tensor) or _empty_row(mask)) and isinstance(src, torch.Tensor) and src.dim() == 3
            and not src.is_nested and not layer.training and attention.batch_first
            and attention.in_proj_bias is not None and attention._qkv_same_embed_dim
            and bool(getattr(layer, "activation_relu_or_gelu", False)) and layer.norm1.eps == layer.norm2.eps
            and attention.num_heads % 2 == 0 and not torch.is_autocast_enabled()
            and src.device.type in ("cpu", "cuda", "xpu"))


@functools.cache
def _signature(forward: Any) -> inspect.Signature:
    return inspect.signature(forward)


def _arguments(forward: Any, module: torch.nn.Module, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``forward``'s arguments by name, defaults filled in (None when they do not bind: the forward will say so)."""
    try:
        bound = _signature(forward).bind(module, *args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


@contextlib.contextmanager
def padded_samples(model: torch.nn.Module, fast: bool, paths: dict[int, str]) -> Iterator[None]:
    """While recording ``model`` (``fast``: torch's fast path as the caller had it): a warning names each
    ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` called as its fast path would be taken in eval mode
    without gradients, where a sample whose keys are all padded gives NaN and the diagram 0 (outside an
    ``nn.TransformerEncoder`` taking its nested-tensor path, which outputs 0 there too)."""
    if not fast:
        yield
        return
    attention_cls, layer_cls = torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer
    attention_forward, layer_forward = attention_cls.forward, layer_cls.forward
    seen: set[str] = set()

    def attention(self: torch.nn.MultiheadAttention, *args: Any, **kwargs: Any) -> Any:
        if not _NESTED[0]:
            a = _arguments(attention_forward, self, args, kwargs)
            if a is not None and _fast_attention(self, a.get("query"), a.get("key"), a.get("value"),
                                                 a.get("key_padding_mask"), a.get("need_weights", True),
                                                 a.get("attn_mask")):
                seen.add(f"{paths.get(id(self), '') or 'the model'} (nn.MultiheadAttention, need_weights=False)")
        return attention_forward(self, *args, **kwargs)

    def layer(self: torch.nn.TransformerEncoderLayer, *args: Any, **kwargs: Any) -> Any:
        if not _NESTED[0]:
            a = _arguments(layer_forward, self, args, kwargs)
            if a is not None and _fast_layer(self, a.get("src"), a.get("src_key_padding_mask"), a.get("src_mask")):
                seen.add(f"{paths.get(id(self), '') or 'the model'} (nn.TransformerEncoderLayer)")
        return layer_forward(self, *args, **kwargs)

    attention_cls.forward, layer_cls.forward = attention, layer  # type: ignore[method-assign]
    try:
        yield
    finally:
        attention_cls.forward, layer_cls.forward = attention_forward, layer_forward  # type: ignore[method-assign]
    if seen:
        warnings.warn(f"ncd.trace({type(model).__name__}): {', '.join(sorted(seen))} called in eval mode with a key"
                      " padding mask (or a mask leaving a query no key): torch's fast path, taken there when no gradient"
                      " is recorded, gives NaN for a sample whose keys are all padded (and a query left no key); the"
                      " diagram gives 0 there, as the model does with gradients enabled (its values elsewhere are the"
                      " same)", RuntimeWarning, stacklevel=4)
