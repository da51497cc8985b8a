"""``nn.MultiheadAttention`` recorded as the attention it computes, in fewer operations than torch's own forward.

Torch's ``F.multi_head_attention_forward`` runs some thirty operators for one attention call: its packed input
projection goes through ``unflatten``, ``unsqueeze``, ``transpose``, ``squeeze``, ``contiguous`` and three ``select``\\ s,
each of ``q``, ``k``, ``v`` is viewed and transposed twice, a key padding mask is viewed, expanded and reshaped to one
row per head.  Recorded, each of those is a node the converter reads and the movement fusion folds away again.

While the recorder runs, a call of an ``nn.MultiheadAttention`` whose forward is torch's own (not a subclass's), with
no key/value biases, no zero attention, no dropout at work, no weights asked for and batched inputs on a real device, is
recorded as :func:`_lean`: the same projections (one packed ``linear`` for self-attention, a query and a key/value
``linear`` for cross-attention, as torch splits them), ``view`` + ``transpose`` to heads, torch's own canonical masks
(a padding mask viewed to broadcast over heads and queries, added to the attention mask as torch adds them),
``scaled_dot_product_attention`` with torch's ``is_causal`` rule, the heads merged back and the output projection.

Never on a class name: the lean forward replaces the module's only where it gives the very values — both are run on
the traced values (the module's outside the recording), and the lean one stands for the call only when its output
is ``torch.equal`` to the module's own; on the ``meta`` device, where no value is known, both run (outside the
recording) on random values of the inputs' shapes and dtypes instead, so a model recorded on meta draws as on real
values.  Otherwise the module's own forward is recorded as before, and the lean calls, which then reach no output,
are pruned with the recording's other dead calls.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

# torch's ``_disable_current_modes`` (used below) imports this module at its first call (~1 ms of CPU): imported
# here, with ncd, not inside the first trace of a model with an ``nn.MultiheadAttention``
import torch._subclasses.schema_check_mode  # noqa: F401
import torch.nn.functional as F

__all__ = ["lean_attention"]


def _applies(m: torch.nn.MultiheadAttention, query: Any, key: Any, value: Any, need_weights: bool) -> bool:
    """Whether the call may be recorded lean (what :func:`_lean` computes as torch does, shapes aside)."""
    tensors = (query, key, value)
    return (not need_weights and all(isinstance(t, torch.Tensor) and t.dim() == 3 and not t.is_nested for t in tensors)
            and m._qkv_same_embed_dim and m.in_proj_weight is not None and m.bias_k is None and m.bias_v is None
            and not m.add_zero_attn and (not m.training or m.dropout == 0.0)
            and query.shape[-1] == m.embed_dim and key.shape == value.shape
            and m.embed_dim % m.num_heads == 0 and not torch.is_autocast_enabled())


def _lean(m: torch.nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
          key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """The attention output of ``m(query, key, value, key_padding_mask, need_weights=False, attn_mask, is_causal)``
    (:func:`_applies`), in torch's arithmetic with fewer movements."""
    padding = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                target_type=query.dtype)
    mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                             target_type=query.dtype, check_other=False)
    first = m.batch_first
    if first:
        b, t, e = query.shape
        s = key.shape[1]
    else:
        t, b, e = query.shape
        s = key.shape[0]
    heads = m.num_heads
    d = e // heads
    if is_causal and mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
    if is_causal and padding is None:
        mask = None  # (torch gives sdpa the hint, not the mask)
    else:
        is_causal = False
    if mask is not None:
        if mask.dim() == 2:
            if tuple(mask.shape) != (t, s):
                raise RuntimeError(f"The shape of the 2D attn_mask is {mask.shape}, but should be {(t, s)}.")
        elif mask.dim() == 3 and tuple(mask.shape) == (b * heads, t, s):
            mask = mask.view(b, heads, t, s)
        else:
            raise RuntimeError(f"attn_mask of shape {tuple(mask.shape)} is not supported")
    if padding is not None:
        if tuple(padding.shape) != (b, s):
            raise RuntimeError(f"expecting key_padding_mask shape of {(b, s)}, but got {padding.shape}")
        padding = padding.view(b, 1, 1, s)
        mask = padding if mask is None else mask + padding
    w, bias = m.in_proj_weight, m.in_proj_bias

    def heads_of(x: torch.Tensor) -> torch.Tensor:  # (.., e) -> (b, heads, n, d)
        return x.view(b, -1, heads, d).transpose(1, 2) if first else x.view(-1, b, heads, d).permute(1, 2, 0, 3)

    if query is key and key is value:
        p = F.linear(query, w, bias)
        q, k, v = (heads_of(p[..., i * e:(i + 1) * e]) for i in range(3))
    elif key is value:
        w_q, w_kv = w.split_with_sizes([e, 2 * e])  # (as torch splits them: drawn as two projections)
        b_q, b_kv = bias.split_with_sizes([e, 2 * e]) if bias is not None else (None, None)
        q = heads_of(F.linear(query, w_q, b_q))
        p = F.linear(key, w_kv, b_kv)
        k, v = heads_of(p[..., :e]), heads_of(p[..., e:])
    else:
        w_q, w_k, w_v = w.chunk(3)
        b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)
        q, k, v = (heads_of(F.linear(x, w_x, b_x)) for x, w_x, b_x in ((query, w_q, b_q), (key, w_k, b_k),
                                                                       (value, w_v, b_v)))
    out = F.scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal)
    out = out.transpose(1, 2) if first else out.permute(2, 0, 1, 3)
    return F.linear(out.reshape(*out.shape[:2], e), m.out_proj.weight, m.out_proj.bias)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want)


