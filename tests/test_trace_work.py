"""The recorder's work budget: a large model (``META_ABOVE``) is recorded on real values while its calls' estimated
work stays within the budget, and again on the meta device once it would not; the estimate itself against torch's
own FLOP counter."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.render import to_svg
from ncd.trace.work import multiply_adds

record = importlib.import_module("ncd.trace.record")


def _recorded_on(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """(``meta``, finished) of every recording :func:`record.record` started (after the recorder's own check)."""
    from ncd.trace.capture import recorder_works

    recorder_works()
    seen: list[tuple[bool, bool]] = []
    inner = record._record

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            out = inner(*args, **kwargs)
        except Exception:
            seen.append((kwargs["meta"], False))
            raise
        seen.append((kwargs["meta"], True))
        return out

    monkeypatch.setattr(record, "_record", counted)
    return seen


class Deep(nn.Module):
    """A deep stack of small layers with normalised, trained statistics: large (parameters × input entries above
    ``META_ABOVE``) but little arithmetic per call."""

    def __init__(self, width: int = 512, depth: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU())
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def _lowered_and_model(model: nn.Module, example: tuple[torch.Tensor, ...], fresh: tuple[torch.Tensor, ...]
                       ) -> tuple[Any, Any]:
    """The module traced on ``example`` and lowered, and the model, each on ``fresh``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, *example).to_torch().eval()
    with torch.no_grad():
        return lowered(*fresh), model(*fresh)


def _drawn(model: nn.Module, *inputs: torch.Tensor) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs)
    return to_svg(d) + d.to_source()


def test_a_large_model_of_little_work_records_on_real_values_as_on_meta(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = Deep().eval(), torch.randn(4, 6, 512)
    assert record._on_meta(model, (x,), {})
    seen = _recorded_on(monkeypatch)
    real = _drawn(model, x)
    assert seen == [(False, True)], seen  # within the budget: once, on real values
    seen.clear()
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # the meta recording it used to be
    assert _drawn(model, x) == real
    assert seen == [(True, True)], seen


class Heavy(nn.Module):
    """A batch norm in training mode (it updates its running statistics) before a convolution over a large image."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 64, 7, padding=3)
        self.head = nn.Conv2d(64, 256, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(self.norm(x))))
        return out


