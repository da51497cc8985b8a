"""The zoo's identity ResNet (Figure 26) and U-Net (Figure 27) equal plainly hand-written PyTorch references.

The references are written from the figures, module by module, in the order the diagram creates its
parameters; weights are copied by that order (shapes checked) and outputs and gradients compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ncd.zoo
from tests.test_zoo_support import Pair, check_equivalent


def by_order(ours: nn.Module, ref: nn.Module) -> list[Pair]:
    mine, theirs = list(ours.parameters()), list(ref.parameters())
    assert len(mine) == len(theirs), f"{len(mine)} parameter tensors in the diagram, {len(theirs)} in the reference"
    return [Pair(a, b) for a, b in zip(mine, theirs)]


# -- identity ResNet -------------------------------------------------------------------------
class Unit(nn.Module):
    """Pre-activation bottleneck unit; the first unit of a block shares its pre-activation with a strided ★1 projection."""

    def __init__(self, n_in: int, n_out: int, s: int, first: bool) -> None:
        super().__init__()
        nb = n_out // 4
        self.bn0 = nn.BatchNorm2d(n_in)
        self.conv1, self.bn1 = nn.Conv2d(n_in, nb, 1, stride=s), nn.BatchNorm2d(nb)
        self.conv2, self.bn2 = nn.Conv2d(nb, nb, 3, padding=1), nn.BatchNorm2d(nb)
        self.conv3 = nn.Conv2d(nb, n_out, 1)
        self.projection = nn.Conv2d(n_in, n_out, 1, stride=s) if first else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn0(x))
        r = self.conv3(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(a)))))))
        return r + (self.projection(a) if self.projection is not None else x)


class IdentityResNet(nn.Module):
    def __init__(self, N: int, widths: list[int], c: int, k: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c, widths[0], 3, padding=1)
        units = []
        for n_in, n_out, s in zip(widths, widths[1:], (1, 2, 2)):
            units += [Unit(n_in, n_out, s, True)] + [Unit(n_out, n_out, 1, False) for _ in range(N - 1)]
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.linear = nn.Linear(widths[-1], k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.units(self.stem(x))))
        return torch.softmax(self.linear(x.mean(dim=(-2, -1))), -1)


def test_identity_resnet_equals_a_hand_written_one() -> None:
    torch.manual_seed(0)
    widths = [4, 8, 8, 16]
    ours = ncd.zoo.resnet().to_torch(N=3, x=8, c=3, k=5, n1=4, n2=8, n3=8, n4=16).train()  # batch statistics
    ref = IdentityResNet(3, widths, 3, 5).train()
    with torch.no_grad():  # make the norms' affine parameters matter
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    check_equivalent(ours, ref, by_order(ours, ref), [torch.randn(4, 3, 8, 8)], atol=1e-4, rtol=1e-3)


def test_identity_resnet_repeats_distinct_units_n_minus_one_times() -> None:
    """N−1 identity units after each first unit, each with its own weights (not the notebook's N shared ones)."""
    module = ncd.zoo.resnet().to_torch(N=3, x=8, n1=4, n2=8, n3=8, n4=16)
    for name in ("block1", "block2", "block3"):
        units = getattr(module, name).identityunits
        assert len(units) == 2
        assert units[0].residualcomponent.conv.weight is not units[1].residualcomponent.conv.weight
    defaults = dict(ncd.zoo.resnet().get("defaults"))
    assert [defaults[f"n{i}"] for i in range(1, 5)] == [16, 64, 128, 256] and defaults["N"] == 3


# -- U-Net -----------------------------------------------------------------------------------
def double(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    """Ronneberger et al. with padding: c_λ = c·2^(λ−1); the upsampled tensor comes first in each concatenation."""

    def __init__(self, c0: int, c: int, y: int) -> None:
        super().__init__()
        ch = [c0] + [c * 2**i for i in range(5)]  # c_0 … c_5
        self.down = nn.ModuleList([double(ch[i - 1], ch[i]) for i in range(1, 5)])
        self.bottom = double(ch[4], ch[5])
        self.bottom_up = nn.ConvTranspose2d(ch[5], ch[4], 2, stride=2)
        self.up = nn.ModuleList()
        for level in (4, 3, 2):
            upsample = nn.ConvTranspose2d(ch[level], ch[level - 1], 2, stride=2)
            self.up.append(nn.ModuleList([double(2 * ch[level], ch[level]), upsample]))
        self.last = double(2 * ch[1], ch[1])
        self.head = nn.Conv2d(ch[1], y, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom_up(self.bottom(x))
        for (block, upsample), skip in zip(self.up, reversed(skips[1:])):
            x = upsample(block(torch.cat([x, skip], dim=-3)))
        return self.head(self.last(torch.cat([x, skips[0]], dim=-3)))


def test_unet_equals_a_hand_written_one_end_to_end() -> None:
    torch.manual_seed(0)
    ours = ncd.zoo.unet().to_torch(c0=2, c=2, x=16, y=3)
    ref = UNet(2, 2, 3)
    check_equivalent(ours, ref, by_order(ours, ref), [torch.randn(2, 2, 16, 16)])


def test_unet_defaults_follow_the_figure() -> None:
    d = ncd.zoo.unet()
    assert dict(d.get("defaults")) == dict(c0=1, c=64, x=64, y=2)
    with torch.device("meta"):  # shapes only
        assert sum(p.numel() for p in d.to_torch().parameters()) == sum(p.numel() for p in UNet(1, 64, 2).parameters())
