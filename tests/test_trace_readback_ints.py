"""readback (stop 53): sizes turned into plain ints through doors the sized numbers cannot watch -- ``int(t)`` (CPython
copies an int subclass whatever ``__int__`` returns), ``operator.index(t)`` and ``math.gcd(t, 4)`` (C reads an int
subclass without asking it), ``math.log2`` imported by name (``from math import log2``: bound before the recording
patched ``math``), and ``numel()`` of a shape kept in a local (``s = x.shape; s.numel()``), sliced
(``x.shape[1:].numel()``) or copied (``torch.Size(x.shape).numel()``). Traced at one size, the traced diagram refused
other sizes or equalled the model there, but its pickle and JSON read-back lowered at other sizes computing the traced
number, with only the read-back's generic warning.  Now each path at each other size either equals the model run at
that size or raises an ncd error."""

from __future__ import annotations

import math
import operator
import pickle
import warnings
from collections.abc import Callable
from math import gcd as _gcd
from math import log2

import pytest
import torch
from torch import nn

import ncd
from ncd.errors import NCDError
from tests.test_trace_readback_sizes import _lowered, _Sizes  # (lowered on the traced, pickled and JSON paths)


def _stored(x: torch.Tensor) -> torch.Tensor:
    s = x.shape
    return x.sum(-1, keepdim=True) / s.numel()


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "int": lambda x: x * int(x.size(1)),
    "int_of_shape": lambda x: x / int(x.shape[-2]),
    "operator_index": lambda x: x * operator.index(x.size(1)),
    "math_gcd": lambda x: x * math.gcd(x.size(1), 4),
    "math_isqrt": lambda x: x * math.isqrt(2 * x.size(1)),
    "stored_numel": _stored,
    "sliced_numel": lambda x: x.sum(-1, keepdim=True) / x.shape[1:].numel(),
    "size_numel": lambda x: x.sum(-1, keepdim=True) / torch.Size(x.shape).numel(),
}
SIZES = ((4, 8), (2, 5), (3, 7))


class _Imported(nn.Module):
    """``from math import log2``, ``from math import gcd``: the names this module bound at import time."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return h * log2(h.size(1)) + h / _gcd(h.size(1), 4)


class _Reshaped(nn.Module):
    """``int(t)`` handed to a reshape: held too (the reshape alone would follow it; a held size is refused at read-back,
    never wrong)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(int(x.size(0)), -1) * 2


def _traced(model: nn.Module) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, torch.randn(2, 6, 4), axes="b t m")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_read_back_at_other_sizes_is_refused_or_equal(name: str) -> None:
    torch.manual_seed(0)
    model = _Sizes(CASES[name]).eval()
    d = _traced(model)
    for b, t in SIZES:
        _lowered(model, d, b, t)
    with torch.no_grad():  # and at the traced size, every path equals the model
        x = torch.randn(2, 6, 4)
        torch.testing.assert_close(d.to_torch()(x), model(x))


def test_functions_imported_by_name_are_held() -> None:
    torch.manual_seed(0)
    model = _Imported().eval()
    d = _traced(model)
    for b, t in SIZES:
        _lowered(model, d, b, t)
    assert log2 is math.log2 and _gcd is math.gcd and operator.index is not None  # (restored after the recording)


def test_an_int_of_a_size_names_the_models_line() -> None:
    torch.manual_seed(0)
    model = _Sizes(CASES["int"]).eval()
    d = _traced(model)
    back = pickle.loads(pickle.dumps(d))
    with pytest.raises(NCDError, match=r"t.*test_trace_readback_ints\.py:\d+.*int\(\) = 6"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back.to_torch(t=7)


def test_a_held_reshape_still_lowers_when_the_model_agrees() -> None:
    torch.manual_seed(0)
    model = _Reshaped().eval()
    d = _traced(model)
    assert _lowered(model, d, 4, 8)["traced"]  # (the traced diagram runs the model there: it agrees)
