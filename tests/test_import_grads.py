"""The gradient check of lowered modules (``benchmarks/import_grads.py``) on a few corpus models, and on lowered
modules whose gradients are known to differ from the model's (the check must be able to fail)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from tests.benchmarks import benchmark

grads = benchmark("import_grads")

#: an LSTM (a loop), a masked attention, a transformers model with a tied head's table
SUBSET = ["torch.lstm", "torch.mask", "gpt2"]


@pytest.mark.parametrize("name", SUBSET)
def test_corpus_model_gradients_equal(name: str) -> None:
    (entry,) = [e for e in grads.corpus.all_entries() if e.name == name]
    result = grads.check_entry(entry)
    assert result.verdict == "equal", result
    assert result.params > 0


class _Tagger(nn.Module):
    def __init__(self, padding_idx: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4, padding_idx=padding_idx)
        self.out = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.embed(ids) * x)
        return out


def _lowered(model: nn.Module, inputs: dict[str, torch.Tensor]) -> nn.Module:
    import ncd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, **inputs).to_torch()


def _inputs() -> dict[str, torch.Tensor]:
    return {"ids": torch.tensor([[0, 1, 2, 0]]), "x": torch.randn(1, 4, 4)}


def test_equal_gradients_are_equal() -> None:
    torch.manual_seed(0)
    model = _Tagger().eval()
    inputs = _inputs()
    result = grads.compare(model, inputs, _lowered(model, inputs))
    assert (result.verdict, result.params, result.inputs) == ("equal", 3, 1), result


class _Scaled(nn.Module):
    """A lowered module whose gradient of one parameter (or of its input) is scaled: a backward that differs."""

    def __init__(self, lowered: nn.Module, shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.lowered, self.shape = lowered, shape

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            x.register_hook(lambda g: 3 * g)
        for p in self.lowered.parameters():
            if tuple(p.shape) == self.shape:
                p.register_hook(lambda g: 2 * g)
        out: torch.Tensor = self.lowered(ids, x)
        return out


@pytest.mark.parametrize(("shape", "worst"), [((3, 4), "out.weight"), ((10, 4), "embed.weight"), (None, "input x")])
def test_a_different_gradient_is_found(shape: tuple[int, ...] | None, worst: str) -> None:
    torch.manual_seed(0)
    model = _Tagger().eval()
    inputs = _inputs()
    result = grads.compare(model, inputs, _Scaled(_lowered(model, inputs), shape))
    assert (result.verdict, result.why) == ("differs", worst), result
    assert result.rel > 0.5


def test_a_parameter_lowered_as_a_constant_loses_its_gradient() -> None:
    torch.manual_seed(0)
    model = _Tagger().eval()
    inputs = _inputs()
    lowered = _lowered(model, inputs)
    for module in lowered.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and tuple(p.shape) == (3,):  # the bias: a buffer, as a frozen constant
                del module._parameters[name]
                module.register_buffer(name, p.detach())
    result = grads.compare(model, inputs, lowered)
    assert result.verdict == "differs" and result.why.startswith("out.bias"), result