def _probes(given: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """``given`` with each meta tensor replaced by random values of its shape and dtype on ``device`` (one tensor
    given twice, one probe; a boolean mask about a quarter True; a generator seeded 0, not torch's global one)."""
    gen = torch.Generator().manual_seed(0)
    made: dict[int, Any] = {}
    for t in given:
        if isinstance(t, torch.Tensor) and t.is_meta and id(t) not in made:
            shape = tuple(t.shape)
            made[id(t)] = (torch.rand(shape, generator=gen) > 0.75 if t.dtype == torch.bool
                           else torch.randn(shape, generator=gen).to(t.dtype)).to(device)
    return tuple(made.get(id(t), t) for t in given)


@contextlib.contextmanager
def lean_attention() -> Iterator[None]:
    """While recording: ``nn.MultiheadAttention`` calls recorded as :func:`_lean` where it gives the module's values."""
    from torch.utils._python_dispatch import _disable_current_modes

    from ncd.trace.shapes import sizes_plain

    cls = torch.nn.MultiheadAttention
    original = cls.forward

    def forward(self: torch.nn.MultiheadAttention, query: Any, key: Any, value: Any,
                key_padding_mask: Any = None, need_weights: bool = True, attn_mask: Any = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> Any:
        with sizes_plain():  # (ncd's own reads of the call, not the model's)
            lean = type(self).forward is cls.forward and _applies(self, query, key, value, need_weights)
        if lean:
            given = (query, key, value, key_padding_mask, attn_mask)
            on_meta = any(isinstance(t, torch.Tensor) and t.is_meta for t in given)
            proven = False
            try:
                with _disable_current_modes(), torch._C._DisablePythonDispatcher(), sizes_plain():  # (not recorded)
                    # no value is known on the meta device: both forwards run on random values of the inputs' shapes
                    q, k, v, pad, mask = _probes(given, self.in_proj_weight.device) if on_meta else given
                    want = original(self, q, k, v, pad, False, mask, average_attn_weights, is_causal)[0]
                    if on_meta:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            proven = _same(_lean(self, q, k, v, pad, mask, is_causal), want)
            except Exception:  # noqa: BLE001 - the module's own forward, recorded below, raises what it raises
                want = None
            if isinstance(want, torch.Tensor) and (proven or not on_meta):
                try:
                    with warnings.catch_warnings():  # (the module's run above said what torch says of these masks)
                        warnings.simplefilter("ignore")
                        got = _lean(self, query, key, value, key_padding_mask, attn_mask, is_causal)
                except Exception:  # noqa: BLE001 - what it recorded reaches no output: the module's forward decides
                    got = None
                if got is not None:
                    with _disable_current_modes(), torch._C._DisablePythonDispatcher(), sizes_plain():  # (a read)
                        same = got.shape == want.shape and got.dtype == want.dtype if on_meta else _same(got, want)
                    if same:
                        return got, None
                # (else the module's own forward is recorded: the lean calls reach no output and are pruned)
        return original(self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                        is_causal)

    cls.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.forward = original  # type: ignore[method-assign]
