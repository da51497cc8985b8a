"""A large tensor made by ``new_zeros`` and filled through views (longformer's band of attention scores): its recorded
value is kept through the first write as a zero expanded to its shape, not a copy (:func:`ncd.trace.inplace._zeros_kept`),
and every recorded value, the diagram and its gradients are still the model's.  A view read again after a write is
proven its region by its memory (:func:`ncd.trace.tensors._one_memory`), not compared entry by entry."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.trace.capture import Node, capture, refs


class Band(torch.nn.Module):
    """Chunks of scores copied into a fresh zero tensor of 2 MB (as longformer's ``_sliding_chunks_query_key_matmul``),
    the zeros read by a call before the first write and the tensor read between two writes and after them."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, 256, 16)
        h = self.lin(x)
        s = h @ h.transpose(1, 2)  # (b, 256, 256)
        band = s.new_zeros(s.shape[0], 2, 128, 257)  # float32, b = 8: 2.1 MB
        before = band[:, 1, :4].sum(-1)  # read while it holds zeros
        band[:, 0, :, 128:] = s[:, :128, :129]
        band[:, 1, :, 128:] = s[:, 128:, 127:]
        middle = band.sum(-1)  # read between two writes
        band[:, 1:, :, :128] = s[:, 128:, :128].unsqueeze(1)
        band[:, 0, 1:, 1:128] = torch.tanh(s[:, 1:128, 1:128])
        scores = band.view(band.shape[0], 256, 257)
        return scores.softmax(-1).sum(-1) + middle.flatten(1) + before.sum(-1, keepdim=True)


def _replayed(nodes: list[Node]) -> int:
    """Replay every recorded call on its arguments' recorded values: each gives the value recorded for it (but where
    a value was forgotten, a ``meta`` tensor: memory a later write reused, read for its shape only)."""

    def value(a: object) -> object:
        if isinstance(a, Node):
            return a.value
        if isinstance(a, (list, tuple)):
            return type(a)(value(b) for b in a)
        return a

    count = 0
    for node in nodes:
        args = refs((node.args, node.kwargs))
        if node.kind == "call" and isinstance(node.value, torch.Tensor) and node.value.device.type != "meta" \
                and callable(node.target) and not any(isinstance(a.value, torch.Tensor)
                                                      and a.value.device.type == "meta" for a in args):
            again = node.target(*value(node.args), **{k: value(v) for k, v in node.kwargs.items()})
            torch.testing.assert_close(again, node.value, rtol=0, atol=0, msg=node.name)
            count += 1
    return count


def test_a_fresh_zero_tensor_written_through_views_keeps_its_zeros_without_a_copy() -> None:
    torch.manual_seed(0)
    model = Band().eval()
    x = torch.randn(8, 256, 16)
    with torch.no_grad():
        captured = capture(model, (x,), {})
    zeros = [n for n in captured.nodes if n.kind == "call" and str(n.target) == "aten.new_zeros.default"]
    assert len(zeros) == 1
    kept = zeros[0].value
    assert kept.shape == (8, 2, 128, 257) and not kept.any()
    # no memory of its own: the 2 MB copy main made at the first write (a zero expanded to the shape)
    assert kept.untyped_storage().nbytes() < kept.numel() * kept.element_size()
    assert _replayed(captured.nodes) >= 10  # the slices of the zeros the writes' joins read, included


def test_a_fresh_zero_tensor_written_through_views_round_trips_with_its_gradients() -> None:
    torch.manual_seed(0)
    model = Band().eval()
    x = torch.randn(8, 256, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.method == "dispatch" and not d.opaque
    module = d.to_torch()
    for fresh in (x, torch.randn(8, 256, 16)):
        a, b = fresh.clone().requires_grad_(), fresh.clone().requires_grad_()
        got, want = module(a), model(b)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        got.square().sum().backward()
        want.square().sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


class NotZeros(torch.nn.Module):
    """A ``new_zeros`` tensor written whole by ``fill_`` before a write through a view: no zeros any more, so its
    recorded values at the view's write are the fill's (its own node), never the zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, 512, 16)
        t = x.new_zeros(x.shape[0], 512, 512)
        t.fill_(-1.0)
        t[:, :, :16] = x
        return t.sum(-1)


def test_a_zero_tensor_filled_whole_first_is_drawn_with_the_fill() -> None:
    torch.manual_seed(0)
    model = NotZeros().eval()
    x = torch.randn(2, 512, 16)
    with torch.no_grad():
        captured = capture(model, (x,), {})
    assert _replayed(captured.nodes) >= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    module = d.to_torch()
    for fresh in (x, torch.randn(2, 512, 16)):
        torch.testing.assert_close(module(fresh), model(fresh), rtol=1e-5, atol=1e-5)


class ReadAgain(torch.nn.Module):
    """A transposed view of the whole score tensor taken before a write through a slice and read after it (read
    again as its region of the written tensor: the same memory as the view the model reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, 256, 16)
        h = self.lin(x)
        s = h @ h.transpose(1, 2)  # (b, 256, 256)
        v = s.transpose(1, 2)
        s[:, :8] = 0.0
        return v.softmax(-1) + s


def test_a_view_read_again_after_a_write_is_proven_its_region_by_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from ncd.trace import inplace
    from ncd.trace.tensors import _one_memory

    proven: list[bool] = []

    def counted(a: torch.Tensor, b: torch.Tensor) -> bool:
        proven.append(_one_memory(a, b))
        return proven[-1]

    monkeypatch.setattr(inplace, "_one_memory", counted)
    torch.manual_seed(0)
    model = ReadAgain().eval()
    x = torch.randn(2, 256, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert proven and all(proven), proven  # the region's entries are the view's own: no entrywise comparison
    module = d.to_torch()
    for fresh in (x, torch.randn(2, 256, 16)):
        torch.testing.assert_close(module(fresh), model(fresh), rtol=1e-5, atol=1e-5)


def test_one_memory_is_the_same_entries_of_one_memory_only() -> None:
    from ncd.trace.tensors import _one_memory

    t = torch.randn(4, 6)
    assert _one_memory(t, t.view(4, 6)) and _one_memory(t.t(), t.transpose(0, 1))
    assert _one_memory(t[:, :1], t.as_strided((4, 1), (6, 99)))  # (a stride along one entry is never used)
    assert not _one_memory(t, t.clone())  # equal values, other memory: not said
    assert not _one_memory(t[1:], t[:-1])  # other first address
    assert not _one_memory(t.t().contiguous().view(4, 6), t)  # other entries
    assert not _one_memory(t, t.view(torch.int32))  # other type
    assert not _one_memory(t._neg_view(), t)  # a lazy negation
    c = torch.randn(3, dtype=torch.complex64)
    assert not _one_memory(c.conj(), c)
