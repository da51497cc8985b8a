"""A traced diagram lowered at other sizes is either equal to the model there or refused at ``to_torch``/``to_source``
time, naming the real cause (the axis and its sizes, the box recorded at the traced sizes) — never late, never wrong.

* a weight-normed transposed convolution's output length is torch's formula of the input's (``2t + 1``), so it lowers
  equal at other lengths (it kept the traced 19 and was refused as "a size the model computes in Python");
* a name with several fixed sizes (a strided convolution's ``t:8`` in, ``t:2`` out) is refused at another value when
  lowering (it was accepted, and the module refused its input only when called);
* ``to_source`` refuses a box recorded at the traced sizes at another size, as ``to_torch`` does (it printed the table
  at the new size, filled with the traced values' shape).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.errors import NCDError, SizeError


def _weight_normed(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.utils.parametrizations.weight_norm(module)


@pytest.mark.parametrize(("make", "traced"), [
    (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2), 9),
    (lambda: nn.ConvTranspose1d(4, 6, 4, stride=3, padding=1, output_padding=1), 7),
    (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2, dilation=2), 8),
])
@pytest.mark.parametrize(("b", "t"), [(3, 12), (2, 5), (1, 16)])
def test_weight_normed_transposed_convolution_at_other_lengths(make, traced: int, b: int, t: int) -> None:
    torch.manual_seed(0)
    model = _weight_normed(make()).eval()
    d = ncd.trace(model, torch.randn(2, 4, traced), axes=["b c t"])
    assert d.opaque_count == 0
    x = torch.randn(b, 4, t)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(b=b, t=t)(x), model(x))
    assert "conv_transpose1d" in d.to_source(b=b, t=t)


class Standardised(nn.Conv2d):
    """A weight-standardised 2-d convolution (BiT's): its weight is computed, so it is one box taking it as a wire."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("t", [12, 6, 9])
def test_a_strided_computed_weight_convolution_at_other_lengths(t: int) -> None:
    """Its output rows are the window count of ``t`` (``t/2``, was the traced 4): equal to the model where the stride
    divides, an ncd error naming the stride where it does not (it was refused as a size computed in Python)."""
    torch.manual_seed(0)
    model = Standardised(4, 6, 3, stride=2, padding=1).eval()
    d = ncd.trace(model, torch.randn(2, 4, 8, 5), axes=["b c t w"])
    assert d.opaque_count == 0
    x = torch.randn(2, 4, t, 5)
    if t % 2:
        with pytest.raises(NCDError, match="stride 2 does not divide axis t=9"):
            d.to_torch(t=t)
        return
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(t=t)(x), model(x))


class StridedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, stride=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2))


@pytest.mark.parametrize("lower", ["to_torch", "to_source"])
def test_a_name_of_several_fixed_sizes_is_refused_when_lowering(lower: str) -> None:
    torch.manual_seed(0)
    model = StridedConv().eval()
    d = ncd.trace(model, torch.randn(2, 8, 4))
    assert {a.size for a in (*d.dom[0].axes, *d.cod[0].axes) if a.name == "t"} == {8, 2}  # the premise: t at 8 and 2
    for t in (9, 2):  # 2 is the output's size, not the input's: the module would refuse its input when called
        with pytest.raises(SizeError, match=rf"axis t has the sizes 2, 8 in the diagram \(8 on its inputs\), so t={t} "):
            getattr(d, lower)(t=t)
    x = torch.randn(2, 8, 4)
    with torch.no_grad():  # at its own sizes it lowers, equal to the model
        torch.testing.assert_close(d.to_torch(t=8)(x), model(x))


class Table(nn.Module):
    """A table computed in the forward from the input's length: a constant of the traced sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], dtype=x.dtype)[:, None] / torch.arange(1, 5, dtype=x.dtype)
        return self.linear(x) + positions.sin()


@pytest.mark.parametrize("lower", ["to_torch", "to_source"])
def test_a_box_of_the_traced_sizes_is_refused_by_both_lowerings(lower: str) -> None:
    torch.manual_seed(0)
    model = Table().eval()
    d = ncd.trace(model, torch.randn(2, 8, 4), axes=["b t m"])
    with pytest.raises(ncd.TraceError, match=r"at \{'t': 9\} \(traced at \{'t': 8\}\): these boxes hold .* constant"):
        getattr(d, lower)(t=9)
    x = torch.randn(3, 8, 4)
    with torch.no_grad():  # b is free: lowered there, equal to the model
        torch.testing.assert_close(d.to_torch(b=3)(x), model(x))
    assert "class Table" in d.to_source(b=3)

