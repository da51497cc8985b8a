"""The rotary embedding of neighbouring pairs (GPT-J's ``rotate_every_two``, Cohere's ``rotate_half``):
``q·cos + stack([−q[..., 1::2], q[..., 0::2]], −1).flatten(−2)·sin`` with tables repeated pairwise
(``repeat_interleave(freqs, 2)``) is ``ρ`` of the even entries then the odd ones, interleaved again: drawn as the two
slices, their concatenation, one ``ρ`` box and the interleaving (a split, a crossing, a merge) instead of the eight
recorded operations and two constant tables.  Tables not repeated pairwise, or not RoFormer's (a sine 1 % off), and a
turn read elsewhere stay as recorded.

Each diagram is compared with the model it was traced from (bit for bit at the traced length, where the products and
the sum are the model's own; at another length against the model run there) and its input gradient with autograd's."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.ir.diagram import Diagram
from ncd.prims.rotary import RotaryOp


class Pairs(nn.Module):
    """A projection into heads, rotated pairwise as Cohere's ``apply_rotary_pos_emb`` does, its tables computed from
    the length (``layout``: ``"interleave"`` repeats each frequency twice, ``"cat"`` lays the two halves out as LLaMA's
    tables; ``off`` scales the sine; ``heads_first``: ``b h t k`` with tables ``(1, 1, t, k)``, else ``b t h k`` with
    ``(1, t, 1, k)``; ``leak``: the turned tensor is a second output)."""

    def __init__(self, m: int = 16, h: int = 2, k: int = 8, layout: str = "interleave", off: float = 1.0,
                 heads_first: bool = True, leak: bool = False) -> None:
        super().__init__()
        self.h, self.k, self.layout, self.off, self.heads_first, self.leak = h, k, layout, off, heads_first, leak
        self.proj = nn.Linear(m, h * k)
        self.register_buffer("inv", 1.0 / 10000.0 ** (torch.arange(0, k, 2).float() / k), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q = self.proj(x).view(b, t, self.h, self.k)
        freqs = torch.arange(t).float()[:, None] * self.inv[None, :]
        emb = torch.repeat_interleave(freqs, 2, dim=-1) if self.layout == "interleave" else torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos(), emb.sin() * self.off
        if self.heads_first:
            q = q.transpose(1, 2)
            cos, sin = cos[None, None], sin[None, None]
        else:
            cos, sin = cos[None, :, None], sin[None, :, None]
        turned = torch.stack([-q[..., 1::2], q[..., ::2]], dim=-1).flatten(-2)
        out = q * cos + turned * sin
        return (out, turned) if self.leak else out


def _traced(model: nn.Module, x: torch.Tensor) -> Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


def _grad(f: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = f(x)
    (out[0] if isinstance(out, tuple) else out).pow(2).sum().backward()
    assert x.grad is not None
    return x.grad


@pytest.mark.parametrize("heads_first", [True, False], ids=["b_h_t_k", "b_t_h_k"])
def test_a_rotation_of_neighbouring_pairs_is_one_rotary_box(heads_first: bool) -> None:
    torch.manual_seed(0)
    model = Pairs(heads_first=heads_first).eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    ops = [b.prim.op for b in d.boxes()]
    assert d.opaque_count == 0 and ops.count("rotary") == 1 and "multiply" not in ops and "constant" not in ops
    (rotary,) = [b.prim for b in d.boxes() if isinstance(b.prim, RotaryOp)]
    assert rotary.base == 10000.0 and rotary.scale == 1.0
    lowered = d.to_torch()
    with torch.no_grad():
        assert torch.equal(lowered(x), model(x))  # the model's own products and sum, entry for entry
        y = torch.randn(3, 11, 16)
        torch.testing.assert_close(d.to_torch(b=3, t=11)(y), model(y), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_grad(lowered, x), _grad(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("layout", "off", "leak"), [("cat", 1.0, False), ("interleave", 1.01, False),
                                                    ("interleave", 1.0, True)],
                         ids=["tables_not_pairwise", "tables_not_roformers", "turn_read_elsewhere"])
def test_other_pairwise_turns_stay_as_recorded(layout: str, off: float, leak: bool) -> None:
    torch.manual_seed(0)
    model = Pairs(layout=layout, off=off, leak=leak).eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    assert d.opaque_count == 0 and not any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    with torch.no_grad():
        got, want = d.to_torch()(x), model(x)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_rotation_of_pairs_of_four_features_stays_as_recorded() -> None:
    # interleaving again would split the features into two wires of size 2, named in no fixed order: equal layers
    # (moonshine's partial rotations of 4 features) would no longer fold
    torch.manual_seed(0)
    model = Pairs(h=4, k=4).eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    assert not any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
