"""The check of writes through views: the recorded writes' result is compared with the tensor the model wrote before
anything reads it (a run of copies into one tensor is compared once, at its end).  A recorded value made wrong on
purpose is refused (the trace falls back to ``torch.export``) wherever anything could observe it."""
from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.trace import writes


class Copies(torch.nn.Module):
    """Copies into regions of one tensor in a row (longformer's diagonal scores); ``read``: what reads it between the
    first copy and the others (nothing, the tensor, or a view of it made before the copy)."""

    def __init__(self, read: str) -> None:
        super().__init__()
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, 4, 6)
        s = x.new_zeros(x.shape)
        v = s[:, 0]
        s[:, :2] = x[:, :2]
        r = None
        if self.read == "tensor":
            r = s.sum()
        elif self.read == "view":
            r = v.sum()
        s[:, 2:, :3] = x[:, 2:, 3:]
        s[:, 0] = x[:, 3]
        s[:, 3, 3:] = 1.0
        return s if r is None else s + r


def _equal_on(d: ncd.TracedDiagram, model: torch.nn.Module, x: torch.Tensor) -> None:
    """The lowered module equals the model on the traced input ``x`` and on a fresh input of its shape."""
    module = d.to_torch()
    for fresh in (x, torch.randn(x.shape)):
        with torch.no_grad():
            torch.testing.assert_close(module(fresh), model(fresh))


def _trace(model: torch.nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch,
           wrong: tuple[int, tuple[int, ...]] | None) -> ncd.TracedDiagram:
    """``wrong``: the write (1-based) whose recorded result gets one entry made wrong, and that entry."""
    made = []
    original = writes.write_back

    def write_back(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(*args, **kwargs)
        made.append(out)
        if wrong is not None and len(made) == wrong[0]:
            out[wrong[1]] += 1.0  # the recorded value only: the recorded operations stay right
        return out

    monkeypatch.setattr(writes, "write_back", write_back)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, x)
    assert len(made) >= 1
    return d


@pytest.mark.parametrize(("read", "wrong", "method"), [
    ("none", None, "dispatch"),
    ("tensor", None, "dispatch"),
    ("view", None, "dispatch"),
    # an entry the third copy overwrites, with nothing reading it before: no one observes it
    ("none", (1, (0, 0, 0)), "dispatch"),
    # an entry no later write overwrites: seen by the model's result
    ("none", (1, (0, 1, 0)), "export"),
    # an entry later overwritten, but read before that (the tensor, or a view of it made before the write)
    ("tensor", (1, (0, 0, 0)), "export"),
    ("view", (1, (0, 0, 0)), "export"),
    # the last write: returned as it is (compared at the end of the run)
    ("none", (4, (0, 3, 4)), "export"),
    ("none", (3, (1, 0, 5)), "export"),
])
def test_every_value_anyone_reads_after_writes_through_views_is_checked(
        read: str, wrong: tuple[int, tuple[int, ...]] | None, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = Copies(read)
    x = torch.randn(2, 4, 6)
    d = _trace(model, x, monkeypatch, wrong)
    assert d.method == method
    _equal_on(d, model, x)


class _Tripled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):  # type: ignore[no-untyped-def]
        return t * 3 + t.flip(1)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        return g  # (straight through: not the forward's gradient, so the Function is drawn as a box calling it)


class _ThenRead(torch.nn.Module):
    """Writes through views of a tensor computed from the input, then (``then``) a custom Function reads it or a value
    no input reaches is read into Python: the pending comparison runs there, and must not itself be recorded."""

    def __init__(self, then: str) -> None:
        super().__init__()
        self.then = then

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = torch.tensor([2.0, 3.0])
        y = x.clone()
        y[:, 0].copy_(x[:, 1])
        y[:, 1].fill_(0.5)
        if self.then == "function":
            return _Tripled.apply(y)  # type: ignore[no-untyped-call, no-any-return]
        scale = table.tolist()
        return y * float(scale[1])


