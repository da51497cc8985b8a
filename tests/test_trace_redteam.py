"""Red-team findings on models users write (stop 18): each is compared with the original model on a fresh input.

* a boolean mask fixed in the model (a buffer) indexing one axis, ``x[:, :, keep]``, crashed the lowered module (the
  opaque ``index`` ran on the buffer's placeholder, which keeps nothing): it reads the positions the mask keeps;
* ``x[:, mask] = v`` (a mask after full axes, fixed or computed) was opaque: it is ``where(mask, v, x)``;
* ``x @ buffer`` (a fixed projection, ``torch.eye``) was a linear map, so the lowered module had it as a trainable
  parameter (18 parameters became 354): it is the einsum with the constant, and the parameters are the model's.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

import ncd


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.trace.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _equal_on(model: nn.Module, lowered: nn.Module, *inputs: torch.Tensor) -> None:
    with torch.no_grad():
        for got, want in zip(tree_leaves(lowered(*inputs)), tree_leaves(model(*inputs)), strict=True):
            torch.testing.assert_close(got, want)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FixedMask(nn.Module):
    """Keeps every third feature (a boolean buffer) for a linear head, and zeroes them in a copy."""

    def __init__(self) -> None:
        super().__init__()
        keep = torch.zeros(16, dtype=torch.bool)
        keep[::3] = True
        self.register_buffer("keep", keep)
        self.lin = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.clone()
        y[:, :, self.keep] = 0.0
        return self.lin(x[:, :, self.keep]), y


def test_a_fixed_boolean_mask_reads_the_positions_it_keeps() -> None:
    torch.manual_seed(0)
    model = FixedMask().eval()
    d = _trace(model, torch.randn(2, 6, 16))
    assert d.opaque_count == 0, d.opaque
    assert {"gather", "where"} <= {b.prim.op for b in d.boxes()}
    _equal_on(model, d.to_torch(), torch.randn(2, 6, 16))


class LiveMask(nn.Module):
    """Masks computed from the input, written after one and after two full axes."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, z = x.clone(), x * 2
        y[:, x[0, :, 0] > 0] = -1.5  # a mask of positions, after the batch
        z[:, x[0] > 0.5] = 0.25  # a mask of positions and features, after the batch
        return y, z


def test_a_mask_written_after_full_axes_is_a_where() -> None:
    model = LiveMask()
    d = _trace(model, torch.randn(2, 4, 5))
    assert d.opaque_count == 0, d.opaque
    _equal_on(model, d.to_torch(), torch.randn(2, 4, 5))


