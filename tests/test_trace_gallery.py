"""The importer on the gallery's references: the independent implementations the zoo is proven against.

Each is traced, lowered back, and compared with the model itself; none may need an opaque box.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from tests.test_trace import round_trip
from tests.test_zoo_convnets import IdentityResNet, UNet


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


class Seq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.Transformer(16, 2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32,
                                          dropout=0.0, batch_first=True)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.transformer(source, target)


def _eval(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return model.eval()


CASES = {
    "nn.MultiheadAttention": lambda: (_eval(SelfAttention()), (torch.randn(2, 5, 16),)),
    "nn.Transformer": lambda: (_eval(Seq2Seq()), (torch.randn(2, 5, 16), torch.randn(2, 4, 16))),
    "identity ResNet": lambda: (_eval(IdentityResNet(2, [4, 8, 8, 16], 3, 5)), (torch.randn(2, 3, 8, 8),)),
    "U-Net": lambda: (_eval(UNet(2, 2, 3)), (torch.randn(2, 2, 16, 16),)),
}


@pytest.mark.parametrize("name", CASES)
def test_gallery_reference_round_trips_without_opaque_boxes(name: str) -> None:
    model, inputs = CASES[name]()
    diagram = round_trip(model, *inputs, atol=1e-4)
    assert isinstance(diagram, ncd.Diagram)
    assert diagram.opaque_count == 0, diagram.opaque
