"""``lowered.load_state_dict(model.state_dict())``: the traced model's own state dict loads into the lowered module,
whose names follow the diagram (``ncd.trace.model_names``).  Before, it failed: every key was unexpected or missing."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ncd


class _Reads(nn.Module):
    """A linear layer, a table read as a sum and transposed as data, a weight read by F.linear and again transposed,
    a buffer, and another task's head the call never reads."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.e = nn.Parameter(torch.randn(7, 4))
        self.w = nn.Parameter(torch.randn(5, 4))
        self.register_buffer("scale", torch.tensor(2.0))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x) + self.e.sum(0)
        return (F.linear(h, self.w).tanh() @ self.w) * self.scale + self.e.t()[None].sum(-1).sum(-1)


def _gpt2() -> tuple[nn.Module, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    return transformers.GPT2LMHeadModel(config).eval(), torch.randint(0, 100, (2, 8))


@pytest.mark.parametrize("which", ["reads", "gpt2"])
def test_the_models_own_state_dict_loads_into_the_lowered_module(which: str) -> None:
    torch.manual_seed(0)
    model, x = (_Reads().eval(), torch.randn(2, 3, 4)) if which == "reads" else _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    assert not set(model.state_dict()) <= set(lowered.state_dict())  # the names differ
    with torch.no_grad():  # other values first: the load must bring the model's back
        for p in lowered.parameters():
            p.add_(1.0)
    lowered.load_state_dict(model.state_dict())  # strict
    want = model(x)
    torch.testing.assert_close(lowered(x), getattr(want, "logits", want))
    lowered.load_state_dict(d.state_dict(lowered))  # keyed by its own names: as before
    with pytest.raises(RuntimeError, match="Unexpected key"):  # a key of neither is refused, as by any strict load
        lowered.load_state_dict({**model.state_dict(), "nothing.of_either": torch.zeros(1)})
    if which == "gpt2":  # the hook pickles with the module
        buffer = io.BytesIO()
        torch.save(lowered, buffer)
        buffer.seek(0)
        again = torch.load(buffer, weights_only=False)
        with torch.no_grad():
            for p in again.parameters():
                p.add_(1.0)
        again.load_state_dict(model.state_dict())
        torch.testing.assert_close(again(x), want.logits)


class _Sliced(nn.Module):
    """A linear map whose weight has ``i`` inputs (another model of the class has others)."""

    def __init__(self, i: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(i, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[..., :8])


def test_a_state_dict_of_other_shapes_is_refused_naming_the_models_key() -> None:
    """Another model's state dict whose tensor has other sizes (``Linear(10, 4)`` for the traced ``Linear(8, 4)``) is
    refused as torch refuses it; before, the hook read the traced offsets and strides out of it and loaded entries of
    the wrong rows (all keys matched)."""
    torch.manual_seed(0)
    lowered = ncd.trace(_Sliced().eval(), torch.randn(2, 8)).to_torch()
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"size mismatch for lin\.weight.*\(4, 10\).*\(4, 8\)"):
            lowered.load_state_dict(_Sliced(10).state_dict(), strict=strict)
    other = _Sliced()  # one of the same shapes loads, and computes as that model
    lowered.load_state_dict(other.state_dict())
    x = torch.randn(2, 8)
    torch.testing.assert_close(lowered(x), other(x))


class _Unsaved(nn.Module):
    """A buffer registered ``persistent=False`` (as transformers' ``position_ids`` or ``inv_freq``): read by the call,
    absent from the model's state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.randn(4), persistent=False)
        self.register_buffer("spare", torch.randn(3), persistent=False)  # (not read either)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


def test_a_buffer_outside_the_models_state_dict_keeps_the_lowered_modules_value() -> None:
    """Before, a read buffer the model's state dict leaves out made the hook pass the state dict on as it was: every
    key of a strict load was missing or unexpected."""
    torch.manual_seed(0)
    model, x = _Unsaved().eval(), torch.randn(2, 4)
    lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        for p in lowered.parameters():
            p.add_(1.0)
    lowered.load_state_dict(model.state_dict())  # strict
    torch.testing.assert_close(lowered(x), model(x))
