"""A diagram lowered at other sizes than it was traced at is never silently wrong (``ncd.trace.other_sizes``).

Sizes a model turns into numbers Python computes with where ncd cannot see them (a float written first, ``len(x)``,
``math`` of a non-integer size, the export capture) used to keep their traced value, so ``d.to_torch(b=3)`` computed
another function than the model at b=3, with no warning.  The lowered module is now checked against the model at the
new sizes: each case here is refused (``TraceError``) or equal to the model on fresh inputs of those sizes.
"""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import torch
from torch import nn

import ncd


def _trace(model: nn.Module, *args: torch.Tensor, **kwargs: object) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs)


class _Scaled(nn.Module):
    """A linear map, then a scale the forward computes from the input's shape by ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        b, t = x.shape[0], x.shape[1]
        if self.how == "float_first":
            return y * (1.0 / x.shape[0])
        if self.how == "half_t":
            return y * (0.5 * t)
        if self.how == "len":
            return y / len(x)
        if self.how == "sqrt_half":
            return y * math.sqrt(t / 2)
        if self.how == "mixed":
            return y * (2.0 ** -b) + y.mean(1, keepdim=True)
        raise AssertionError(self.how)


SILENT = ["float_first", "half_t", "len", "sqrt_half", "mixed"]


@pytest.mark.parametrize("how", SILENT)
def test_a_scale_python_computes_from_a_size_unseen_is_refused_at_other_sizes(how: str) -> None:
    torch.manual_seed(0)
    model = _Scaled(how).eval()
    d = _trace(model, torch.randn(2, 6, 4))
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(d.to_torch()(x), model(x))  # at the traced sizes it is the model
    for sizes in ({"b": 3}, {"t": 4}, {"b": 1, "t": 9}):
        try:
            lowered = d.to_torch(**sizes)
        except ncd.TraceError as error:
            assert "differs from the model" in str(error) and "trace it at the sizes you run it at" in str(error)
            continue
        x = torch.randn(sizes.get("b", 2), sizes.get("t", 6), 4)
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-5, atol=1e-5)  # this size did not matter
    with pytest.raises(ncd.TraceError, match="differs from the model"):  # every case reads the size it changes
        d.to_torch(**({"b": 3} if how in ("float_first", "len", "mixed") else {"t": 4}))


def test_the_export_capture_is_checked_too() -> None:
    torch.manual_seed(0)
    model = _Scaled("float_first").eval()
    d = _trace(model, torch.randn(2, 6, 4), capture="export")
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_torch(b=3)


class _Followed(nn.Module):
    """Shape arithmetic ncd follows, an attention mask, a batch norm in training mode (its running statistics are
    buffers the forward writes), and dropout-free eval: lowered at other sizes it is the model."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t, m = x.shape
        y = self.proj(x) * (t * m) ** -0.5
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        y = y.masked_fill(~mask[..., None], 0.0)
        return {"y": y / b, "pooled": y.sum(1) * (1 / t)}


@pytest.mark.parametrize("training", [False, True])
def test_what_ncd_follows_still_lowers_at_other_sizes_and_the_check_changes_no_state(training: bool) -> None:
    torch.manual_seed(0)
    model = _Followed().train(training)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    d = _trace(model, torch.randn(2, 5, 4), mask=mask)
    stats = [b.clone() for b in model.buffers()]
    for b, t in ((3, 5), (1, 7), (4, 2), (2, 7)):
        if training:  # batch norm in training mode is an opaque box of the traced sizes: refused
            with pytest.raises(ncd.TraceError, match="batch_norm"):
                d.to_torch(b=b, t=t)
            continue
        lowered = d.to_torch(b=b, t=t)
        kept = {k: v.clone() for k, v in lowered.state_dict().items()}
        assert [torch.equal(x, y) for x, y in zip(model.buffers(), stats)] == [True] * len(stats)
        assert all(torch.equal(v, kept[k]) for k, v in lowered.state_dict().items())
        assert lowered.training == training
        x, m = torch.randn(b, t, 4), torch.rand(b, t) > 0.3
        with torch.no_grad():
            want = model(x, mask=m)
            got = lowered(x, m)
        torch.testing.assert_close(tuple(got), (want["y"], want["pooled"]), rtol=1e-4, atol=1e-5)


def test_a_diagram_pickles_without_its_model_and_then_lowers_unchecked() -> None:
    torch.manual_seed(0)
    model = _Scaled("float_first").eval()
    d = _trace(model, torch.randn(2, 6, 4))
    back = pickle.loads(pickle.dumps(d.origin))
    assert back.model is None
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_torch(b=3)


