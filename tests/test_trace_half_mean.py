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


MEANS = {
    "last": lambda x: x.mean(-1),
    "apart": lambda x: x.mean((0, 2)),
    "every": lambda x: x.mean() * x,
    "of three": lambda x: x[:, :3].mean(1),
    "kept": lambda x: -x.mean(dim=-2, keepdim=True) + x,
    "of a transpose": lambda x: x.transpose(1, 2).mean(1),
    "twice": lambda x: x.mean(-1).mean(-1),
    "beside a sum": lambda x: x.mean(-1) + x.sum(-1),
}


class Of(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", list(MEANS))
def test_a_traced_mean_lowers_to_the_model_s_bits(name: str, dtype: torch.dtype) -> None:
    """torch's CPU mean sums in float32 and divides before it rounds to a half type once: the lowered module calls
    torch.mean (a half einsum sum, then divided, was up to 133 units in the last place off)."""
    torch.manual_seed(1)
    m = Of(MEANS[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(m, torch.randn(2, 6, 5, dtype=dtype))
    lowered = d.to_torch()
    for scale in (1, 30, 3000):
        x = (torch.randn(2, 6, 5) * scale).to(dtype)
        assert torch.equal(lowered(x), m(x)), (name, scale)
    if dtype != torch.float32:
        assert "torch.mean(" in d.to_source()