def test_a_mask_after_full_axes_written_into_integers_stays_opaque_and_equal() -> None:
    class Ints(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("k", torch.tensor([True, False, True, True, False]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = (x * 10).long()
            y[:, self.k] = 7
            return y

    model = Ints()
    d = _trace(model, torch.randn(2, 5))
    _equal_on(model, d.to_torch(), torch.randn(2, 5))


class FixedProjection(nn.Module):
    """A fixed random projection (a buffer), the identity matrix and a tied weight, each multiplied by the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(16, 5))
        self.lin = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, m = x.shape
        y = x.reshape(-1, m) @ self.proj
        z = torch.eye(16) @ x.transpose(1, 2)
        return self.lin(y.view(b, t, 5)), z, x[..., :5] @ self.lin.weight.t()


@pytest.mark.parametrize("batch", [1, 2])
def test_a_product_with_a_buffer_keeps_the_buffer_out_of_the_parameters(batch: int) -> None:
    torch.manual_seed(0)
    model = FixedProjection().eval()
    d = _trace(model, torch.randn(batch, 6, 16))
    assert d.opaque_count == 0, d.opaque
    lowered = d.to_torch()
    assert _params(lowered) == _params(model) == 18
    assert sum(b.numel() for b in lowered.buffers()) >= 16 * 5  # the projection is held, not learned
    _equal_on(model, lowered, torch.randn(batch, 6, 16))


class OverTheBatch(nn.Module):
    """Statistics over the batch (and over the batch and positions): a mean, variances, a standard deviation."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.softmax(0), x.var(0), x.std(0, keepdim=True), x.var((0, 1), unbiased=False), x.mean(0),
                x - x.mean((0, 1), keepdim=True), x.var(-1))


@pytest.mark.parametrize("batch", [3, 5])
def test_statistics_over_the_batch_follow_the_batch_lowered_at_another(batch: int) -> None:
    # var over the batch was 1/2 and 1/(2-1) as numbers: lowered at batch 3, its variance was off by 5.2
    d = _trace(OverTheBatch(), torch.randn(2, 5, 8))
    assert d.opaque_count == 0, d.opaque
    assert {"*1/b", "*1/(b - 1)"} <= {b.prim.label() for b in d.boxes()}
    _equal_on(OverTheBatch(), d.to_torch(b=batch), torch.randn(batch, 5, 8))


class _Wrapping(nn.Module):
    """Integer arithmetic that wraps around a narrow dtype, and a huge multiplier (its range was once computed for
    every operator, ``9 ** 3000000007`` included, so the trace hung)."""

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ((ids * 3000000007).to(torch.int32), ids.to(torch.uint8) - 3, ids.to(torch.int8) * 100,
                ids.to(torch.int32) + 1)


def test_integers_that_wrap_around_a_narrow_dtype_are_never_computed_unwrapped() -> None:
    ids = torch.arange(10).reshape(2, 5)
    d = _trace(_Wrapping(), ids)
    fresh = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        got, want = d.to_torch()(fresh), _Wrapping()(fresh)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g.to(torch.int64), w.to(torch.int64))
    kinds = {op for op, _ in d.opaque}
    assert kinds >= {"aten.mul.Tensor", "aten.sub.Tensor"}  # the wrapping arithmetic is opaque, not a box
    assert d.opaque_count < 5  # the int32 position shift is an exact box


class _Read(nn.Module):
    """Entries read at positions given as inputs, one way of five: ``gather``, ``index_select``, an advanced index on
    one axis and on a diagonal, and a cross-entropy's target."""

    def __init__(self, read: int) -> None:
        super().__init__()
        self.read = read
        self.lin = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.read == 0:
            return x.gather(-1, i)
        if self.read == 1:
            return x.index_select(1, j)
        if self.read == 2:
            return x[:, j]
        if self.read == 3:
            return x[torch.arange(x.shape[0]), j]
        return nn.functional.cross_entropy(self.lin(x[:, :4]), j)


def _read(model: nn.Module, i: list[list[int]], j: list[int]) -> torch.Tensor | str:
    try:
        with torch.no_grad():
            out: torch.Tensor = model(torch.arange(10.0).reshape(2, 5), torch.tensor(i), torch.tensor(j))
            return out
    except (RuntimeError, IndexError):
        return "raises"


@pytest.mark.parametrize("read", [0, 1, 2, 3, 4])
@pytest.mark.parametrize(("i", "j"), [([[7, 1, 2], [0, 1, 4]], [1, 2]), ([[0, 1, 2], [0, 1, 4]], [5, 2]),
                                      ([[-1, 1, 2], [0, 1, 4]], [1, 2]), ([[0, 1, 2], [0, 1, 4]], [-1, 2]),
                                      ([[0, 1, 2], [0, 1, 4]], [-6, 2]), ([[4, 0, 0], [3, 3, 3]], [4, 0])])
def test_a_position_past_the_axis_raises_as_the_model_does_and_a_negative_one_reads_as_the_model_reads(
        read: int, i: list[list[int]], j: list[int]) -> None:
    # the lowered gather was ``take_along_dim``, which checks no bounds: a position past the axis read other memory
    # (gather at 7 of 5 gave a number, cross-entropy at target 5 of 5 a loss) where the model raises; and it counted a
    # negative position from the end where ``gather`` and ``index_select`` raise
    torch.manual_seed(0)
    model = _Read(read).eval()
    d = _trace(model, torch.arange(10.0).reshape(2, 5), torch.tensor([[0, 1, 2], [3, 4, 0]]), torch.tensor([3, 1]))
    assert d.opaque_count == 0, d.opaque
    want, got = _read(model, i, j), _read(d.to_torch(), i, j)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        torch.testing.assert_close(got, want)


class _Decaying(nn.Module):
    """Writes into its parameter in place under its own ``no_grad`` (an EMA, a decay, one entry set): each call
    differs from the last."""

    def __init__(self, how: int) -> None:
        super().__init__()
        self.how = how
        self.w = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.how == 0:
                self.w.mul_(0.5)
            elif self.how == 1:
                self.w.copy_(0.9 * self.w + 0.1 * x.mean(0))
            else:
                self.w[0] = x.sum()
        return x * self.w


@pytest.mark.parametrize("how", [0, 1, 2])
def test_a_parameter_written_in_place_under_no_grad_is_warned_as_a_write(how: int) -> None:
    # only "detaches values from autograd" was said, which does not say that later calls of the model differ from the
    # lowered module (a stateless copy): the model's next call here gives x * 0.25, the lowered module x * 0.5
    model = _Decaying(how)
    with pytest.warns(RuntimeWarning, match=r"writes into its parameters in place \(w at"):
        d = ncd.trace(model, torch.randn(2, 5))
    x = torch.randn(2, 5)
    with torch.no_grad():
        if how < 2:  # what the warning is for (the entry set from the input is written again by the lowered module)
            assert not torch.allclose(d.to_torch()(x), model(x))
        else:
            torch.testing.assert_close(d.to_torch()(x), model(x))


class _Classifier(nn.Module):
    """A loss on labels given as an input, after a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.body(x).mean(1), labels)


def test_a_loss_recorded_on_the_meta_device_is_converted_and_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    # its steps were computed from meta scores and real labels (gather: "Tensor on device cpu is not on the expected
    # device meta"), so the loss was one opaque box (wav2vec2's audio classification head with labels)
    from ncd.trace import record

    monkeypatch.setattr(record, "META_ABOVE", 0)  # recorded on the meta device, as large models are
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # (straight away: not on real values within a budget first)
    torch.manual_seed(0)
    model = _Classifier().eval()
    x, labels = torch.randn(4, 6, 8), torch.tensor([1, -100, 4, 0])
    assert record._on_meta(model, (x, labels), {})
    d = _trace(model, x, labels)
    assert d.opaque_count == 0, d.opaque
    _equal_on(model, d.to_torch(), x, labels)
    _equal_on(model, d.to_torch(), torch.randn(4, 6, 8), torch.tensor([-100, 2, 3, -100]))


class _Rebinding(nn.Module):
    """Binds a buffer to a new tensor in forward (``self.b = self.b * 0.5``), or to an equal one (a cache rebuilt)."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.same = same
        self.register_buffer("scale", torch.ones(5))
        self.fc = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = self.scale.clone() if self.same else self.scale * 0.5
        return self.fc(x) * self.scale


def test_a_buffer_bound_to_new_values_in_forward_is_warned() -> None:
    # no warning was given, yet the model's later calls differ from the lowered module (which computes the traced call)
    model = _Rebinding(same=False).eval()
    x = torch.randn(2, 5)
    with torch.no_grad():
        expected = _Rebinding(same=False).eval()
        expected.load_state_dict(model.state_dict())
        traced_call = expected(x)
    with pytest.warns(RuntimeWarning, match=r"binds its scale to new values"):
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), traced_call)  # the traced call, from the values before it
        assert not torch.allclose(lowered(x), model(x))  # what the warning is for


