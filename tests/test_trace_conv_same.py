"""A convolution with string padding (``nn.Conv1d(..., padding="same")``: LASR's depthwise convolution of an even
kernel) is a convolution box — after a zero-padding box where torch pads one more zero after than before — not an
opaque box.  The lowered module is compared with the model on a fresh input, and its gradients with autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from tests.trace_checks import agrees_with_gradients

CASES = {
    "1d even kernel (asymmetric)": (lambda: nn.Conv1d(4, 4, 6, padding="same", groups=4), (2, 4, 9)),
    "1d odd kernel, dilated": (lambda: nn.Conv1d(4, 3, 3, padding="same", dilation=2), (2, 4, 9)),
    "2d even by odd kernel": (lambda: nn.Conv2d(3, 2, (2, 3), padding="same"), (2, 3, 5, 6)),
    "1d valid": (lambda: nn.Conv1d(4, 3, 3, padding="valid", bias=False), (2, 4, 9)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_convolution_with_string_padding_is_a_convolution_box(case: str) -> None:
    make, shape = CASES[case]
    torch.manual_seed(0)
    model = nn.Sequential(make()).eval()
    d = ncd.trace(model, torch.randn(*shape))
    assert d.opaque_count == 0  # was 1: aten.conv1d.padding / conv2d.padding declined ('string padding')
    assert [b.prim.op for b in d.boxes()].count("conv") == 1
    lowered = d.to_torch()
    agrees_with_gradients(lowered, model, shape)
    grads = sorted(float(p.grad.abs().sum()) for p in lowered.parameters())
    torch.testing.assert_close(grads, sorted(float(p.grad.abs().sum()) for p in model.parameters()))
