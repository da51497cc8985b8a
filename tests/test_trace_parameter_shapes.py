"""A parameter the model reads through views that only reshape it (``embed[None]``, ``w.view(...)``,
``w.unsqueeze(0)``, a parameter of a size-1 lead read as ``w[0]``) keeps the model's own shape in the lowered module:
its state dict is the model's (same shapes, same entries, in the same order), outputs and autograd's gradients equal."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd

Read = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

READS: dict[str, Read] = {  # (h: b t m of an input, e: the (7, 4) parameter, s: the (1, 7, 4) one)
    "index_none": lambda h, e, s: torch.cat([h, e[None]], 0),
    "unsqueeze": lambda h, e, s: torch.cat([h, e.unsqueeze(0)], 0),
    "view": lambda h, e, s: torch.cat([h, e.view(1, 7, 4)], 0),
    "reshape_other": lambda h, e, s: h * e.view(2, 14).reshape(1, 7, 4),
    "flatten": lambda h, e, s: h.flatten(1) + e.flatten(),
    "direct_and_view": lambda h, e, s: torch.cat([h, e.unsqueeze(0)], 0) + e,
    "cdist": lambda h, e, s: torch.cdist(h.flatten(0, 1)[None], e[None]),
    "squeezed": lambda h, e, s: torch.cat([h[0], s[0]], 0),
    "squeezed_both": lambda h, e, s: torch.cat([h, s], 0) * s.squeeze(0),
    "expand": lambda h, e, s: h + e[None].expand(2, 7, 4),
    # read transposed as data: was a (1, 4, 7) parameter, now the (7, 4) one, transposed, then viewed
    "transposed": lambda h, e, s: torch.cat([h.mT, e.t()[None]]),
    "transposed_single": lambda h, e, s: h.mT * s.mT,
    "permuted": lambda h, e, s: h.permute(2, 0, 1) - s.permute(2, 0, 1),
}


class _Reads(nn.Module):
    def __init__(self, read: Read) -> None:
        super().__init__()
        self.read = read
        self.embed = nn.Parameter(torch.randn(7, 4))
        self.lin = nn.Linear(4, 4)
        self.single = nn.Parameter(torch.randn(1, 7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.lin(x), self.embed, self.single)


@pytest.mark.parametrize("name", sorted(READS))
def test_a_parameter_read_through_a_reshaping_view_keeps_the_models_shape(name: str) -> None:
    torch.manual_seed(0)
    model = _Reads(READS[name]).eval()
    x, fresh = torch.randn(2, 7, 4), torch.randn(2, 7, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    mine, theirs = list(model.parameters()), list(lowered.parameters())  # (it keeps the unread ones too)
    assert sorted((tuple(p.shape), p.detach().flatten().tolist()) for p in theirs) \
        == sorted((tuple(p.shape), p.detach().flatten().tolist()) for p in mine)  # the model's shapes and entries
    for inputs in (x, fresh):
        torch.testing.assert_close(lowered(inputs), model(inputs), rtol=0, atol=0)
    want, got = model(fresh), lowered(fresh)
    weights = torch.linspace(-1, 1, want.numel()).reshape(want.shape)
    want_grads = torch.autograd.grad((want * weights).sum(), mine, allow_unused=True)
    got_grads = torch.autograd.grad((got * weights).sum(), theirs, allow_unused=True)
    for p, g in zip(mine, want_grads):
        (k,) = [k for k, q in enumerate(theirs) if q.shape == p.shape and torch.equal(q, p)]
        zero = torch.zeros_like(p)
        torch.testing.assert_close(got_grads[k] if got_grads[k] is not None else zero, g if g is not None else zero,
                                   rtol=1e-5, atol=1e-6)
    again = ncd.load_json(d.to_json()).to_torch()  # the state dict mapped by name loads (same shapes)
    again.load_state_dict(d.state_dict(again))
    torch.testing.assert_close(again(fresh), model(fresh), rtol=0, atol=0)
