"""On the ``meta`` device (a large model: parameters × input elements above ``META_ABOVE``, or its calls over the work
budget), a write of a value of the inputs into a real tensor — a constant the forward made (``acc =
torch.zeros_like(h); acc += f(h)``), a buffer (an average kept in place) — gives a meta copy, and the model reads on
from the tensor it wrote: its later reads are the write's result, not its value before (the write was dropped from
the diagram, silently: a 1.2M-parameter CNN on a 64×64 image, summing two branches into a ``zeros_like``, lowered
without them)."""

import warnings

import pytest
import torch

import ncd
from ncd.trace import record


class Accumulated(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros_like(x)
        acc += self.a(x).relu()
        acc.add_(self.b(x)).mul_(2)
        return acc.sum(-1)


class Average(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(4, 4)
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ema.mul_(0.9).add_(self.l(x).mean(0), alpha=0.1)
        return x - self.ema


@pytest.fixture
def on_meta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # straight to meta


def test_a_write_into_a_constant_made_in_the_forward_is_kept_on_meta(on_meta: None) -> None:
    torch.manual_seed(0)
    model, x = Accumulated(), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ncd.trace(model, x)
    for v in (x, torch.randn(3, 4)):
        torch.testing.assert_close(d.to_torch()(v), model(v))


def test_a_buffer_written_from_the_inputs_is_read_written_on_meta(on_meta: None) -> None:
    torch.manual_seed(0)
    model, x = Average(), torch.randn(3, 4)
    before = model.ema.clone()
    with pytest.warns(RuntimeWarning, match="writes into its buffers in place"):
        d = ncd.trace(model, x)
    # the diagram computes the traced call from the buffer's value before it: the model run from that value
    model.ema.copy_(before)
    for v in (x, torch.randn(3, 4)):
        want = model(v)
        model.ema.copy_(before)
        torch.testing.assert_close(d.to_torch()(v), want)


class Rebound(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(4, 4)
        self.register_buffer("m", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.m = self.m * 0.9 + self.l(x).mean(0) * 0.1
        return x - self.m


def test_a_buffer_bound_to_a_value_of_the_inputs_on_meta_is_put_back_not_left_without_values(on_meta: None) -> None:
    # recorded on meta, the new binding had no values: the model's next call raised (a cpu tensor minus a meta one)
    torch.manual_seed(0)
    model, x = Rebound(), torch.randn(3, 4)
    want = Rebound()
    want.load_state_dict(model.state_dict())
    with pytest.warns(RuntimeWarning, match="binds its m to new values.*m recorded on the meta device, without values:"
                                            " put back as before it"):
        d = ncd.trace(model, x)
    assert model.m.device.type == "cpu"
    torch.testing.assert_close(model(x), want(x))
    want.m.zero_()
    torch.testing.assert_close(d.to_torch()(x), want(x))



class ViewedState(torch.nn.Module):
    """Its buffer a view of a tensor made before it (``arange(10).reshape(2, 5)``: a write's root is that tensor, no
    buffer), written in place: by a constant, through a view, from the inputs; ``shared``: a second buffer, not
    written, views the same tensor."""

    def __init__(self, k: int, shared: bool) -> None:
        super().__init__()
        self.k = k
        base = torch.arange(20.0 if shared else 10.0)
        self.register_buffer("state", base[:10].reshape(2, 5))
        self.register_buffer("other", base[10:].reshape(2, 5) if shared else torch.ones(2, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.state + self.other
        if self.k == 0:
            self.state.add_(1)
        elif self.k == 1:
            self.state[:, 1:] += 1.0
        else:
            self.state.mul_(0.5).add_(x)
        return y + self.state


@pytest.mark.parametrize(("k", "shared", "meta"), [(0, False, False), (1, False, False), (2, False, False),
                                                   (0, False, True), (2, False, True), (0, True, False),
                                                   (1, True, False), (2, True, True)])
def test_a_buffer_viewing_another_tensor_written_in_place_is_warned_as_export_warns(
        k: int, shared: bool, meta: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # the default capture looked the written buffer up by the write's root, the arange, another object: no warning
    # (export warned), and the model's next call differed from the lowered module by 1.0, unsaid
    if meta:
        monkeypatch.setattr(record, "META_ABOVE", 0)
        monkeypatch.setattr(record, "WORK_BUDGET", -1)
    torch.manual_seed(0)
    x = torch.randn(2, 5)
    once = ViewedState(k, shared)
    once(x)
    for capture in ("dispatch", "export"):
        model = ViewedState(k, shared)
        with pytest.warns(RuntimeWarning, match=r"writes into its buffers in place \(state( at [^,]*)?\);") as caught:
            d = ncd.trace(model, x, capture=capture)
        lowered = d.to_torch()
        for v in (x, torch.randn(2, 5)):  # the traced call: from the buffer's values before it
            torch.testing.assert_close(lowered(v), ViewedState(k, shared)(v))
        # what the warning says tracing did: ran the model once (the buffer as by one call), or put it back
        said = " ".join(str(w.message) for w in caught if "buffers in place" in str(w.message))
        ran = "updated as by one call" in said
        assert ran or "did not update them" in said
        torch.testing.assert_close(model.state, (once if ran else ViewedState(k, shared)).state)
        torch.testing.assert_close(model.other, once.other)