class _Cached(nn.Module):
    """A model whose Python attribute changes each call (a counter) and that reads a size ncd does not follow (a float
    written first: ``len`` is held since fixes, refused before the model is run)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        return self.proj(xs[0]) * (1.0 / xs[1].shape[0]) + xs[1].sum(0)


def test_inputs_in_lists_are_remade_and_the_models_attributes_kept() -> None:
    torch.manual_seed(0)
    model = _Cached().eval()
    d = _trace(model, [torch.randn(2, 3, 4), torch.randn(2, 3, 4)])
    calls = model.calls
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_torch(b=3)
    assert model.calls == calls


class _DiagonalWrite(nn.Module):
    """Writes in place through views the recorder hands to ``torch.export`` (a diagonal zeroed, a column scaled)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x).clone()
        y.diagonal(dim1=1, dim2=2).zero_()
        y[:, -1:].sigmoid_()
        return y


def test_writes_through_views_in_an_exported_graph_are_kept() -> None:
    # torch.export's graph is not functional: converted call by call, the in-place zero_ of the diagonal was an opaque
    # box computing the zeroed view, and y was returned unwritten (fresh-input diff 0.99, only an opaque warning)
    torch.manual_seed(0)
    model = _DiagonalWrite().eval()
    for capture in ("dispatch", "export"):
        d = _trace(model, torch.randn(2, 4, 4), capture=capture)
        x = torch.randn(2, 4, 4)
        torch.testing.assert_close(d.to_torch()(x), model(x))


class _Plain(torch.Tensor):
    pass


class _Own(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func: object, types: object, args: object = (), kwargs: object = None) -> object:
        return super().__torch_function__(func, types, args, kwargs or {})  # type: ignore[misc, arg-type]


def test_a_tensor_subclass_input_is_an_input_or_refused() -> None:
    # a plain subclass's results are new objects the recorder never saw: the input was drawn as a constant and the
    # lowered module returned the traced output whatever its input (fresh-input diff 4.0, no warning)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU()).eval()
    for kind in (_Plain, nn.Parameter):
        example = torch.randn(2, 3, 4)
        d = _trace(model, example.as_subclass(_Plain) if kind is _Plain else nn.Parameter(example))
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(d.to_torch()(x), model(x))
    with pytest.raises(ncd.TraceError, match="_Own, a tensor subclass with its own __torch_function__"):
        ncd.trace(model, torch.randn(2, 3, 4).as_subclass(_Own))


class _FirstRowWrite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x).clone()
        y[:, 0].mul_(2.0)  # one entry of t written: one put box (was recorded as the slices 0:1 and 1:6 of t)
        return y


def test_a_write_of_one_entry_lowers_at_other_lengths_equal_to_the_model() -> None:
    # the write was the slices 0:1 and 1:6 of t joined, held at the traced t=6 (a TraceError at t=5 and t=9); since
    # d3ea475 it is one put box at entry 0, which every length has: the lowered module is the model's at each length
    torch.manual_seed(0)
    model = _FirstRowWrite().eval()
    d = _trace(model, torch.randn(2, 6, 4))
    assert [b.prim.op for b in d.boxes()].count("put") == 1
    for b, t in ((3, 6), (3, 5), (1, 9), (2, 1)):
        x = torch.randn(b, t, 4)
        torch.testing.assert_close(d.to_torch(b=b, t=t)(x), model(x))


