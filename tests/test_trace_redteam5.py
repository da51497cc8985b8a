"""Red team, fifth pass: each test fails on the main it was written against and compares with the model itself or
with torch's autograd."""

from __future__ import annotations

import warnings

import torch

import ncd
from ncd.torch.verify import compare_gradients


class _Clamped(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x.clamp(0, 1), x.clamp(max=0.5), x.clamp(min=0).sqrt()


def test_the_backward_of_a_clamp_by_numbers_is_torchs_at_the_bounds_and_below_them() -> None:
    """``x.clamp(lo, hi)`` passes the cotangent where ``lo <= x <= hi`` in torch (``clamp_min``/``clamp_max``: the
    bound itself included), and gives exactly 0 elsewhere even where the cotangent is infinite (``sqrt`` of
    ``x.clamp(min=0)`` at ``x < 0``: a squared distance rounded below 0).  On main the backward diagram multiplied the
    cotangent by ``[x > lo]``: 0 at the bound where torch passes it, and ``inf · 0 = NaN`` below it."""
    model, x = _Clamped().eval(), torch.tensor([[-1.0, -1e-7, 0.0, 0.25, 0.5, 1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    rows = compare_gradients(d, inputs=(x,))
    assert rows
    for what, ours, autograd in rows:
        assert not ours.isnan().any(), (what, ours)
        torch.testing.assert_close(ours, autograd, msg=what)
