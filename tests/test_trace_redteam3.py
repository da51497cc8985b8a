"""Red team, second pass: each test fails on the main it was written against and compares with the model itself."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ncd


class _SdpaDropout(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)


class _Stack(torch.nn.Module):
    def __init__(self, cls: type[torch.nn.Module]) -> None:
        super().__init__()
        self.rnn = cls(4, 4, num_layers=2, dropout=0.5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class _Dropouts(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, training=True) + F.rrelu(x, training=True)


def _traced(model: torch.nn.Module, *args: torch.Tensor) -> tuple[ncd.trace.TracedDiagram, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, *args)
    return d, [str(w.message) for w in caught]


@pytest.mark.parametrize("make, shape", [
    (lambda: _SdpaDropout().eval(), [(1, 2, 3, 4)] * 3),
    (lambda: _Stack(torch.nn.GRU).train(), [(1, 3, 4)]),
    (lambda: _Stack(torch.nn.LSTM).train(), [(1, 3, 4)]),
    (lambda: _Dropouts(), [(2, 3, 4)]),
])
def test_random_inside_an_operator_is_warned(make, shape) -> None:
    """SDPA's ``dropout_p`` (even in eval), a recurrent stack's dropout and dropout or rrelu in training draw random
    numbers inside one operator: on main, no word said so (the seeded-``randn`` case was warned).  The lowered module
    draws as the model does: from the same seed it gives the model's values."""
    torch.manual_seed(0)
    model = make()
    args = [torch.randn(s) for s in shape]
    d, said = _traced(model, *args)
    assert any("draws random numbers inside" in m for m in said), said
    lowered = d.to_torch()
    torch.manual_seed(1)
    want = model(*args)
    torch.manual_seed(1)
    got = lowered(*args)
    torch.testing.assert_close(got, want)


def test_no_random_word_without_a_draw() -> None:
    """The same operators where they draw nothing (eval, ``p = 0``, one recurrent layer) are not warned."""

    class Quiet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(4, 4, num_layers=1, batch_first=True)
            self.lstm = torch.nn.LSTM(4, 4, num_layers=2, dropout=0.0, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = x.unsqueeze(1)
            a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.0).squeeze(1)
            return a + self.gru(x)[0] + self.lstm(x)[0] + F.dropout(x, 0.0, training=True) + F.rrelu(x)

    _, said = _traced(Quiet().train(), torch.randn(2, 3, 4))
    assert not any("random" in m for m in said), said


def test_a_dynamic_quantized_linear_is_refused() -> None:
    """``quantize_dynamic``'s Linear calls ``quantized.linear_dynamic`` with its weights packed in a ``ScriptObject``,
    which no box holds: on main its traced output became a constant (a warning, and the lowered module gave the traced
    output on every input).  Now a TraceError naming the operator and the module."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's deprecation of eager quantization)
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        x, y = torch.randn(3, 4), torch.randn(3, 4)
        assert not torch.allclose(quantized(x), quantized(y))  # a constant cannot stand for it
        with pytest.raises(ncd.TraceError, match=r"quantized\.linear_dynamic at 0 .*ScriptObject"):
            ncd.trace(quantized, x)


class _MaskedMean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0].mean()


class _FixedMask(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keep", torch.tensor([True, False, True, True]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.keep].mean()


def test_a_mask_of_the_inputs_selecting_is_warned() -> None:
    """``x[x > 0]`` has as many entries as the mask holds True; the diagram draws the traced count, so ``.mean()``
    divided by it on every input: on main the lowered module gave 3.0 where the model gives 2.0, with no word (only the
    opaque-box note); now another count raises when the lowered module runs (test_trace_redteam14).
    A mask that is a constant of the model selects a fixed count: not warned, and equal."""
    x, y = torch.tensor([1.0, -1.0, -2.0, 3.0]), torch.tensor([1.0, 2.0, -2.0, 3.0])
    d, said = _traced(_MaskedMean(), x)
    assert any("boolean mask computed from its inputs" in m and "test_trace_redteam3.py" in m for m in said), said
    torch.testing.assert_close(d.to_torch()(x), _MaskedMean()(x))
    with pytest.raises(ncd.RunError, match="depends on the values of the inputs"):  # what the warning says
        d.to_torch()(y)  # (another count: was the traced count's mean, 3.0 where the model gives 2.0)
    d, said = _traced(_FixedMask(), x)
    assert not any("boolean mask" in m for m in said), said
    torch.testing.assert_close(d.to_torch()(y), _FixedMask()(y))


def test_a_global_forward_hook_is_warned_and_drawn_once() -> None:
    """A user's global forward hook (doubling every Linear's output) is recorded into the diagram; on main nothing said
    that, while it stays registered, it fires again on the lowered module's own Linear (4x where the model gives 2x).
    The lowered module, called once the hook is removed, is the model called with it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()

    def double(module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
        return out * 2 if isinstance(module, torch.nn.Linear) else None

    x = torch.randn(2, 4)
    hook = torch.nn.modules.module.register_module_forward_hook(double)
    try:
        want = model(x)
        d, said = _traced(model, x)
    finally:
        hook.remove()
    assert any("global forward hooks are registered (" in m and "double" in m for m in said), said
    torch.testing.assert_close(d.to_torch()(x), want)
    _, said = _traced(model, x)
    assert not any("global forward hooks" in m for m in said), said


@pytest.mark.parametrize("option", ["scale_grad_by_freq", "sparse"])
def test_an_embedding_with_other_gradients_keeps_them(option: str) -> None:
    """``nn.Embedding(scale_grad_by_freq=True)`` scales each row's gradient by its count in the batch, ``sparse=True``
    gives a sparse gradient (for SparseAdam); on main both were the plain embedding box, whose gradient is neither
    (the forward equal, the gradient silently other).  Now an opaque call of the embedding: the model's gradient."""
    torch.manual_seed(0)
    model = torch.nn.Embedding(10, 4, **{option: True})
    ids = torch.tensor([[0, 1, 1, 1, 2]])
    d, _ = _traced(model, ids)
    lowered = d.to_torch()
    model(ids).sum().backward()
    lowered(ids).sum().backward()
    want = model.weight.grad
    got = next(lowered.parameters()).grad
    assert want is not None and got is not None and got.is_sparse == want.is_sparse
    torch.testing.assert_close(got.to_dense(), want.to_dense())