def test_a_buffer_bound_to_an_equal_tensor_is_not_warned() -> None:
    model = _Rebinding(same=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        d = ncd.trace(model, torch.randn(2, 5))
    x = torch.randn(2, 5)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x))


def test_a_buffer_bound_to_an_equal_tensor_holding_nan_is_not_warned() -> None:
    # equal as the recorder compares values (NaN equal to NaN): torch.equal alone would call it new values
    model = _Rebinding(same=True).eval()
    model.scale[1] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ncd.trace(model, torch.randn(2, 5))


class CountsReadingData(nn.Module):
    """Counts its calls in a buffer and reads its input as ``x.data`` (the recorder refuses: traced by make_fx)."""

    def __init__(self, data: bool) -> None:
        super().__init__()
        self.data_ = data
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.lin(x.data if self.data_ else x) * self.n


@pytest.mark.parametrize(("data", "capture", "ran"), [(True, "dispatch", True), (False, "export", False)])
def test_a_buffer_written_in_place_is_warned_when_export_or_make_fx_traces_it(data: bool, capture: str,
                                                                               ran: bool) -> None:
    torch.manual_seed(0)
    model, x = CountsReadingData(data), torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match=r"writes into its buffers in place \(n\)"):
        traced = ncd.trace(model, x, capture=capture)
    assert model.n.item() == (1 if ran else 0)  # what the warning says tracing did to the model
    lowered = traced.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model.lin(x) * 1)  # the traced (first) call
        model(x)
        assert not torch.allclose(lowered(x), model(x))  # a later call of the model differs, as warned
