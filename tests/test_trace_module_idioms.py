"""Module idioms (an activation module drawn as one box) are decided by values, never by a class name alone.

The check runs each candidate module on a fixed-seed random input; the input drawn for one module must not be the one
another module (of the same shape) wrote into.  A module that computes the function exactly or within the tracer's
tolerance is drawn as the function's box; one that does not is drawn as its recorded operations.  Each diagram is
compared with the model itself (its lowered module on the traced and a fresh input).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import ncd
from ncd.prims.elementwise import ElementwiseOp


class ReLU(nn.Module):
    """Named like torch's ReLU, but leaky: on non-negative inputs it agrees with relu, on negative ones it does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, 0.5 * x)


class GELUActivation(nn.Module):
    """Named like transformers' GELU module, computed by the formula, not the kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


class Tanhish(nn.Module):
    """A module class named like an activation (``SiLU``) that computes something else, far from it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


Tanhish.__name__ = Tanhish.__qualname__ = "SiLU"


class AfterInPlace(nn.Module):
    """An in-place relu, then a leaky 'ReLU' at the same shape that only sees non-negative traced values."""

    def __init__(self, inplace_first: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.first = nn.ReLU(inplace=True)
        self.inplace_first = inplace_first
        self.fake = ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace_first:
            x = self.first(self.lin(x))
        y: torch.Tensor = self.fake(self.lin(x).abs())
        return y


def _elementwise(d: ncd.TracedDiagram) -> list[str]:
    return sorted(b.prim.function for b in d.boxes() if isinstance(b.prim, ElementwiseOp))


def _lowers_equal(d: ncd.TracedDiagram, model: nn.Module, shape: tuple[int, ...]) -> None:
    lowered = d.to_torch()
    for seed in (0, 1):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            assert torch.allclose(lowered(x), model(x), atol=1e-5)


def test_a_module_writing_into_its_probe_leaves_the_next_modules_probe_alone() -> None:
    torch.manual_seed(0)
    alone = AfterInPlace(inplace_first=False).eval()
    both = AfterInPlace(inplace_first=True).eval()
    both.load_state_dict(alone.state_dict())
    x = torch.randn(3, 6)
    d_alone, d_both = ncd.trace(alone, x), ncd.trace(both, x)
    # the leaky module is told from relu by the random probe only (its traced values are all non-negative): it is not
    # relu alone, and it stays not relu after a relu that wrote into its own probe of the same shape was checked
    assert "relu" not in _elementwise(d_alone)
    assert _elementwise(d_both).count("relu") == _elementwise(d_alone).count("relu") + 1
    _lowers_equal(d_alone, alone, (3, 6))
    _lowers_equal(d_both, both, (3, 6))


def test_a_module_close_to_the_function_is_its_box_and_one_far_from_it_is_not() -> None:
    torch.manual_seed(0)
    close = nn.Sequential(nn.Linear(5, 7), GELUActivation(), nn.Linear(7, 5)).eval()
    far = nn.Sequential(nn.Linear(5, 7), Tanhish(), nn.Linear(7, 5)).eval()
    x = torch.randn(4, 5)
    d_close, d_far = ncd.trace(close, x), ncd.trace(far, x)
    assert _elementwise(d_close) == ["gelu"]  # the formula is not the kernel's bits, but within the tolerance
    assert "silu" not in _elementwise(d_far)
    _lowers_equal(d_close, close, (4, 5))
    _lowers_equal(d_far, far, (4, 5))


class TanhGELU(nn.Module):
    """Named like transformers' exact GELU module, but one call of the tanh approximation (GPT-2's): a single
    recorded ``aten.gelu`` whose ``approximate`` is not the exact one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate="tanh")


TanhGELU.__name__ = TanhGELU.__qualname__ = "GELUActivation"


class SigmoidSiLU(nn.Module):
    """Named like SiLU, one call of another elementwise function's own operator (sigmoid)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


SigmoidSiLU.__name__ = SigmoidSiLU.__qualname__ = "SiLU"


class KernelGELU(nn.Module):
    """transformers' GELU module as it is: one call of the exact kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x)


KernelGELU.__name__ = KernelGELU.__qualname__ = "GELUActivation"


def test_a_module_whose_one_call_is_another_functions_operator_is_drawn_as_that_call() -> None:
    # one recorded call of an elementwise operator is taken without a value check only when it is the very function
    # the class name stands for: the tanh approximation in an exact-GELU module and sigmoid in a SiLU module are
    # drawn as what they call (and equal the model), never as the function their class names
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    for act, drawn in ((TanhGELU(), "gelu_tanh"), (SigmoidSiLU(), "sigmoid")):
        model = nn.Sequential(nn.Linear(5, 7), act, nn.Linear(7, 5)).eval()
        d = ncd.trace(model, x)
        assert _elementwise(d) == [drawn]
        _lowers_equal(d, model, (4, 5))


def test_a_module_calling_the_functions_kernel_once_is_one_box_in_its_parent() -> None:
    # the module is drawn as the function's box in its parent (no block of its own), as the value check drew it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), KernelGELU(), nn.Linear(7, 5)).eval()
    x = torch.randn(4, 5)
    d = ncd.trace(model, x)
    assert _elementwise(d) == ["gelu"]
    assert "GELUActivation" not in d.to_source()  # no class generated for the module: it is one box
    _lowers_equal(d, model, (4, 5))
