"""Type promotion with 0-dim operands survives lowering: torch gives a 0-dim tensor (or a Python number) a say in the
result's type only when it is of a higher category than the tensors with dims (float16 ``x - 0.1`` stays float16, an
int32 ``ids + torch.tensor(3)`` stays int32), and computes with a number held at a position of its own (a power by a
0-dim tensor is another kernel than a power by a number).  Each case is a float32 model that makes a tensor of one
dtype (float16/bfloat16/float32/float64, int32, bool) and meets a number (Python float/int/bool), a 0-dim tensor of
another dtype (a buffer or one made in the forward) or a tensor of shape (1,) with each binary operation, on either
side; the lowered module must give the model's dtype and values, on the traced input and on a fresh one.  On main
before this test, float16/bfloat16 ``x + 0.1`` came out float32 and float64 ``x + 0.1`` added float32's 0.1 (no
warning), int32 ``x + torch.tensor(3)`` came out int64, and a number held in a 0-dim tensor stood for a Python number
where torch computes otherwise."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import ncd

F16, BF16, F32, F64, I32, I64, BOOL = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32,
                                       torch.int64, torch.bool)

OPS: dict[str, Callable[[Any, Any], torch.Tensor]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "maximum": lambda a, b: torch.maximum(a, b),
    "minimum": lambda a, b: torch.minimum(a, b),
    "where": lambda a, b: torch.where(a > 0, a, b) if isinstance(a, torch.Tensor) and a.dim() else torch.where(b > 0, a, b),
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}

#: the other operand: a Python number, a 0-dim tensor (a buffer, or made in the forward) or a tensor of shape (1,)
OTHERS: dict[str, tuple[str, Any]] = {
    "0.1": ("number", 0.1), "-2.5": ("number", -2.5), "3": ("number", 3), "True": ("number", True),
    "f32 buffer": ("buffer", torch.tensor(0.1)), "f64 buffer": ("buffer", torch.tensor(0.1, dtype=F64)),
    "f16 buffer": ("buffer", torch.tensor(0.1, dtype=F16)), "bf16 made": ("made", (0.1, BF16)),
    "i64 buffer": ("buffer", torch.tensor(3)), "i32 made": ("made", (3, I32)), "bool made": ("made", (True, BOOL)),
    "i64 (1,)": ("buffer", torch.tensor([3])), "f32 (1,)": ("buffer", torch.tensor([0.1])),
}


def _made(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == BOOL:
        return x > 0
    if not dtype.is_floating_point:
        return (x * 3).round().to(dtype)
    return x.to(dtype)


class Meet(nn.Module):
    """``op(x as dtype, other)`` (or ``op(other, x as dtype)``) for every operation torch runs on the pair."""

    def __init__(self, dtype: torch.dtype, other: tuple[str, Any], ops: list[str], flip: bool) -> None:
        super().__init__()
        self.dtype, self.kind, self.ops, self.flip = dtype, other[0], ops, flip
        if self.kind == "buffer":
            self.register_buffer("c", other[1])
        else:
            self.value = other[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = _made(x, self.dtype)
        b = self.c if self.kind == "buffer" else torch.tensor(self.value[0], dtype=self.value[1]) \
            if self.kind == "made" else self.value
        return tuple(OPS[op](b, a) if self.flip else OPS[op](a, b) for op in self.ops)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if want.is_floating_point():
        return torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    return torch.equal(got, want)


@pytest.mark.parametrize("flip", [False, True], ids=["x first", "x second"])
@pytest.mark.parametrize("other", list(OTHERS))
@pytest.mark.parametrize("dtype", [F16, BF16, F32, F64, I32, BOOL], ids=str)
def test_lowered_promotes_and_rounds_as_the_model(dtype: torch.dtype, other: str, flip: bool) -> None:
    torch.manual_seed(0)
    x, fresh = torch.randn(3, 5) * 2, torch.randn(3, 5) * 2
    ops = []
    for op in OPS:  # the operations torch runs on this pair (an integer to a negative power, a bool minus, ... raise)
        try:
            Meet(dtype, OTHERS[other], [op], flip)(x)
        except (RuntimeError, TypeError):
            continue
        ops.append(op)
    model = Meet(dtype, OTHERS[other], ops, flip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch()
    for given in (x, fresh):
        for op, got, want in zip(ops, lowered(given), model(given)):
            if op == "div" and OTHERS[other][0] == "number" and not flip and want.dtype in (F32, F64):
                # known: a division by a number is drawn as a scaling by its reciprocal (within a rounding)
                assert got.dtype == want.dtype
                torch.testing.assert_close(got, want)
                continue
            assert _same(got, want), f"{op}: lowered {got.dtype} {got.tolist()}, model {want.dtype} {want.tolist()}"


def test_half_minus_a_number_keeps_half_and_its_source_reads_plainly() -> None:
    """The review's case: ``x.half() - 0.1`` of a float32 model is float16, and the number is added as it is (no
    unsqueezing of a 0-dim constant to ``(1, 1)``, no expanding back)."""

    class HalfMinus(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.half() - 0.1

    x = torch.tensor([[1.0, -0.3, 0.2, 3.3]])
    diagram = ncd.trace(HalfMinus(), x)
    lowered = diagram.to_torch()
    got, want = lowered(x), HalfMinus()(x)
    assert got.dtype == torch.float16 and torch.equal(got, want)
    assert "unsqueeze" not in lowered.ncd_source and "expand" not in lowered.ncd_source