def test_a_model_over_the_budget_records_on_meta_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the budget, the diagram and the model's buffers afterwards are those of recording on meta straight away:
    what the attempt on real values wrote into the running statistics is undone."""
    torch.manual_seed(0)
    model, x = Heavy().train(), torch.randn(2, 3, 96, 96)
    assert record._on_meta(model, (x,), {})
    twin = Heavy().train()
    twin.load_state_dict(model.state_dict())
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, x)
    assert seen == [(False, False), (True, True)], seen  # real values until the budget, then meta
    seen.clear()
    monkeypatch.setattr(record, "WORK_BUDGET", -1)
    assert _drawn(twin, x) == drawn
    assert seen == [(True, True)], seen
    for (name, buffer), (_, other) in zip(model.named_buffers(), twin.named_buffers()):
        assert torch.equal(buffer, other), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch().train()
    fresh = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(lowered(fresh), Heavy.forward(twin, fresh), atol=1e-4)


def _flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@pytest.mark.parametrize("case", ["linear", "matmul", "bmm", "addmm", "conv1d", "conv2d_strided", "conv2d_groups",
                                  "conv_transpose2d", "sdpa", "einsum"])
def test_multiply_adds_are_torch_flops_halved(case: str) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 7), torch.randn(7, 11)
    image, w = torch.randn(2, 8, 16, 16), torch.randn(12, 8, 3, 3)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 5)
    cases: dict[str, tuple[str, tuple[Any, ...]]] = {
        "linear": ("linear", (a, b.T.contiguous())),
        "matmul": ("matmul", (a, b)),
        "bmm": ("bmm", (a, torch.randn(3, 7, 2))),
        "addmm": ("addmm", (torch.randn(11), a[0], b)),
        "conv1d": ("conv1d", (torch.randn(2, 4, 30), torch.randn(6, 4, 5), None, [1], [2])),
        "conv2d_strided": ("conv2d", (image, w, None, [2, 2], [1, 1])),
        "conv2d_groups": ("conv2d", (image, torch.randn(8, 2, 3, 3), None, [1, 1], [1, 1], [1, 1], 4)),
        "conv_transpose2d": ("conv_transpose2d", (image, torch.randn(8, 4, 2, 2), None, [2, 2])),
        "sdpa": ("scaled_dot_product_attention", (q, k, v)),
        "einsum": ("einsum", ("bik,kj->bij", [a, b])),
    }
    packet, args = cases[case]
    op = getattr(torch.ops.aten, packet)
    op = op.input if packet == "conv_transpose2d" else op.default
    want = _flops(lambda: op(*args))
    assert want > 0
    assert multiply_adds(packet, args, {}) == want // 2, (multiply_adds(packet, args, {}), want // 2)


class Upsampler(nn.Module):
    """A decoder of a few latent frames (as an audio codec's): transposed convolutions of stride 8 make 64 positions of
    each latent one, where most of its arithmetic is done; its parameters × input entries are under ``META_ABOVE``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv1d(16, 256, 3, padding=1)
        self.up1 = nn.ConvTranspose1d(256, 256, 16, stride=8, padding=4)
        self.up2 = nn.ConvTranspose1d(256, 128, 16, stride=8, padding=4)
        self.out = nn.Conv1d(128, 1, 7, padding=3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up1(torch.nn.functional.elu(self.inp(z)))
        out: torch.Tensor = self.out(torch.nn.functional.elu(self.up2(torch.nn.functional.elu(h))))
        return out


def test_a_decoder_upsampling_its_latents_counts_as_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """The positions a transposed convolution makes count in the estimate (its stride: 64 here), so the upsampler is
    recorded within the budget and then on meta, not wholly on real values; its diagram is the one recorded on real
    values and its lowered module computes the model."""
    torch.manual_seed(0)
    model, z = Upsampler().eval(), torch.randn(2, 16, 8)
    entries = sum(p.numel() for p in model.parameters()) * z.numel()
    assert entries < record.META_ABOVE < entries * 64
    assert record._on_meta(model, (z,), {})
    from ncd.trace.walk import _spread

    assert _spread(model) == 64
    assert _spread(nn.Sequential(nn.ConvTranspose2d(3, 3, 2, stride=(2, 3)), nn.ConvTranspose2d(3, 3, 1))) == 6
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, z)
    assert seen == [(False, True)], seen  # real values until the budget, then meta in the same recording
    seen.clear()
    monkeypatch.setattr(record, "META_ABOVE", float("inf"))  # every call on real values
    assert _drawn(model, z) == drawn
    assert seen == [(False, True)], seen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, z).to_torch().eval()
    fresh = torch.randn(2, 16, 8)
    with torch.no_grad():
        assert torch.allclose(lowered(fresh), model(fresh), atol=1e-5)


class Switches(nn.Module):
    """A stack of layers whose first calls fit the budget: the recording goes on meta within the run.  Before the
    switch it records a view (the transpose), a discrete value of an input (the cumulative sum) and a call of several
    results (``chunk``), each read after it."""

    def __init__(self, write: bool = False) -> None:
        super().__init__()
        self.write = write
        self.inp = nn.Linear(16, 32)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU()) for _ in range(4))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x)
        t = h.transpose(1, 2)
        a, b = h.chunk(2, dim=-1)
        pos = ids.cumsum(-1)
        s = h + 1  # (not a view: on meta, the linear's result is one, and a write through it is recorded on values)
        g = h
        for layer in self.layers:
            g = g + layer(g)
        if self.write:  # a write into a value recorded before the switch: recorded again on meta from the start
            return g + s.mul_(2), pos * 2
        out = g + t.transpose(1, 2) * pos.unsqueeze(-1) + torch.cat([b, a], -1) + s
        return out, pos * 2


