"""Recording on the meta device (a large model's calls run for their shapes only): the same records as torch's
Python meta kernels give, and the same diagram as recording on real values."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg

record = importlib.import_module("ncd.trace.record")


class ConvThenAttention(nn.Module):
    """A convolutional front end, an encoder layer (attention, norms, GELU) and a head: the calls of the audio and
    vision models the corpus records on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 10, stride=5)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.conv(x.unsqueeze(1))).transpose(1, 2)
        out: torch.Tensor = self.head(self.layer(h) * 0.5 + h)
        return out


def _python_meta(func: Any, args: Any, kwargs: Any) -> Any:
    """``func`` on meta copies with torch's Python dispatcher on (its decompositions: the reference)."""
    from torch._dispatch.python import enable_python_dispatcher

    with enable_python_dispatcher():
        margs, mkwargs = record._to_meta((args, kwargs))
        return func(*margs, **mkwargs)


def test_meta_records_match_the_python_meta_kernels_and_the_real_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = ConvThenAttention().eval(), torch.randn(2, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = to_svg(ncd.trace(model, x))
    checked = []
    fast = record._on_meta_device

    def compared(func: Any, args: Any, kwargs: Any, memo: Any = None) -> Any:
        margs, mkwargs, out = fast(func, args, kwargs, memo)
        want = _python_meta(func, args, kwargs)
        got_leaves, want_leaves = torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(want)
        assert len(got_leaves) == len(want_leaves), func
        for got, ref in zip(got_leaves, want_leaves):
            if isinstance(ref, torch.Tensor):
                assert got.device.type == "meta", func
                assert (got.shape, got.stride(), got.dtype, got.storage_offset(), got._base is None) == \
                    (ref.shape, ref.stride(), ref.dtype, ref.storage_offset(), ref._base is None), func
            else:
                assert got == ref, func
        checked.append(func)
        return margs, mkwargs, out

    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "_on_meta_device", compared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = to_svg(ncd.trace(model, x))
    names = {f.overloadpacket.__name__ for f in checked}
    assert {"conv1d", "linear"} <= names and len(checked) >= 10, names
    assert meta == real


class Layers(nn.Module):
    """Four equal encoder layers after a convolution: the last three make the same calls on the same shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 10, stride=5)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
                                    for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.conv(x.unsqueeze(1))).transpose(1, 2)
        for layer in self.layers:
            h = layer(h) * 0.5 + h
        return h


def test_repeated_meta_calls_remake_the_outputs_the_meta_kernels_give(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = Layers().eval(), torch.randn(2, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = to_svg(ncd.trace(model, x))
    remade, differ = [], []
    fast = record._on_meta_device

    def compared(func: Any, args: Any, kwargs: Any, memo: Any = None) -> Any:
        assert memo is not None
        hit = record._meta_key(func, *record._to_meta((args, kwargs))) in memo
        margs, mkwargs, out = fast(func, args, kwargs, memo)
        if hit:  # made from an earlier call's metadata: as the kernel makes it (differences listed: raising here
            remade.append(func.overloadpacket.__name__)  # would only make the trace record again on real values)
            want = fast(func, args, kwargs, None)[2]
            for got, ref in zip(torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(want), strict=True):
                if record._described(got) != record._described(ref):
                    differ.append((func, record._described(got), record._described(ref)))
        return margs, mkwargs, out

    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "_on_meta_device", compared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = to_svg(ncd.trace(model, x))
    assert not differ
    assert {"linear", "scaled_dot_product_attention", "add"} <= set(remade) and len(remade) >= 20, remade
    assert meta == real
