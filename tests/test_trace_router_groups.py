"""A DeepSeek-style router's expert-group selection (``ncd.trace.idioms_fill``): with one group the top-1 group is
group 0 on every input, the mask keeps every expert and the selection is not drawn; with two groups, or a mask read
elsewhere, it stays as recorded.  Each lowered module is compared with the model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.ranking import TopKOp


class GroupRouter(nn.Module):
    """transformers' Glm4MoeTopkRouter: sigmoid scores, the best ``topk_group`` of ``groups`` groups (by the sum of
    each group's top 2), the top 2 experts of those, normalised; ``leak`` also returns the group mask."""

    def __init__(self, groups: int, leak: bool = False, experts: int = 8, width: int = 16) -> None:
        super().__init__()
        self.groups, self.leak, self.experts = groups, leak, experts
        self.proj = nn.Linear(width, width)
        self.weight = nn.Parameter(torch.randn(experts, width))
        self.register_buffer("bias", torch.randn(experts) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(x).view(-1, x.shape[-1])
        scores = torch.nn.functional.linear(h, self.weight).sigmoid()
        choice = scores + self.bias
        group_scores = choice.view(-1, self.groups, self.experts // self.groups).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=1, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, self.groups, self.experts // self.groups) \
            .reshape(-1, self.experts)
        choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        index = torch.topk(choice, k=2, dim=-1, sorted=False)[1]
        weights = scores.gather(1, index)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return (weights, score_mask) if self.leak else weights


def _topks(model: nn.Module, x: torch.Tensor) -> tuple[int, ncd.Diagram]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    return sum(isinstance(b.prim, TopKOp) for b in d.boxes()), d


@pytest.mark.parametrize(("groups", "leak", "drawn"), [(1, False, 1), (2, False, 3), (1, True, 3)])
def test_the_group_selection_of_one_group_is_not_drawn(groups: int, leak: bool, drawn: int) -> None:
    # before, one group's selection was drawn: two more top-k boxes, a scatter, the mask's calls and a masked fill
    torch.manual_seed(0)
    model = GroupRouter(groups, leak)
    topks, d = _topks(model, torch.randn(2, 5, 16))
    assert topks == drawn
    lowered = d.to_torch()
    for _ in range(3):
        x = torch.randn(2, 5, 16)
        got, want = lowered(x), model(x)
        for g, w in zip(got if leak else (got,), want if leak else (want,)):
            torch.testing.assert_close(g, w)


def test_an_input_with_an_axis_of_one_entry_keeps_the_selection() -> None:
    # the group axis of one entry could then be an input's size (the proof reads it off the configuration, not sizes)
    torch.manual_seed(0)
    model = GroupRouter(1)
    topks, d = _topks(model, torch.randn(1, 5, 16))
    assert topks == 3
    x = torch.randn(1, 5, 16)
    torch.testing.assert_close(d.to_torch()(x), model(x))
