"""Relative-position buckets of T5's kind over positions read from the input (LayoutLMv3's and UDOP's: the tokens'
box coordinates): ``|j − i|`` and ``−min(j − i, 0)`` of integers, ``torch.min`` of two integer tensors and floats
truncated to integers were opaque boxes; now each is a box of the paper's vocabulary.  The lowered module is checked
against the model on the traced coordinates (all near: the exact buckets) and on fresh ones far apart (the
logarithmic buckets, clamped at the last), exactly: the buckets are integers.  And integer tensors read at positions
(Bros's box corners, ``index_select`` of ids): gathers of integers, were opaque."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.test_trace_boxes_residue import round_trip


def bucket(relative: torch.Tensor, bidirectional: bool, buckets: int = 32, distance: int = 128,
           dtype: torch.dtype = torch.long) -> torch.Tensor:
    """T5's ``_relative_position_bucket`` (CPM-Ant's with ``dtype=torch.int32``)."""
    out = torch.zeros_like(relative, dtype=dtype)
    if bidirectional:
        buckets //= 2
        out = out + (relative > 0).to(dtype) * buckets
        n = torch.abs(relative)
    else:
        n = -torch.min(relative, torch.zeros_like(relative))
    exact = buckets // 2
    large = exact + (torch.log(n.float() / exact) / math.log(distance / exact) * (buckets - exact)).to(dtype)
    large = torch.min(large, torch.full_like(large, buckets - 1))
    return out + torch.where(n < exact, n.to(dtype), large)


class Buckets(nn.Module):
    """The bucket of every pair of tokens' coordinates, and a learned bias read at it (``bias.weight.t()[b]``)."""

    def __init__(self, bidirectional: bool, dtype: torch.dtype = torch.long) -> None:
        super().__init__()
        self.bidirectional, self.dtype = bidirectional, dtype
        self.bias = nn.Embedding(32, 2)

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        relative = coords.unsqueeze(-2) - coords.unsqueeze(-1)
        b = bucket(relative, self.bidirectional, dtype=self.dtype)
        return b, self.bias(b.long())


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("dtype", [torch.long, torch.int32])
def test_relative_position_buckets_are_boxes(bidirectional: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Buckets(bidirectional, dtype)
    near = torch.tensor([[0, 1, 3, 2, 5, 4], [2, 2, 0, 1, 6, 3]])
    far = torch.tensor([[0, 40, 300, 7, 90, 1000], [500, 3, 250, 17, 0, 64]])
    assert int(model(far)[0].max()) > int(model(near)[0].max())  # the fresh coordinates reach the logarithmic buckets
    d = round_trip(model, near, fresh=(far,))
    assert d.opaque_count == 0
    ops = [b.prim.op for b in d.boxes()]
    assert "index_unary" in ops and "cast" in ops and "index_arithmetic" in ops
    with torch.no_grad():
        assert torch.equal(d.to_torch()(far)[0], model(far)[0])  # integers: exactly


def test_float_abs_is_still_the_elementwise_function() -> None:
    """The integer rule hands a float ``abs``/``neg`` on to the elementwise function (drawn ``|x|``, ``−``)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    d = round_trip(_Abs(model), torch.randn(2, 4), fresh=(torch.randn(2, 4),))
    assert d.opaque_count == 0
    assert "index_unary" not in [b.prim.op for b in d.boxes()]


class _Abs(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.abs(self.inner(x))


class Corners(nn.Module):
    """Bros's box corners: integer coordinates ``(x0, y0, x1, y1)`` read at constant columns as four points, scaled;
    and ``index_select`` of integer ids at live positions (a router's picks)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, bbox: torch.Tensor, picks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corners = bbox[:, :, [0, 1, 2, 1, 2, 3, 0, 3]]
        return self.proj(corners * 0.01), torch.index_select(bbox[0, 0], 0, picks)


def test_integers_read_at_positions_are_gathers() -> None:
    """``x[..., [columns]]`` and ``index_select`` of an integer tensor were opaque (the gather took floats only): a
    gather of integers, which keeps their range."""
    torch.manual_seed(0)
    model = Corners()
    bbox, fresh = torch.randint(0, 1000, (2, 5, 4)), torch.randint(0, 1000, (2, 5, 4))
    d = round_trip(model, bbox, torch.tensor([3, 0, 0]), fresh=(fresh, torch.tensor([1, 2, 3])))
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes()].count("gather") == 2


def t5_bucket(relative: torch.Tensor, buckets: int = 32, distance: int = 128, exact_plus: int = 0) -> torch.Tensor:
    """T5's bidirectional ``_relative_position_bucket`` as transformers writes it (LayoutLMv3's, UDOP's): the sum
    started from the number 0 (``exact_plus``: one number off, which is not T5's bucket)."""
    ret = 0
    buckets //= 2
    ret += (relative > 0).long() * buckets
    n = torch.abs(relative)
    exact = buckets // 2
    is_small = n < exact + exact_plus
    large = exact + (torch.log(n.float() / exact) / math.log(distance / exact) * (buckets - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, buckets - 1))
    ret += torch.where(is_small, n, large)
    return ret  # type: ignore[return-value]


class T5Buckets(nn.Module):
    """LayoutLMv3's 1-D and 2-D relative-position biases: buckets of positions and of box coordinates read from the
    input, the bias tables read at them."""

    def __init__(self, exact_plus: int = 0) -> None:
        super().__init__()
        self.exact_plus = exact_plus
        self.bias = nn.Linear(32, 2, bias=False)
        self.bias_x = nn.Linear(64, 2, bias=False)

    def forward(self, positions: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        near = t5_bucket(positions.unsqueeze(-2) - positions.unsqueeze(-1), exact_plus=self.exact_plus)
        far = t5_bucket(coords.unsqueeze(-2) - coords.unsqueeze(-1), 64, 256, exact_plus=self.exact_plus)
        return self.bias.weight.t()[near] + 0, self.bias_x.weight.t()[far] + 0


@pytest.mark.parametrize("dtype", [torch.long, torch.int32])
def test_t5_buckets_over_the_input_are_one_box_each(dtype: torch.dtype) -> None:
    """Each bucketing (sixteen recorded calls, some thirty boxes) is one ``bucket`` box ranged by the bucket count, so
    the bias tables are gathers (the 2-D ones were opaque: box coordinates range past the table); the lowered module
    equals the model exactly on near and far distances (the logarithmic buckets, the last one past max_distance)."""
    torch.manual_seed(0)
    model = T5Buckets()
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 2, 1, 3, 5, 4]], dtype=dtype)
    coords = torch.tensor([[0, 40, 300, 7, 90, 1000], [500, 3, 250, 17, 0, 64]], dtype=dtype)
    fresh = (torch.tensor([[0, 9, 40, 130, 300, 2], [7, 0, 200, 3, 1, 500]], dtype=dtype),
             torch.tensor([[1000, 0, 3, 999, 128, 600], [5, 700, 250, 17, 900, 64]], dtype=dtype))
    d = round_trip(model, positions, coords, fresh=fresh)
    assert d.opaque_count == 0
    ops = [b.prim.op for b in d.boxes()]
    assert ops.count("bucket") == 2 and ops.count("gather") == 2
    assert "index_unary" not in ops and "cast" not in ops and "where" not in ops
    with torch.no_grad():
        for args in ((positions, coords), fresh):
            for got, want in zip(d.to_torch()(*args), model(*args)):
                assert torch.equal(got, want)
    assert sorted(str(b.cod) for b in d.boxes() if b.prim.op == "bucket") == ["[32]", "[64]"]


def test_a_bucket_differing_by_a_number_is_drawn_as_recorded() -> None:
    """``|n| < exact + 1``: not T5's bucket; its calls stay boxes (and the lowered module still equals the model)."""
    torch.manual_seed(0)
    model = T5Buckets(exact_plus=1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 2, 1, 3, 5, 4]])
    coords = torch.tensor([[0, 4, 30, 7, 9, 100], [50, 3, 25, 17, 0, 64]])
    d = round_trip(model, positions, coords, fresh=(positions.flip(-1), coords.flip(-1)))
    ops = [b.prim.op for b in d.boxes()]
    assert "bucket" not in ops and "index_unary" in ops
