"""``nn.TransformerEncoder``'s inference fast path, recorded as what it computes.

The recorder turns torch's fused attention path off (``torch.backends.mha``: its kernel hides the attention it
computes), and with it the encoder's nested-tensor path.  That path does not only fuse: in eval mode without gradients,
given a ``src_key_padding_mask`` (and no ``mask``) on an encoder built with ``enable_nested_tensor``, the encoder packs
the unpadded rows into a nested tensor, runs its layers on them and pads the result back with zeros — the padded rows
of its output (before its final norm) are ``0``, where the path the recorder takes computes them.  So, where the model
would take that path, the last layer's output is recorded with its padded rows filled with ``0`` (only when every row's
padding is at its end, as torch checks unless ``mask_check=False``: otherwise torch takes the other path too), and a
warning says that with gradients enabled the model computes those rows (its values elsewhere are the same).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["nested_padding"]


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
        try:
            return original(self, src, mask, src_key_padding_mask, is_causal)
        finally:
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
