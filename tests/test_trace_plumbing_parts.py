"""Parts picked after a run of views and transposes are drawn as slices of the wire the run split
(:mod:`ncd.trace.plumbing_parts`): ``nn.MultiheadAttention``'s packed projection ``unflatten(-1, (3, m))...[i]`` is
``[i·m:(i+1)·m]`` of its width.

Each traced model is compared with the original model (torch runs both) on the traced input and at other sizes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.slicing import IndexOp, SliceOp


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, *inputs)
    return d


def _cuts(d: ncd.TracedDiagram) -> list[str]:
    return sorted(box.prim.label() for box in d.boxes() if isinstance(box.prim, (SliceOp, IndexOp)))


class _Attention(nn.Module):
    """Self-attention, then cross-attention on a memory (the keys' and values' projection packed), batch first."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.cross = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(x, x, x, need_weights=False)[0]
        out: torch.Tensor = h + self.cross(h, memory, memory, need_weights=False)[0]
        return out


def test_the_packed_projections_parts_are_slices_of_its_width() -> None:
    """The self-attention's q, k, v are ``[0:16]``, ``[16:32]``, ``[32:48]`` of its 48 features, the cross-attention's
    k, v ``[0:16]``, ``[16:32]`` of 32 (on main: a split into 3 by 16 and a crossing, then ``[0]``, ``[1]``, ``[2]``);
    lowered, it equals the model at the traced and other sizes."""
    torch.manual_seed(0)
    model = _Attention().eval()
    d = _trace(model, torch.randn(2, 5, 16), torch.randn(2, 7, 16))
    assert _cuts(d) == ["[0:16]", "[0:16]", "[16:32]", "[16:32]", "[32:48]"]
    for b, t, s in ((2, 5, 7), (3, 4, 7), (1, 6, 7)):  # (the memory keeps its length: only b and t are symbols)
        x, memory = torch.randn(b, t, 16), torch.randn(b, s, 16)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b, t=t)(x, memory), model(x, memory), atol=1e-5, rtol=1e-5)


class _Picks(nn.Module):
    """A projection to ``3·m`` features split as ``view(..., parts, m)`` (or ``(m, parts)``: the parts inner),
    moved by ``permute`` and picked at ``picks``."""

    def __init__(self, inner: bool, picks: tuple[int, ...]) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 12)
        self.inner, self.picks = inner, picks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        y = self.proj(x)
        if self.inner:  # the part is the inner wire: every third feature, not a slice
            parts = y.view(b, t, 4, 3).permute(3, 1, 0, 2)
        else:
            parts = y.view(b, t, 3, 4).permute(2, 1, 0, 3)
        a, c, e = (parts[i] for i in self.picks)
        out: torch.Tensor = a * c + e
        return out


@pytest.mark.parametrize(("inner", "picks", "cuts"), [
    (False, (0, 1, 2), ["[0:4]", "[4:8]", "[8:12]"]),
    (False, (2, -3, 1), ["[0:4]", "[4:8]", "[8:12]"]),  # a negative pick counts from the end
    (False, (1, 1, 0), ["[0:4]", "[4:8]", "[4:8]"]),
    (True, (0, 1, 2), ["[0]", "[1]", "[2]"]),  # the inner part: kept as picks
])
def test_picks_of_a_split_wire_equal_the_model(inner: bool, picks: tuple[int, ...], cuts: list[str]) -> None:
    """The outer part's picks are slices (a pick counted from the end too, one part picked twice); the inner part's
    stay picks after the split and crossing; lowered, each equals the model at the traced and other sizes."""
    torch.manual_seed(1)
    model = _Picks(inner, picks).eval()
    d = _trace(model, torch.randn(2, 5, 8))
    assert _cuts(d) == cuts
    for b, t in ((2, 5), (3, 7), (1, 1)):
        x = torch.randn(b, t, 8)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b, t=t)(x), model(x), atol=1e-5, rtol=1e-5)


class _Shared(nn.Module):
    """The run's output is also read by a sum: its picks are not rewritten (the run stays for the sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 12)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self.proj(x).unflatten(-1, (3, 4)).transpose(0, -2)
        return parts[0] * parts[2], parts.sum(0)


def test_a_run_read_by_more_than_picks_is_kept() -> None:
    torch.manual_seed(2)
    model = _Shared().eval()
    x = torch.randn(2, 5, 8)
    d = _trace(model, x)
    assert _cuts(d) == ["[0]", "[2]"]
    with torch.no_grad():
        for y in (x, torch.randn(2, 5, 8)):
            for got, want in zip(d.to_torch()(y), model(y)):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
