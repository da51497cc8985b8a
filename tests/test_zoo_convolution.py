"""The zoo's convolution entry equals torch.nn.Conv1d/2d and ConvTranspose2d with copied weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd.zoo
from tests.test_zoo_support import Pair, check_equivalent, param

CASES = [
    ("2d-plain", dict(), dict(c=3, d=4, x=7, y=6), lambda: nn.Conv2d(3, 4, 3)),
    ("2d-stride-padding", dict(stride=2, padding=1), dict(c=3, d=4, x=8, y=6), lambda: nn.Conv2d(3, 4, 3, 2, 1)),
    ("2d-dilation", dict(dilation=2, padding=2), dict(c=2, d=3, x=9, y=7), lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2)),
    ("2d-groups", dict(groups=2, bias=False), dict(c=4, d=6, x=6, y=6), lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False)),
    ("2d-depthwise", dict(groups="c", padding=1), dict(c=3, d=6, x=5, y=5), lambda: nn.Conv2d(3, 6, 3, padding=1, groups=3)),
    ("2d-1x1", dict(kernel=1), dict(c=5, d=2, x=4, y=3), lambda: nn.Conv2d(5, 2, 1)),
    ("1d-stride", dict(dims=1, kernel=5, stride=2, padding=2), dict(c=3, d=4, x=12), lambda: nn.Conv1d(3, 4, 5, 2, 2)),
    ("2d-transposed", dict(transposed=True, kernel=2, stride=2), dict(c=4, d=3, x=5, y=4),
     lambda: nn.ConvTranspose2d(4, 3, 2, 2)),
]


@pytest.mark.parametrize("name, options, sizes, reference", CASES, ids=[c[0] for c in CASES])
def test_convolution_equals_torch(name: str, options: dict, sizes: dict, reference) -> None:
    torch.manual_seed(0)
    d = ncd.zoo.convolution(**options)
    ours, ref = d.to_torch(**sizes), reference()
    pairs = [Pair(param(ours, "weight"), ref.weight)] + ([Pair(param(ours, "bias"), ref.bias)] if ref.bias is not None else [])
    check_equivalent(ours, ref, pairs, d.example_inputs(2, **sizes))


def test_convolution_one_by_one_is_a_linear_map_over_channels() -> None:
    """1×1 convolution tensors are the identity: ★1 equals **L₊** over the channels, woven over the pixels."""
    torch.manual_seed(0)
    sizes = dict(c=5, d=2, x=4, y=3)
    conv = ncd.zoo.convolution(kernel=1).to_torch(**sizes)
    linear = (ncd.Identity.of("c x y") >> ncd.Transpose("c x y -> x y c") >> ncd.Linear("c -> d", bias=True)
              >> ncd.Transpose("x y d -> d x y")).to_torch(**sizes)
    with torch.no_grad():
        param(linear, "weight").copy_(param(conv, "weight").flatten(1))
        param(linear, "bias").copy_(param(conv, "bias"))
    image = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(conv(image), linear(image))


@pytest.mark.parametrize("spec, groups", [("c:4 x:6 -> d:6 x", 2), ("c:4 x:6 -> d:6 x", 1), ("c:3 x:6 -> d:6 x", 3),
                                          ("c x:6 -> d x", 2), ("c:4 x:6 -> d:6 x", "g"), ("c x:6 -> d x", "c")])
def test_convolution_groups_that_divide_the_channels_are_accepted(spec: str, groups: object) -> None:
    from ncd.prims.convolution import ConvOp

    prim = ncd.Conv(spec, kernel=3, groups=groups).prim
    assert isinstance(prim, ConvOp)
    assert str(prim.groups) == str(groups)


@pytest.mark.parametrize("spec, groups, message", [
    ("c:4 x:6 -> d:6 x", 3, "groups=3 must divide the channel axis c=4"),
    ("c:4 x:6 -> d:5 x", 2, "groups=2 must divide the channel axis d=5"),
    ("c:4 x:6 -> d:6 x", 0, "groups must be a positive whole number"),
    ("c:4 x:6 -> d:6 x", -2, "groups must be a positive whole number"),
])
def test_convolution_groups_that_do_not_divide_the_channels_are_refused(spec: str, groups: int, message: str) -> None:
    from ncd.errors import SizeError

    with pytest.raises(SizeError, match=message):
        ncd.Conv(spec, kernel=3, groups=groups)
