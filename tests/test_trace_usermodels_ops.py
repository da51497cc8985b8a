"""Operators the plain-PyTorch zoo drew opaque, now real boxes: circular padding (``F.pad`` and a convolution's
``padding_mode="circular"``) and the gated linear unit (``F.glu``, ``nn.GLU``).  Each is compared with the model on a
fresh input."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

import ncd
from tests.test_trace_usermodels import zoo


def _check(model: torch.nn.Module, shape: tuple[int, ...]) -> ncd.trace.TracedDiagram:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(*shape))
    assert d.opaque_count == 0, d.opaque
    x = torch.randn(*shape)
    for got, want in zip(tree_leaves(d.to_torch()(x)), tree_leaves(model(x)), strict=True):
        torch.testing.assert_close(got, want)
    return d


def test_circular_padding_is_a_pad_box() -> None:
    import corpus_torch_users as users

    for model, shape in ((zoo.Convs1d().eval(), (2, 8, 11)), (users.CircularPad(), (2, 5, 6))):
        d = _check(model, shape)
        assert any(getattr(b.prim, "mode", "") == "circular" for b in d.boxes())


class Gated(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.glu = torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.GLU(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.glu(self.conv(x)), F.glu(x, -1), F.glu(x.transpose(1, 2), 1)


@pytest.mark.parametrize("shape", [(2, 4, 6), (1, 4, 10)])
def test_a_gated_linear_unit_is_halves_a_sigmoid_and_a_product(shape: tuple[int, ...]) -> None:
    d = _check(Gated().eval(), shape)
    ops = [b.prim.op for b in d.boxes()]
    sigmoids = [b for b in d.boxes() if getattr(b.prim, "function", "") == "sigmoid"]
    assert (ops.count("slice"), len(sigmoids), ops.count("multiply")) == (6, 3, 3), ops
