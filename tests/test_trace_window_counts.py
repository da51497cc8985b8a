"""Window counts the stride does not divide (torch's ``floor((t - k)/s) + 1``): a traced diagram lowers equal to the
model at the traced sizes, and at other sizes is equal or refused loudly — never a count rounded the wrong way.

Found on gemma4_audio (``pad(h, (0, 0, 12, 11)).unfold(1, 24, 12)`` on 8 frames: 1 window, while the symbolic rule
``t/12 + 11/12`` gives 19/12 there); the same holds for a strided convolution and ``F.unfold``."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.errors import NCDError
from tests.trace_checks import traced_without_opaque


class PaddedUnfold(torch.nn.Module):
    """gemma4_audio's chunking: frames padded by 12 and 11, then windows of 24 every 12."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.lin(x), (0, 0, 12, 11)).unfold(1, 24, 12).sum(-1)


class StridedConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 4, 3, stride=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2))


class Im2col(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x).transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, 5)
        return F.unfold(h, (3, 2), stride=(3, 2))


class Unfold(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).unfold(1, 3, 2).sum(-1)


class CeilPool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(self.lin(x).transpose(1, 2), 3, 2, ceil_mode=True)


MODELS = [PaddedUnfold, StridedConv, Im2col, Unfold, CeilPool]


@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
def test_lowers_equal_at_the_traced_length(make: type[torch.nn.Module]) -> None:
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(2, 8, 4)
    traced_without_opaque(model, x)


@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("t", [9, 10, 13, 16])
def test_other_lengths_equal_or_refused(make: type[torch.nn.Module], t: int) -> None:
    torch.manual_seed(0)
    model, x, y = make().eval(), torch.randn(2, 8, 4), torch.randn(2, t, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
        try:
            out = d.to_torch(t=t)(y)
        except NCDError:
            return  # refused loudly
    with torch.no_grad():
        torch.testing.assert_close(out, model(y))
