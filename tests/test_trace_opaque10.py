"""Operators that were opaque boxes in the corpus and are now boxes, checked against the model on fresh inputs:
``m * n`` of two boolean tensors (Mask2Former's decoder: ``attention_mask * where``) is ``m & n``."""

from __future__ import annotations

import warnings

import torch

import ncd


class _Flags(torch.nn.Module):
    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = x.sum(-1) > 0
        both = m * keep[:, :, None]  # bool * bool, broadcast: a bool
        return torch.where(both, x, 0.0), both * (x > 0)


def test_a_product_of_flags_is_their_conjunction() -> None:
    g = torch.Generator().manual_seed(0)
    x, m = torch.randn(2, 3, 4, generator=g), torch.rand(2, 3, 4, generator=g) > 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(_Flags(), x, m)
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.label() for b in d.boxes() if b.prim.op == "logic"] == ["∧", "∧"]
    lowered = d.to_torch()
    for _ in range(3):
        x, m = torch.randn(2, 3, 4, generator=g), torch.rand(2, 3, 4, generator=g) > 0.3
        for got, want in zip(lowered(x, m), _Flags()(x, m)):
            assert got.dtype == want.dtype and torch.equal(got, want)


class _Entropy(torch.nn.Module):
    """``xlogy(p, q)`` of two live tensors (a cross-entropy term: 0 where ``p`` is 0) and of a tensor and a number."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.relu(self.a(x)), torch.sigmoid(self.b(x))
        return torch.xlogy(p, q) + torch.xlogy(2.0, q) * torch.xlogy(p, 3.0)


def test_xlogy_is_one_box_with_autograds_gradients() -> None:
    from tests.test_trace_opaque8 import _gradients

    g = torch.Generator().manual_seed(0)
    model, x = _Entropy(), torch.randn(3, 4, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.label() for b in d.boxes() if b.prim.op == "binary_function"].count("xlogy") == 3
    lowered = d.to_torch()
    fresh = torch.randn(3, 4, generator=g)
    for inputs in (x, fresh):
        assert torch.equal(lowered(inputs), model(inputs))
    _gradients(model, lowered, (fresh,))
