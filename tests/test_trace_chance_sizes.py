"""A size of the model's own (a width, a config int) that equals a product of the input's batch or sequence by chance
is not drawn as that product: ``nn.MultiheadAttention(4, 2)`` at batch 2 merges its batch and heads into a wire of
4 (``b*h``), the width's size; the width stays 4 (before, the output was typed ``b t q:2*b``).

Each model is compared with the original model on the traced input and on inputs of other sizes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class _Attend(nn.Module):
    def __init__(self, width: int, heads: int, weights: bool) -> None:
        super().__init__()
        self.weights = weights
        self.proj = nn.Linear(width, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        out: torch.Tensor = self.attn(y, y, y, need_weights=self.weights)[0]
        return out.softmax(-1)


def _traced(width: int, heads: int, b: int, t: int, weights: bool = False) -> tuple[nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    model = _Attend(width, heads, weights).eval()
    x = torch.randn(b, t, width, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, x, axes="b t m")
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
    return model, d


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("width, heads", [(4, 2), (8, 4), (6, 3)])
def test_a_width_equal_to_batch_times_heads_stays_the_width(width: int, heads: int, weights: bool) -> None:
    """At batch 2, ``width = 2 * heads``: the attention's ``(b*h, t, k)`` wire has the width's size (with and
    without the attention weights: fused into SDPA or read as a softmax)."""
    model, d = _traced(width, heads, 2, 5, weights)
    (out,) = d.cod.segments
    last = out.axes[-1]
    assert not last.size.free_symbols and int(last.size) == width, str(d.cod)
    assert [str(a.size) for a in out.axes[:-1]] == ["b", "t"], str(d.cod)
    x = torch.randn(2, 7, width, generator=torch.Generator().manual_seed(2))  # another length
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(t=7)(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_width_unlike_batch_times_heads_is_unchanged() -> None:
    """The control: width 16, 4 heads (b*h = 8) has the same output type."""
    model, d = _traced(16, 4, 2, 5)
    (out,) = d.cod.segments
    assert [str(a.size) for a in out.axes] == ["b", "t", "16"], str(d.cod)


def _at_another_batch(weights: bool) -> None:
    model, d = _traced(4, 2, 2, 5, weights)
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(b=3, t=7)(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_lowered_attention_runs_at_another_batch() -> None:
    """Fused into SDPA: the batch and length are symbols all through (before: a view held ``q:6`` at batch 3)."""
    _at_another_batch(False)


def test_the_lowered_attention_with_weights_runs_at_another_batch() -> None:
    """With the weights: the output, read back from ``(b*h, t, k)`` as ``(t*b, m)``, is the merge ``t*b`` (before,
    ``2*t``: the leading half of a wire of 4 not yet followed as ``b*h``, and the batch was held at 2)."""
    _at_another_batch(True)


def test_torch_mha_need_weights_holds_no_box_at_its_traced_batch() -> None:
    """The corpus's sequence-first ``nn.MultiheadAttention(16, 4)`` at batch 2 (``b*h = 8``): no view is held at the
    traced batch, and it lowers equal at batch 3 and another length."""
    torch.manual_seed(0)
    model = nn.MultiheadAttention(16, 4).eval()

    class Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, weights = self.attn(x, x, x)
            return out, weights

    call = Call().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(call, torch.randn(6, 2, 16), axes="t b m")
    assert d.fixed == (), d.fixed
    x = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = d.to_torch(b=3, t=4)(x), call(x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
