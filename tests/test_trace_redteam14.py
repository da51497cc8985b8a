"""redteam14: inputs nobody chose.  A write in place into a view whose entries overlap (``x.unfold(0, 2, 1)[..., 0]
.mul_(2)``), which the recording leaves to torch.export and torch's functionalization bans, is refused with
``ncd.TraceError`` naming the model's line, where it raised torch's own RuntimeError out of ``ncd.trace``."""

from __future__ import annotations

import pytest
import torch

import ncd


class _OverlappingWrite(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.unfold(0, 2, 1)[..., 0].mul_(2)  # the view's windows overlap: functionalization refuses the write
        return y


def test_a_write_into_an_overlapping_view_is_refused_naming_the_line() -> None:
    x = torch.randn(5)
    want = x.clone()
    want[:4] *= 2
    assert torch.equal(_OverlappingWrite()(x), want)  # torch's eager run computes it
    with pytest.raises(ncd.TraceError, match=r"cannot capture _OverlappingWrite: it writes in place at "
                                             r"test_trace_redteam14\.py:\d+ into a view"):
        ncd.trace(_OverlappingWrite(), x)