def _switching(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The calls on real values at which recordings switched to meta (the budget: the third linear's work)."""
    from ncd.trace import recording, switch

    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", 2 * 8 * 16 * 32 + 2 * 8 * 32 * 32 + 1)
    monkeypatch.setattr(recording, "WORK_PER_CALL", 0)
    at: list[int] = []

    def spied(rec: Any) -> bool:
        done = switch.switch(rec)
        if done:
            at.append(rec.calls)
        return done

    monkeypatch.setattr(recording, "switch", spied)
    return at


@pytest.mark.parametrize("write", [False, True])
def test_a_recording_over_the_budget_goes_on_on_meta_as_one_on_meta_from_the_start(
        write: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the budget the recording on real values goes on on meta (once: no second recording), and draws what a
    recording on meta from the start draws, and what one restarted on meta at the budget draws; its lowered module
    computes the model.  A write into a value recorded before the switch stops it there: recorded again on meta."""
    from ncd.trace import switch

    torch.manual_seed(0)
    model, x, ids = Switches(write).eval(), torch.randn(2, 8, 16), torch.randint(0, 5, (2, 8))
    at = _switching(monkeypatch)
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, x, ids)
    assert at and at[0] > 1, at  # within the run, after calls on real values
    assert seen == ([(False, False), (True, True)] if write else [(False, True)]), seen
    seen.clear()
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # on meta from the start
    assert _drawn(model, x, ids) == drawn
    assert seen == [(True, True)], seen
    monkeypatch.setattr(record, "WORK_BUDGET", 2 * 8 * 16 * 32 + 2 * 8 * 32 * 32 + 1)
    monkeypatch.setattr(switch, "ON", False)  # restarted on meta at the budget, as before
    seen.clear()
    assert _drawn(model, x, ids) == drawn
    assert seen == [(False, False), (True, True)], seen
    monkeypatch.setattr(switch, "ON", True)
    got, want = _lowered_and_model(model, (x, ids), (torch.randn(2, 8, 16), torch.randint(0, 5, (2, 8))))
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


class _Stack(nn.Module):
    """A projection, then a stack of linear layers (the models below: each its forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(4))


class ArgmaxFirst(_Stack):
    """A discrete value computed from floating-point values of the inputs before the budget runs out: on meta it is
    not computable (recorded on real values instead), so the recording does not switch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        best = h.argmax(-1, keepdim=True)
        for layer in self.layers:
            h = h + layer(h)
        return h.gather(-1, best)


def test_a_recording_that_meta_could_not_make_does_not_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = ArgmaxFirst().eval(), torch.randn(2, 8, 16)
    at = _switching(monkeypatch)
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, x)
    assert not at
    assert seen == [(False, False), (True, False), (False, True)], seen  # as before: meta fails, real values
    seen.clear()
    monkeypatch.setattr(record, "META_ABOVE", float("inf"))
    assert _drawn(model, x) == drawn


class NamesDevice(_Stack):
    """After the budget runs out, calls that name the inputs' device (``.to(ids.device)``, ``.to(x.device, dtype)``):
    the model holds real tensors, whose device is not meta's."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x)
        for layer in self.layers:
            h = h + layer(h)
        pos = (ids.cumsum(-1) + 1).to(dtype=torch.long, device=ids.device)
        return h.to(x.device, torch.float64) * 2, pos * 2


def test_a_recording_switched_to_meta_goes_on_through_calls_naming_the_inputs_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying to the inputs' device after the switch runs on meta (it failed there, and the model was recorded a
    second time, on meta from the start): one recording, drawn as one on meta from the start, computing the model."""
    torch.manual_seed(0)
    model, x, ids = NamesDevice().eval(), torch.randn(2, 8, 16), torch.randint(0, 5, (2, 8))
    at = _switching(monkeypatch)
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, x, ids)
    assert at and at[0] > 1, at
    assert seen == [(False, True)], seen  # switched, and finished: not recorded again
    seen.clear()
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # on meta from the start
    assert _drawn(model, x, ids) == drawn
    assert seen == [(True, True)], seen
    got, want = _lowered_and_model(model, (x, ids), (torch.randn(2, 8, 16), torch.randint(0, 5, (2, 8))))
    assert got[0].dtype == want[0].dtype == torch.float64
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


class ReadsFirst(_Stack):
    """A large model that reads a value of its inputs into Python (a branch on it) before its budget runs out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if (h > 0).any():
            h = h * 2
        for layer in self.layers:
            h = h + layer(h)
        return h


def test_a_value_read_on_real_values_within_the_budget_is_not_recorded_again_on_meta(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A value read into Python within the budget is read again by the recordings after it (on meta it cannot be,
    on real values it is, at the same call): the branch is recorded with its guard at once, drawn as a model recorded
    on real values only draws it, and its lowered module computes the model."""
    torch.manual_seed(0)
    model, x = ReadsFirst().eval(), torch.randn(2, 8, 16)
    monkeypatch.setattr(record, "META_ABOVE", 0)
    seen = _recorded_on(monkeypatch)
    drawn = _drawn(model, x)
    assert seen == [(False, False), (False, False), (False, True)], seen  # within the budget, exporting, guarded
    monkeypatch.setattr(record, "META_ABOVE", float("inf"))  # never on meta
    seen.clear()
    assert _drawn(model, x) == drawn
    assert seen == [(False, False), (False, False), (False, True)], seen
    got, want = _lowered_and_model(model, (x,), (torch.randn(2, 8, 16),))
    torch.testing.assert_close(got, want)