class _Counter(nn.Module):
    """Writes its buffers in place each call: a step count and a running mean of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        self.ema.mul_(0.9).add_(0.1 * x.mean((0, 1)))
        return self.proj(x - self.ema) * self.steps.float()


def test_a_model_writing_its_buffers_is_traced_with_a_warning_naming_them() -> None:
    # the lowered module computes the traced call (from the buffers' values before it) and does not update them: the
    # model's second call differed from it (diff 1.5) with no word said
    import copy

    torch.manual_seed(0)
    model = _Counter().eval()
    before = copy.deepcopy(model)
    with pytest.warns(RuntimeWarning, match=r"writes into its buffers in place \(steps at .*, ema at .*\)"):
        d = ncd.trace(model, torch.randn(2, 3, 4))
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(d.to_torch()(x), before(x))  # the first call is the diagram's
    with warnings.catch_warnings(record=True) as caught:  # a batch norm's own step count is not worth a warning
        warnings.simplefilter("always")
        ncd.trace(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(3)).train(), torch.randn(2, 3, 4))
    assert not [w for w in caught if "buffers in place" in str(w.message)]


def test_a_model_changed_after_the_trace_is_not_a_reason_to_refuse() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    d = _trace(model, torch.randn(2, 4))
    with torch.no_grad():
        model[0].weight.add_(1.0)  # trained in place: the diagram holds the same tensor
    x = torch.randn(3, 4)
    torch.testing.assert_close(d.to_torch(b=3)(x), model(x))
    import copy

    traced = copy.deepcopy(model)
    model[0].weight = nn.Parameter(torch.randn(4, 4))  # replaced: not the model traced; the diagram keeps the traced one
    torch.testing.assert_close(d.to_torch(b=3)(x), traced(x))  # was refused: "differs from the model" (by 1.5)


class _FromLength(nn.Module):
    """Slices, shifts and output sizes the forward computes from the length in Python."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, t = self.proj(x), x.shape[1]
        if self.how == "halves":
            return y[:, : t // 2] + y[:, t - t // 2:]
        if self.how == "roll":
            return torch.roll(y, t // 2, 1)
        return torch.nn.functional.interpolate(y.transpose(1, 2), size=t * 2, mode="linear").transpose(1, 2)


@pytest.mark.parametrize("how", ["halves", "roll", "interpolate"])
def test_slices_shifts_and_sizes_from_the_length_are_refused_at_other_lengths(how: str) -> None:
    # before: at t=9 the halves' output had 3 steps (the model 4), interpolate's 12 (the model 18), roll shifted by 3
    # (diff 2.3), with no word said
    torch.manual_seed(0)
    model = _FromLength(how).eval()
    d = _trace(model, torch.randn(2, 6, 4))
    x = torch.randn(3, 6, 4)
    torch.testing.assert_close(d.to_torch(b=3)(x), model(x))
    for t in (4, 9):
        with pytest.raises(ncd.TraceError, match="trace at the sizes you run at|trace it at the sizes you run it at"
                                                 "|computed in Python from the input's shape"):
            d.to_torch(t=t)  # (the halves' bound t // 2: held, naming the line)


class _Upsampled(nn.Module):
    """Nearest and linear upsampling by a scale factor: the output length 2t is a size of its own in the diagram."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(self.proj(x).transpose(1, 2), scale_factor=2, mode=self.mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_a_lowering_that_fails_where_the_model_runs_is_refused(mode: str) -> None:
    # before: d.to_torch(t=5) returned a module failing on every input of length 5 (a RunError: the view to the traced
    # output length 12), where the model runs
    torch.manual_seed(0)
    model = _Upsampled(mode).eval()
    d = _trace(model, torch.randn(2, 6, 4))
    x = torch.randn(3, 6, 4)
    torch.testing.assert_close(d.to_torch(b=3)(x), model(x))
    with pytest.raises(ncd.TraceError, match=r"at t=5 \(traced at t=6\): lowered there it fails where the model runs"):
        d.to_torch(t=5)


def test_outputs_of_small_values_are_compared_at_their_scale() -> None:
    # before, the check's absolute tolerance was at least 1e-4: of outputs about 1e-6, the lowered module at b=3
    # (a third where the model gives a half) passed as the model's
    torch.manual_seed(0)
    model = _Scaled("float_first").eval()
    with torch.no_grad():
        model.proj.weight.mul_(1e-6)
        model.proj.bias.mul_(1e-6)
    d = _trace(model, torch.randn(2, 6, 4))
    x = torch.randn(2, 6, 4)
    want = model(x).detach()
    torch.testing.assert_close(d.to_torch()(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_torch(b=3)



def test_the_batch_stays_a_symbol_where_the_length_cannot_be_one() -> None:
    """The corpus's GPT decoding step over a key/value cache given as an input (benchmarks/corpus_torch_users.py):
    the keys join the cache's 5 positions to the new tokens' (``t + 5`` at other lengths) and meet a causal mask made
    from both lengths (held at the traced sizes), so the length cannot be a symbol everywhere; the batch still is:
    lowered at another batch, equal to the model (before, both were held and b=3 was refused)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "corpus_torch_users.py"
    spec = importlib.util.spec_from_file_location("_corpus_torch_users", path)
    assert spec is not None and spec.loader is not None
    users = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(users)
    torch.manual_seed(0)
    model = users.GPTWithCache().eval()
    cache = [torch.randn(2, 2, 5, 8) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids=torch.randint(0, 40, (2, 3)), cache=cache)
    ids, cache = torch.randint(0, 40, (3, 3)), [torch.randn(3, 2, 5, 8) for _ in range(4)]
    got, (logits, new) = d.to_torch(b=3)(ids=ids, cache=cache), model(ids, cache)
    for g, w in zip(got, [logits, *new], strict=True):  # (the lowered module's outputs are flat)
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