@pytest.mark.parametrize("then", ["function", "python"])
def test_a_check_before_a_function_or_a_python_read_is_not_recorded(then: str) -> None:
    model = _ThenRead(then)
    x = torch.randn(2, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.method == "dispatch"  # (was: the comparison's torch.equal recorded as reading the input into Python)
    _equal_on(d, model, x)


class _Doubles(torch.autograd.Function):
    """Writes into its input (and its backward is not the forward's gradient: drawn as a box calling it)."""

    @staticmethod
    def forward(ctx, t):  # type: ignore[no-untyped-def]
        t.mul_(2)
        return t.sum(-1, keepdim=True)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        return g


class _WrittenByFunction(torch.nn.Module):
    def __init__(self, view: bool) -> None:
        super().__init__()
        self.view = view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        s = _Doubles.apply(y[:, 1:] if self.view else y)  # type: ignore[no-untyped-call]
        return y + s.mean()  # type: ignore[no-any-return]


@pytest.mark.parametrize("view", [False, True])
def test_a_function_writing_into_its_inputs_is_refused(view: bool) -> None:
    """A box calling the Function would not show the write: the model's later read of ``y`` was drawn as the clone
    (the lowered module differed from the model on every input, with no word)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ncd.TraceError, match="writes into its inputs"):
            ncd.trace(_WrittenByFunction(view), torch.randn(2, 5, 3))


@pytest.mark.parametrize(("wrong", "method"), [(None, "dispatch"), ((1, (4095, 1, 0)), "export"),
                                               ((4, (2048, 3, 5)), "export")])
def test_writes_into_a_large_tensor_are_checked_entry_by_entry(wrong: tuple[int, tuple[int, ...]] | None, method: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Above :data:`ncd.trace.tensors.WORDS_ABOVE` bytes the written tensors are compared bit for bit first: one entry
    made wrong in 98,304 (the last rows, the last write) is still found."""
    from ncd.trace.tensors import WORDS_ABOVE

    torch.manual_seed(0)
    model = Copies("none")
    x = torch.randn(4096, 4, 6)
    assert x.numel() * x.element_size() >= WORDS_ABOVE
    d = _trace(model, x, monkeypatch, wrong)
    assert d.method == method
    _equal_on(d, model, x)


def _reference_same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes, dtypes and values, NaN equal to NaN: entry by entry, on resolved copies."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.resolve_conj().resolve_neg().clone(), b.resolve_conj().resolve_neg().clone()
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool((a == b).all())


def test_same_answers_as_comparing_every_entry() -> None:
    """``ncd.trace.tensors._same`` (bits first where the tensors are large) against an entry-by-entry comparison: NaNs,
    signed zeros, one entry apart, views, lazy conjugation and negation, sizes not a whole number of words."""
    from ncd.trace.tensors import _same

    torch.manual_seed(0)
    x = torch.randn(64, 1025)
    nan = x.clone()
    nan[3, 7] = float("nan")
    zero = x.clone()
    zero[5, 5] = 0.0
    negative_zero = zero.clone()
    negative_zero[5, 5] = -0.0
    apart = x.clone()
    apart[-1, -1] += 1e-6
    z = torch.randn(64, 1024, dtype=torch.complex64)
    odd = torch.randn(97, 171)
    pairs = [(x, x.clone()), (x, apart), (nan, nan.clone()), (nan, x), (zero, negative_zero),
             (x[1:], x.clone()[1:]), (x[:, 1:], x.clone()[:, 1:]), (x.t(), x.t().contiguous()), (x[1:], apart[1:]),
             (z, z.clone()), (z.conj(), z), (z.conj(), z.conj().resolve_conj()), (z.conj(), z.clone().conj()),
             (z.imag, z.clone().imag), (torch._neg_view(x), -x), (torch._neg_view(x), x),
             (odd, odd.clone()), (odd, odd + 0.5), (x.to(torch.int32), x.to(torch.int32)),
             (x > 0, x.clone() > 0), (x > 0, apart > 0.5), (x.double(), x.double()), (x, x.double())]
    for a, b in pairs:
        assert _same(a, b) == _reference_same(a, b), (a.shape, a.dtype, a.stride(), b.stride())
