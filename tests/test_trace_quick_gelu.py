"""CLIP's QuickGELU (``x * sigmoid(1.702 * x)``, transformers' ``QuickGELUActivation``) is one ``quick_gelu`` box
when its recorded calls are that very formula (exact by construction) or its values agree; a module of that class name
computing anything else is drawn as what it records.  Every diagram is compared with the model (its lowered module on
the traced and a fresh input, bit for bit where the box stands for the recorded calls, and its gradients)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import QuickGELUActivation

import ncd
from ncd.prims.elementwise import ElementwiseOp


class Reversed(nn.Module):
    """QuickGELU with each product's operands the other way round (the same numbers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x * 1.702) * x


class Coarse(nn.Module):
    """Named QuickGELU, but ``x * sigmoid(1.7 * x)``: within 1e-4 of it on unit inputs, not in the tails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.7 * x)


class Learned(nn.Module):
    """Named QuickGELU, with the 1.702 a learned scale (equal to it as built, not once trained)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.702))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.scale * x)


for _cls in (Reversed, Coarse, Learned):
    _cls.__name__ = _cls.__qualname__ = "QuickGELUActivation"


def _mlp(act: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), act, nn.Linear(8, 6)).eval().to(dtype)


def _functions(d: ncd.TracedDiagram) -> list[str]:
    return sorted(b.prim.function for b in d.boxes() if isinstance(b.prim, ElementwiseOp))


def _equal(d: ncd.TracedDiagram, model: nn.Module, dtype: torch.dtype, exact: bool) -> None:
    lowered = d.to_torch()
    for seed in (0, 1):
        x = (3 * torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))).to(dtype)
        with torch.no_grad():
            got, want = lowered(x), model(x)
        assert torch.equal(got, want) if exact else torch.allclose(got, want, atol=1e-5)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=dtype, requires_grad=True)
    (g1,) = torch.autograd.grad(lowered(x).square().sum(), x)
    (g2,) = torch.autograd.grad(model(x).square().sum(), x)
    assert torch.allclose(g1.float(), g2.float(), atol=1e-5 if dtype == torch.float32 else 1e-2)


def test_transformers_quick_gelu_is_one_box_equal_bit_for_bit() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        model = _mlp(QuickGELUActivation(), dtype)
        d = ncd.trace(model, torch.randn(5, 6, dtype=dtype))
        assert _functions(d) == ["quick_gelu"]  # no sigmoid, no scale by 1.702, no product left
        assert not any(b.prim.op in ("scale", "multiply") for b in d.boxes())
        assert "torch.sigmoid(1.702 * " in d.to_source()
        _equal(d, model, dtype, exact=True)


def test_quick_gelu_with_its_operands_swapped_is_the_same_box() -> None:
    model = _mlp(Reversed())
    d = ncd.trace(model, torch.randn(5, 6))
    assert _functions(d) == ["quick_gelu"]
    _equal(d, model, torch.float32, exact=True)


def test_a_module_named_quick_gelu_computing_something_else_is_drawn_as_it_records() -> None:
    for act in (Coarse(), Learned()):
        model = _mlp(act)
        d = ncd.trace(model, torch.randn(5, 6))
        assert "quick_gelu" not in _functions(d)
        assert "sigmoid" in _functions(d)
        _equal(d, model, torch.float32, exact=False)
