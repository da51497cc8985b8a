"""Red team, sixth pass: each test fails on the main it was written against and compares with the model itself."""

from __future__ import annotations

import warnings

import torch

import ncd


def _lowered(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.nn.Module:
    """``model`` traced on ``inputs`` (its warnings ignored) and lowered."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs).to_torch()


class _Bucketed(torch.nn.Module):
    """Positions bucketed by an integer buffer: ``ids // self.width`` (a relative-position bucket, a window index)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("width", torch.tensor(3))
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids // self.width)


class _Repeated(torch.nn.Module):
    """Rows repeated by a constant count each (``repeat_interleave`` by a tensor: an opaque box holding it)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + x.repeat_interleave(torch.tensor([1, 0, 2, 1]), dim=0)


def test_a_lowered_module_whose_constants_decide_a_division_or_a_shape_loads_its_values() -> None:
    """Loading the traced values first runs the lowered module once to learn the order it reads its tensors in; it ran
    on its initial values (zeros), so an integer buffer dividing positions raised ZeroDivisionError and a count of
    repeats made a shape the next box refused: on main ``to_torch()`` raised RunError for both models, which trace
    without a warning but the opaque box's."""
    torch.manual_seed(0)
    bucketed, ids = _Bucketed(), torch.randint(0, 30, (2, 5))
    lowered = _lowered(bucketed, ids)
    for x in (ids, torch.randint(0, 30, (2, 5))):
        torch.testing.assert_close(lowered(x), bucketed(x))
    repeated, rows = _Repeated(), torch.randn(4, 3)
    lowered = _lowered(repeated, rows)
    for x in (rows, torch.randn(4, 3)):
        torch.testing.assert_close(lowered(x), repeated(x))
