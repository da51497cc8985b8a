"""``torch.clamp(x, lo, hi)`` by two tensors where ``x`` has fewer entries than the result (the bounds broadcast it
up): one clamp box, as where ``x`` carries every wire, so the lowered module's and the backward diagram's gradients
are autograd's where the bounds tie or cross (a chain of a maximum and a minimum gave ``x < lo = hi``'s to ``lo``)."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.torch.verify import compare_gradients


class ClampedBoth(torch.nn.Module):
    def forward(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, lo, hi)


#: the shapes of x, lo, hi: x a row, a column, lacking a middle wire; the bounds broadcast too
SHAPES = {
    "x row": ((11,), (3, 11), (3, 11)),
    "x column": ((3, 1), (3, 11), (3, 11)),
    "x lacks the middle": ((2, 1, 11), (3, 11), (2, 3, 11)),
    "bounds broadcast": ((11,), (3, 1), (3, 11)),
}


def _tied(shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
    """Small integers: x at a bound, bounds equal (torch's clamp then gives no gradient where x < lo), lo above hi."""
    torch.manual_seed(0)
    return [torch.randint(-2, 3, s).float() for s in shapes]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_clamp_of_a_smaller_x_by_two_tensors_has_autograds_gradient(name: str) -> None:
    x, lo, hi = _tied(SHAPES[name])
    d = ncd.trace(ClampedBoth(), x, lo, hi)
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes() if b.prim.family == "elementwise"] == ["clamp"]
    ins = [t.clone().requires_grad_() for t in (x, lo, hi)]
    y = ClampedBoth()(*ins)
    cotangent = torch.linspace(0.1, 1.0, y.numel()).reshape(y.shape)
    want = torch.autograd.grad((y * cotangent).sum(), ins)
    assert bool(((x < lo) & (lo == hi)).any()) and bool((lo > hi).any())  # the cases a chain got wrong are there
    low = [t.clone().requires_grad_() for t in (x, lo, hi)]
    y_low = d.to_torch()(*low)
    assert torch.equal(y_low, y.detach())
    for w, g in zip(want, torch.autograd.grad((y_low * cotangent).sum(), low)):
        assert torch.equal(w, g)
    for what, mine, theirs in compare_gradients(d, inputs=(x, lo, hi)):
        assert torch.equal(mine, theirs), what
