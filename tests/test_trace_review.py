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


class Noisy(torch.nn.Module):
    """A sample drawn for the inputs' values (a VAE's ``randn_like(std)``; Gamma's sample)."""

    def __init__(self, draw: str) -> None:
        super().__init__()
        self.linear, self.draw = torch.nn.Linear(4, 4), draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        if self.draw == "randn_like":
            return h + torch.randn_like(h)
        if self.draw == "gamma":
            return torch._standard_gamma(h.exp())
        return torch.binomial(torch.full_like(h, 5.0), torch.sigmoid(h))


class Dropped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear, self.dropout = torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x))


def _drawing(model: torch.nn.Module, capture: str = "dispatch") -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, torch.randn(3, 4), capture=capture)
    lowered = d.to_torch()
    x = torch.randn(3, 4)
    anew = not torch.equal(lowered(x), lowered(x))  # (the opaque box draws at every call, as the model does)
    return anew and any("draws random numbers inside" in str(w.message) for w in caught)


@pytest.mark.parametrize("draw", ["randn_like", "gamma", "binomial"])
@pytest.mark.parametrize("capture", ["dispatch", "export"])
def test_samples_drawn_for_the_inputs_values_are_warned(draw: str, capture: str) -> None:
    """An opaque box drawing anew for the inputs' values is warned on either capture (was: randn_like(h), which the
    recorder hands to torch.export, and Gamma/binomial samples, not at all; nor anything under ``capture='export'``)."""
    torch.manual_seed(0)
    assert _drawing(Noisy(draw).eval(), capture)


@pytest.mark.parametrize("capture", ["dispatch", "export"])
def test_dropout_in_training_is_warned_on_either_capture(capture: str) -> None:
    torch.manual_seed(0)
    assert _drawing(Dropped().train(), capture)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ncd.trace(Dropped().eval(), torch.randn(3, 4), capture=capture)
    assert not any("random" in str(w.message) for w in caught)  # (eval: no draw, no word)


class Drawn(torch.nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.linear, self.how = torch.nn.Linear(4, 4), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        if self.how == "bernoulli":
            return torch.bernoulli(torch.sigmoid(h)) * x
        if self.how == "poisson":
            return torch.poisson(h.exp())
        if self.how == "uniform_":
            return h.uniform_() + x
        return torch.rand(x.shape) + h  # (a draw for no value of the inputs: a constant the diagram holds)


@pytest.mark.parametrize("how", ["bernoulli", "poisson", "uniform_", "rand"])
def test_a_draw_is_said_to_be_held_only_where_the_diagram_holds_it(how: str) -> None:
    """torch's draws for values of the inputs (``bernoulli(p)``, ``poisson(rate)``, ``h.uniform_()``) are opaque boxes
    drawing anew, and said so (was: 'the diagram holds the numbers drawn while tracing', which it does not); a draw of
    a shape alone is a constant the diagram holds, and said so."""
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(Drawn(how).eval(), torch.randn(3, 4))
    said = [str(w.message) for w in caught if "draws random numbers" in str(w.message)]
    x = torch.randn(3, 4)
    anew = not torch.equal(d.to_torch()(x), d.to_torch()(x))
    assert len(said) == 1 and ("draws random numbers inside" in said[0]) == anew == (how != "rand")
