"""A traced diagram's lowered module given floating-point inputs of another type than the model was traced on (a
module without parameters given float64 inputs, or one converted with ``.half()``): it computes what the model computed
in the traced type (its branch on ``x.dtype``, its ``torch.finfo(x.dtype).eps``), which the model run in that type may
not; it did so with no word (1.4 off a branch on float16, 2.5 off one on float64).  Now it warns once, naming the
input and both types (checked against the model run in that type)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class Typed(nn.Module):
    """Computes otherwise in float64 and in half precision, as its Python reads its input's type."""

    def __init__(self, learned: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4) if learned else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lin is not None:
            x = self.lin(x)
        if x.dtype in (torch.float16, torch.float64):
            return x * 2
        return x + torch.finfo(x.dtype).eps * 1e5


@pytest.mark.parametrize("learned, dtype", [(False, torch.float64), (True, torch.float16), (True, torch.float64)])
def test_a_lowered_module_given_another_float_type_than_traced_warns_once(learned: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model, x = Typed(learned).eval(), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        lowered = d.to_torch()
        torch.testing.assert_close(lowered(x), model(x))  # the traced type: equal, no word
    assert not [w for w in said if "traced on" in str(w.message)]
    lowered, model, y = lowered.to(dtype), model.to(dtype), x.to(dtype)
    with pytest.warns(RuntimeWarning, match=rf"the lowered Typed is given input 0 in {dtype}, but the model was"
                                            r" traced on torch\.float32"):
        got = lowered(y)
    with torch.no_grad():
        assert not torch.allclose(got.double(), model(y).double(), atol=1e-3)  # what the warning is about
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        lowered(y)
    assert not said  # once
