"""``ncd.trace`` never crashes and is never silently wrong: the cases that used to crash, the recorder's self-check,
a failing rule (an opaque box and one warning naming the module and the line), idioms checked on values."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.trace import capture
from tests.test_trace import round_trip


def _trace(model: nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args)


def _fresh_round_trip(model: nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    """Round trip on the traced inputs and on fresh ones of the same shapes (integers: the same values)."""
    d = round_trip(model, *args)
    fresh = [torch.randn_like(a) if a.is_floating_point() else a for a in args]
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(*fresh), model(*fresh), atol=1e-5, rtol=1e-4)
    return d


class Scalars(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 1 - (x + 1) * 2
        return 3.0 / (y.abs() + 1) + 2 ** x.clamp(-2, 2) + x ** 3 + x * True


class IndexArithmetic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids[:, 1:] * 3 // 2 + 1)


def test_python_numbers_of_every_type_on_either_side_are_boxes() -> None:
    d = _fresh_round_trip(Scalars(), torch.randn(2, 5))
    assert d.opaque_count == 0
    labels = {b.prim.label() for b in d.boxes() if b.prim.op == "arithmetic"}
    assert {"1 − ·", "1 / ·", "2 ^ ·", "^ 3", "max(·, -2)", "min(·, 2)"} <= labels


def test_index_arithmetic_and_slices_of_index_tensors_keep_a_range() -> None:
    d = _fresh_round_trip(IndexArithmetic(), torch.randint(0, 9, (2, 6)))
    assert d.opaque_count == 0
    ranges = [b.prim.target.range for b in d.boxes() if b.prim.op == "arithmetic"]
    # the ids feed an embedding of 40 rows, so they range over 0..39; * 3, // 2, + 1 by interval arithmetic
    assert [int(r) for r in ranges] == [118, 59, 60]


class PositionIds(nn.Module):
    """RoBERTa's position ids: ``(cumsum(mask) + past_key_values_length) * mask + padding_idx``, both 0 here."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 4)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids.ne(1).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) + 0) * mask
        return self.embed(positions.long() + 0 - 0) + self.embed(ids * 1), x + 0


def test_integer_plus_zero_and_times_one_draw_no_box_and_float_plus_zero_keeps_its_box() -> None:
    ids = torch.tensor([[2, 3, 1, 1], [4, 1, 5, 6]])
    d = _fresh_round_trip(PositionIds(), ids, torch.randn(2, 3))
    labels = [b.prim.label() for b in d.boxes() if b.prim.op == "arithmetic"]
    assert labels == ["+ 0"]  # the float one: -0.0 + 0 is +0.0, not the identity
    zeros = torch.tensor([[-0.0, 0.0, -0.0], [1.0, -0.0, 2.0]])
    with torch.no_grad():
        got, want = d.to_torch()(ids, zeros)[1], PositionIds()(ids, zeros)[1]
    assert torch.equal(got.signbit(), want.signbit()) and not want.signbit().any()


