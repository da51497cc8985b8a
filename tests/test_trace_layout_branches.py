"""A model branching on its tensors' memory layout beyond ``is_contiguous()`` (``stride``, ``storage_offset``,
``data_ptr``, ``is_contiguous(memory_format=...)``, of an input or of a value computed from one; stop 53: ``stride`` of a
value computed elementwise from an input, ``(x + 1).stride(-1)``, laid out as the input is): each traced with no word
before, and its lowered module computed the traced layout's branch on inputs laid out otherwise (up to 4.5 off the
model).  Now warned at the model's line, where the model itself computes otherwise on the same values laid out
otherwise (checked against the model on inputs laid out so); reads that change nothing are not warned."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class Branch(nn.Module):
    """``x * 2`` or ``x + 1`` as a read of ``x``'s layout (or of a view of it) decides."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        how = self.how
        if how == "stride":
            taken = x.stride(-1) == 1
        elif how == "offset":
            taken = x.storage_offset() == 0
        elif how == "address":
            taken = x.data_ptr() % 64 == 0
        elif how == "channels_last":
            taken = x.is_contiguous(memory_format=torch.channels_last)
        elif how == "view_contiguous":  # of a value made from the input: its transpose
            taken = x.transpose(0, 1).is_contiguous()
        elif how == "computed_stride":  # of a value computed elementwise from the input: laid out as the input is
            taken = (x + 1).stride(-1) == 1
        elif how == "computed_view":  # of a view of such a value
            taken = torch.sigmoid(x * 2)[:, ::2].stride(1) == 2
        else:  # "view_stride"
            taken = x[:, ::2].stride(1) == 2
        return x * 2 if taken else x + 1


def _other_layouts(x: torch.Tensor) -> list[torch.Tensor]:
    """``x``'s values laid out otherwise: transposed in memory, one entry into a buffer, channels-last."""
    shifted = torch.empty(x.numel() + 1)[1:].view(x.shape)
    shifted.copy_(x)
    out = [x.t().contiguous().t() if x.dim() == 2 else x.contiguous(memory_format=torch.channels_last), shifted]
    return out


@pytest.mark.parametrize("how", ["stride", "offset", "address", "channels_last", "view_contiguous", "view_stride",
                                 "computed_stride", "computed_view"])
def test_a_branch_on_a_layout_read_is_warned_where_the_model_computes_otherwise(how: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5) if how == "channels_last" else torch.randn(4, 4)
    model = Branch(how)
    with pytest.warns(RuntimeWarning, match=r"reads a tensor's memory layout \(\.[a-z_]+\(\)\) at"
                                            r" test_trace_layout_branches\.py:\d+, and computes otherwise"):
        lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        # what the warning is about: on some layout of the same values the model takes the other branch
        assert any(not torch.allclose(lowered(y), model(y)) for y in _other_layouts(x))
    for name in ("is_contiguous", "stride", "storage_offset", "data_ptr"):
        assert name not in torch.Tensor.__dict__  # put back


class Harmless(nn.Module):
    """Reads its input's strides and offset, but computes the same values on any layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.stride(-1) != 1 or x.storage_offset():
            x = x.contiguous()
        return x.view(-1) * 2


class Fresh(nn.Module):
    """Reads the strides of a matmul's result, laid out by the kernel whatever its input's layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ x
        return h * 2 if h.stride(-1) == 1 else h + 1


@pytest.mark.parametrize("model", [Harmless(), Fresh()])
def test_a_layout_read_that_changes_nothing_is_not_warned(model: nn.Module) -> None:
    x = torch.randn(4, 4)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        lowered = ncd.trace(model, x).to_torch()
    assert not [w for w in said if "memory layout" in str(w.message)]
    for y in (x, *_other_layouts(x)):
        torch.testing.assert_close(lowered(y), model(y))
