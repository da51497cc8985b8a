"""``x[arange(b)[:, None], i]`` — each row of ``x`` read at its own positions (Informer's ProbSparse attention picks
its top queries so) — is a gather woven over the rows, not an opaque box.  The lowered module is compared with the
model on a fresh input, and its gradients with autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from tests.trace_checks import agrees_with_gradients


class TopQueries(nn.Module):
    """Informer's ``q_reduce = query_states[torch.arange(b).unsqueeze(-1), top_u]``."""

    def __init__(self, lead: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.lead = lead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        if self.lead:  # (c, b, t, m): a full slice before the rows
            top = q.sum(-1)[0].topk(3, dim=-1)[1]  # (b, 3)
            return q[:, torch.arange(q.size(1)).unsqueeze(-1), top] * 2.0
        top = q.sum(-1).topk(3, dim=-1)[1]  # (b, 3)
        return q[torch.arange(q.size(0)).unsqueeze(-1), top] * 2.0


@pytest.mark.parametrize("lead", [False, True])
def test_each_row_read_at_its_own_positions_is_a_gather(lead: bool) -> None:
    torch.manual_seed(0)
    model = TopQueries(lead).eval()
    shape = (2, 3, 6, 4) if lead else (3, 6, 4)
    d = ncd.trace(model, torch.randn(*shape))
    assert d.opaque_count == 0  # was 1: aten.index declined ('indices other than arange before the index tensor')
    assert [b.prim.op for b in d.boxes()].count("gather") == 1
    lowered = d.to_torch()
    agrees_with_gradients(lowered, model, shape)


class WriteTopQueries(torch.nn.Module):
    """Informer's ``context[torch.arange(b).unsqueeze(-1), top_u, :] = attn_output``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.out = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        top = q.sum(-1).topk(3, dim=-1)[1]  # (b, 3): distinct positions per row
        picked = q[torch.arange(q.size(0)).unsqueeze(-1), top]
        context = x.mean(1, keepdim=True).expand(-1, x.shape[1], -1).clone()
        context[torch.arange(q.size(0)).unsqueeze(-1), top, :] = self.out(picked)
        return context * 2.0


def test_each_row_written_at_its_own_positions_is_a_scatter_of_the_source() -> None:
    torch.manual_seed(0)
    model = WriteTopQueries().eval()
    d = ncd.trace(model, torch.randn(3, 6, 4))
    assert d.opaque_count == 0  # was 1: index_put declined ('not one mask, written without accumulation')
    assert [b.prim.op for b in d.boxes()].count("scatter_write") == 1
    lowered = d.to_torch()
    agrees_with_gradients(lowered, model, (3, 6, 4))
    mine = sorted(float(p.grad.abs().sum()) for p in lowered.parameters())
    theirs = sorted(float(p.grad.abs().sum()) for p in model.parameters())
    torch.testing.assert_close(mine, theirs)


class TopRouter(nn.Module):
    """Llama 4's router: ``full_like(logits, -inf).scatter_(1, top_i, top_v)``, then a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x)
        values, chosen = torch.topk(logits, 2, dim=1)
        return torch.sigmoid(torch.full_like(logits, float("-inf")).scatter_(1, chosen, values))


def test_a_scatter_of_a_source_tensor_is_a_scatter_write() -> None:
    torch.manual_seed(0)
    model = TopRouter().eval()
    d = ncd.trace(model, torch.randn(5, 4))
    assert d.opaque_count == 0  # was 1: scatter.src declined ('a scatter of a tensor')
    lowered = d.to_torch()
    x = torch.randn(5, 4)
    got, want = lowered(x), model(x)
    torch.testing.assert_close(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    mine = sorted(float(p.grad.abs().sum()) for p in lowered.parameters())
    theirs = sorted(float(p.grad.abs().sum()) for p in model.parameters())
    torch.testing.assert_close(mine, theirs)


class FirstLongRow(nn.Module):
    """TimesFM's patch choice: ``where(row_sum == 0, n - 1, argmax(counts >= 3))``, then each row read there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = (x > 0).to(torch.int32).sum(-1)  # (b, n)
        chosen = torch.argmax((counts >= 3).to(torch.int32), dim=1)
        row_sum = (counts >= 3).to(torch.int32).sum(dim=1)
        at = torch.where(row_sum == 0, x.shape[1] - 1, chosen)
        return x[torch.arange(x.shape[0]), at, :] * 3.0


def test_a_where_of_positions_keeps_their_range_and_reads_at_them() -> None:
    torch.manual_seed(0)
    model = FirstLongRow()
    x = torch.randn(4, 5, 6)
    x[0] = -1.0  # a row with no long patch: the last position
    d = ncd.trace(model, x)
    assert d.opaque_count == 0  # was 1: the where's sum had range [2n - 1] ('positions without a known range')
    fresh = torch.randn(4, 5, 6)
    fresh[1] = -1.0
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh))
