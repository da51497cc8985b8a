"""Findings of the review of this session's commits, each checked against the model (traced and fresh inputs)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


def _trace(model: torch.nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args)


class Added(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return x + ids


class Masked(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return x * (ids > 50)


@pytest.mark.parametrize("model", [Added, Masked])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_integer_operand_of_a_float_model_is_promoted_to_its_type(model: type[torch.nn.Module],
                                                                  dtype: torch.dtype) -> None:
    """``h + ids`` in a float16/bfloat16/float64 model: torch computes it in ``h``'s type; the lowered module too (was:
    the ids cast to float32, so float16 models gave float32 outputs 0.03 off, float64 ones lost ids past 2^24)."""
    torch.manual_seed(0)
    scale = 1_000_003 if dtype == torch.float64 else 1
    x, ids = torch.randn(2, 5).to(dtype), torch.randint(0, 120, (2, 5)) * scale
    lowered = _trace(model(), x, ids).to_torch()
    for xv, iv in ((x, ids), (torch.randn(2, 5).to(dtype), torch.randint(0, 120, (2, 5)) * scale)):
        want, got = model()(xv, iv), lowered(xv, iv)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0)
