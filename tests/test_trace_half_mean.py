"""A mean in half precision: torch divides its float32 sum before rounding, so the lowered mean must not round an
unscaled half sum first (it overflowed to inf where the model's mean is finite)."""
import warnings

import pytest
import torch
from torch import nn

import ncd


class RootMeanSquare(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).mean(dim=(1, 2)) + x.mean(-1).mean(-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("model", [RootMeanSquare, Mean])
def test_a_half_mean_of_large_values_is_the_model_s(model: type[nn.Module], dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    m = model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(m, torch.randn(2, 3, 8, dtype=dtype)).to_torch()
    x = torch.randn(2, 3, 8, dtype=dtype).clamp(-2, 2) * 100  # squares to 4e4: their sum passes float16's 65504
    expected, got = m(x), lowered(x)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=1e-2)
