"""Review of stop 31's idioms: each test fails on the main it was written against and compares with the model itself
or with torch's autograd."""

from __future__ import annotations

import torch

import ncd
from ncd.torch.verify import compare_gradients


class _RowsWrittenFromTheEnd(torch.nn.Module):
    """Each row written at its own positions, some counted from the end (``index_put`` wraps a negative position)."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[torch.arange(2)[:, None], torch.tensor([[0, -1], [1, -2]])] = s
        return y * 2


def test_rows_written_at_positions_counted_from_the_end() -> None:
    """``x[arange(b)[:, None], i] = s`` with a constant ``i`` holding negative positions writes ``x[r, size + i]``.
    On main the write was a ScatterWrite at the negative positions themselves, and the lowered module raised
    (``scatter`` takes no negative index) though the trace reported no opaque box."""
    torch.manual_seed(0)
    model = _RowsWrittenFromTheEnd().eval()
    x, s = torch.randn(2, 4), torch.randn(2, 2)
    d = ncd.trace(model, x, s)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for args in ((x, s), (torch.randn(2, 4), torch.randn(2, 2))):
        torch.testing.assert_close(lowered(*args), model(*args))
    rows = compare_gradients(d, inputs=(x, s))
    assert len(rows) == 2
    for what, ours, autograd in rows:
        torch.testing.assert_close(ours, autograd, msg=what)
