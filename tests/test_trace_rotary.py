"""The rotary idiom (``ncd.trace.rotary``): tables equal to RoFormer's at their own scale are one ``ρ`` box; tables a
little off stay as recorded, whatever their scale."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.rotary import RotaryOp
from ncd.trace.rotary import rotary_table


class Rope(nn.Module):
    """``x · cos + rotate_half(x) · sin`` of tables scaled by ``scale``, the sine table's times ``off``."""

    def __init__(self, scale: float, off: float) -> None:
        super().__init__()
        cos, sin = rotary_table(6, 8, 10000.0, scale)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin * off)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = torch.cat((-x[..., 4:], x[..., :4]), -1)
        out: torch.Tensor = x * self.cos + half * self.sin
        return out


@pytest.mark.parametrize("scale", [1.0, 1e-6])
@pytest.mark.parametrize("off", [1.0, 1.01])
def test_rotary_tables_are_read_at_their_own_scale(scale: float, off: float) -> None:
    # before, the tables were compared with an absolute tolerance of 1e-5: tables scaled by 1e-6 matched any base's,
    # so a sine table 1 % off was one rotary box and the lowered module 0.6 % off the model
    torch.manual_seed(0)
    model = Rope(scale, off)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 3, 6, 8))
    assert any(isinstance(b.prim, RotaryOp) for b in d.boxes()) == (off == 1.0)
    x = torch.randn(2, 3, 6, 8)
    want = model(x)
    torch.testing.assert_close(d.to_torch()(x), want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