class MaskedFill(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        low = torch.tensor(torch.finfo(x.dtype).min)  # (DeBERTa's XSoftmax: a number made in the forward)
        return torch.softmax(x.masked_fill(mask, low).masked_fill(~mask, torch.tensor(-1e30)), -1)


def test_the_extremes_of_a_float_type_are_labelled_by_name_and_big_numbers_in_four_digits() -> None:
    mask = torch.tensor([[True, False, False], [False, True, False]])
    d = round_trip(MaskedFill(), torch.randn(2, 3), mask)
    labels = {b.prim.label() for b in d.boxes() if b.prim.op == "constant"}
    assert {"min(float32)", "-1e+30"} <= labels  # not 39 and 31 digits


class ScaledScores(nn.Module):
    """DeBERTa's scale: ``sqrt(tensor(k) * scale_factor)``, a number made in the forward, divided into the scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(torch.tensor(x.size(-1), dtype=torch.float) * 3).to(dtype=x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_a_division_by_a_number_made_in_the_forward_is_one_box_and_divides_as_torch_does(dtype: torch.dtype) -> None:
    x = (torch.randn(2, 3, 8) * 100).to(dtype)
    d = _trace(ScaledScores(), x)
    assert [b.prim.label() for b in d.boxes()] == [{torch.float16: "/ 4.898"}.get(dtype, "/ 4.899")]
    fresh = (torch.randn(2, 3, 8) * 100).to(dtype)
    with torch.no_grad():  # bit for bit: the number divides as the 0-d tensor did
        assert torch.equal(d.to_torch()(fresh), ScaledScores()(fresh))


class NumbersInArguments(nn.Module):
    """Numbers a call takes (a mask's fill, a where's branch, a sum's term): T5's ``where(mask, x, finfo.min)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        low = torch.finfo(x.dtype).min
        return torch.where(x > 0, x, low), torch.where(x > 0.5, 0.5, x) + 1.5, x.masked_fill(x < 0, 0)


def test_a_number_among_a_calls_arguments_is_its_number_box_not_a_buffer() -> None:
    d = _fresh_round_trip(NumbersInArguments(), torch.randn(2, 5))
    labels = [b.prim.label() for b in d.boxes() if b.prim.op == "constant"]
    assert sorted(labels) == ["0", "0.5", "1.5", "min(float32)"]  # not "const const" each
    assert not list(d.to_torch().buffers())  # the numbers are written in the source, not loaded


class BigBound(nn.Module):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.maximum(ids, torch.tensor(2**60 + 1))


def test_an_integer_made_in_the_forward_that_no_float_holds_is_kept_whole() -> None:
    ids = torch.tensor([[1, 2**61]])
    d = _trace(BigBound(), ids)
    with torch.no_grad():  # a number box holds a float: 2**60 + 1 lowered as 2**60 (silently, before)
        assert torch.equal(d.to_torch()(ids), BigBound()(ids))


class EmptyAndShapeOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(x)  # a constant whatever x holds (recorded on the meta device without values before)
        return torch.cat([x[:, 0:0], x * ones.cumsum(-1)], 1)


def test_empty_slices_and_shape_only_constants() -> None:
    _fresh_round_trip(EmptyAndShapeOnly(), torch.randn(3, 4))


torch.library.define("ncd_test::twice", "(Tensor x) -> Tensor")


@torch.library.impl("ncd_test::twice", "cpu")
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@torch.library.register_fake("ncd_test::twice")
def _twice_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.ncd_test.twice(torch.nn.functional.gelu(x, approximate="tanh")) + 1


def test_a_custom_operator_is_an_opaque_box_that_calls_it() -> None:
    with pytest.warns(UserWarning, match=r"ncd_test\.twice\.default ×1"):
        d = ncd.trace(Custom(), torch.randn(2, 3))
    x = torch.randn(2, 3)
    torch.testing.assert_close(d.to_torch()(x), Custom()(x))
    assert d.opaque == (("ncd_test.twice.default", 1),)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), -1)  # the line the warning names


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_a_failing_rule_is_an_opaque_box_and_one_warning_naming_module_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ncd.trace.convert import RULES
    from ncd.trace.idioms import load_rules

    load_rules()

    def broken(conv: object, node: object) -> None:
        raise KeyError("a bug in a rule")

    monkeypatch.setitem(RULES, "aten.softmax", broken)
    monkeypatch.setitem(RULES, "aten._softmax", broken)
    net = Net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(net, torch.randn(2, 4))
    failures = [str(w.message) for w in caught if "failed" in str(w.message)]
    assert len(failures) == 1
    assert "at inner (test_trace_robust.py:" in failures[0] and "KeyError" in failures[0] and "opaque box" in failures[0]
    assert d.opaque_count == 1
    x = torch.randn(2, 4)
    torch.testing.assert_close(d.to_torch()(x), net(x))


def test_the_default_capture_records_on_the_pinned_torch() -> None:
    """The fast recorder's self-check passes on the pinned torch, and the default path uses it (no export fallback)."""
    capture._RECORDER.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        assert capture.recorder_works()
        d = ncd.trace(nn.Sequential(nn.Linear(3, 4), nn.GELU()), torch.randn(2, 3))
    assert d.method == "dispatch"


def test_a_broken_recorder_warns_once_naming_torch_and_the_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    record = importlib.import_module("ncd.trace.record")

    def broken() -> type:
        raise AttributeError("ProxyTorchDispatchMode moved")

    monkeypatch.setattr(record, "_recorder_base", broken)
    capture._RECORDER.clear()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = torch.randn(2, 3)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = ncd.trace(model, x), ncd.trace(model, x)
    finally:
        capture._RECORDER.clear()
    messages = [str(w.message) for w in caught if "recorder" in str(w.message)]
    assert len(messages) == 1 and torch.__version__ in messages[0] and "torch.export" in messages[0]
    assert "slower" in messages[0] and "ProxyTorchDispatchMode moved" in messages[0]
    assert first.method == second.method == "export"
    torch.testing.assert_close(first.to_torch()(x), model(x))


class Spectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.filter = nn.Parameter(torch.randn(3, 4, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(x, dim=1) * self.filter, n=x.shape[1], dim=1)


def test_complex_parameters_load_into_the_lowered_module_never_cast_to_real() -> None:
    model, x = Spectral(), torch.randn(2, 4, 4)
    d = ncd.trace(model, x)
    lowered = d.to_torch()
    assert [p.dtype for p in lowered.parameters()] == [torch.complex64]
    torch.testing.assert_close(lowered(x), model(x), atol=1e-5, rtol=1e-4)
