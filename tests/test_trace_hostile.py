"""Models users bring that the trace got silently wrong (or drew opaque without need), each compared with the model.

* A recording attempt that fails (a truth value of the input read into Python) is followed by another run of the
  model.  Before, the failed runs' appends to a Python list, writes into a dict or set (also nested: a
  ``{"k": [], "v": []}`` cache), and in-place writes into a tensor the module holds as a plain attribute or in a list
  were not undone: the diagram computed the model's **third** call, with no warning.  Each case is compared with a
  copy of the model run once.
* Dropout with ``p = 0`` in training mode returns its input: drawn as a wire, not an opaque box.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd


def _branch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A truth value of the input read into Python: the first recording attempt fails, the model runs again."""
    return y * 2 if bool((x > 0).all()) else y + 1


class Appends(nn.Module):
    """Appends to a Python list every call and scales by its length."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.history: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.history.append(1)
        return _branch(x, self.lin(x) * len(self.history))


class Caches(nn.Module):
    """Fills a dict on its first call and doubles the cached tensor on later ones."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache["w"] = self.cache["w"] * 2 if "w" in self.cache else torch.ones(4)
        return _branch(x, self.lin(x) * self.cache["w"])


class CachesInPlace(nn.Module):
    """Counts in a tensor it puts into a dict on its first call, written in place after."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache.setdefault("n", torch.zeros(())).add_(1)
        return _branch(x, self.lin(x) * self.cache["n"])


class NestedCache(nn.Module):
    """A key/value cache of lists inside a dict, appended to every call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cache: dict[str, list[torch.Tensor]] = {"k": [], "v": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache["k"].append(x)
        return _branch(x, self.lin(x) * len(self.cache["k"]))


class Seen(nn.Module):
    """Adds to a Python set every call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(len(self.seen))
        return _branch(x, self.lin(x) * len(self.seen))


class PlainTensorCounter(nn.Module):
    """Counts in a tensor held as a plain attribute (not a buffer), written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.n = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n.add_(1)
        return _branch(x, self.lin(x) * self.n)


class TensorInList(nn.Module):
    """A state tensor held in a Python list, written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.state = [torch.zeros(4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state[0] += 1
        return _branch(x, self.lin(x) * self.state[0])


@pytest.mark.parametrize("cls", [Appends, Caches, CachesInPlace, NestedCache, Seen, PlainTensorCounter, TensorInList])
def test_failed_attempt_leaves_no_python_state(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls()
    once = copy.deepcopy(model)
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, x)
    want = once(x)  # the model's first call
    got = traced.to_torch()(x)
    assert torch.allclose(got, want), (got, want)


class DropsNothing(nn.Module):
    """A transformer layer with dropout 0 and the dropouts of each kind at p = 0, in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.drops = nn.ModuleList([nn.Dropout(0.0), nn.AlphaDropout(0.0), nn.Dropout1d(0.0),
                                    nn.FeatureAlphaDropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        for drop in self.drops:
            y = drop(y)
        return y + torch.nn.functional.dropout(x, 0, True)


def test_dropout_zero_in_training_is_a_wire() -> None:
    torch.manual_seed(0)
    model = DropsNothing().train()
    x = torch.randn(2, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no opaque box, no other warning
        traced = ncd.trace(model, x)
    assert traced.opaque_count == 0
    lowered = traced.to_torch()
    assert lowered.training
    fresh = torch.randn(2, 5, 8)
    for v in (x, fresh):
        assert torch.allclose(lowered(v), model(v), atol=1e-6)


def test_feature_alpha_dropout_in_eval_is_a_wire() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.FeatureAlphaDropout(0.5)).eval()
    x = torch.randn(3, 4)
    traced = ncd.trace(model, x)
    assert traced.opaque_count == 0
    assert torch.allclose(traced.to_torch()(x), model(x))


def test_dropout_in_training_stays_opaque() -> None:
    """p > 0 in training mode draws random numbers: still an opaque box (the lowered module drops as torch does)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, torch.randn(3, 4))
    assert traced.opaque_count == 1


def test_a_lowered_diagram_takes_its_inputs_by_name() -> None:
    """Before, any keyword call of a DSL-lowered module said "takes 2 tensor(s) ..., but 0 were given"."""
    import inspect

    diagram = ncd.Einsum("y k, x k -> y x")
    lowered = diagram.to_torch(y=2, x=3, k=4)
    a, b = diagram.example_inputs(y=2, x=3, k=4)
    first, second = inspect.signature(lowered.forward).parameters
    want = torch.einsum("yk,xk->yx", a, b)
    assert torch.allclose(lowered(**{first: a, second: b}), want)
    assert torch.allclose(lowered(a, **{second: b}), want)
    with pytest.raises(ncd.InputError, match="takes no input 'bogus'"):
        lowered(a, b, bogus=b)
    with pytest.raises(ncd.InputError, match=f"{first} was not given"):
        lowered(**{second: b})
    with pytest.raises(ncd.InputError, match="given twice"):
        lowered(a, **{first: a})
    with pytest.raises(ncd.InputError, match="should end in axes"):  # still checked when given by name
        lowered(**{first: b, second: b})


def test_an_empty_input_is_a_trace_error_naming_it() -> None:
    """Before, a batch of 0 rows raised ``SizeError: axis b has size 0``, naming neither the model nor the input."""
    with pytest.raises(ncd.TraceError, match=r"cannot trace Linear: input 'input' has shape \(0, 4\)"):
        ncd.trace(nn.Linear(4, 3), torch.randn(0, 4))
    with pytest.raises(ncd.TraceError, match=r"input 'input' has shape \(2, 0, 4\)"):
        ncd.trace(nn.Linear(4, 3), input=torch.randn(2, 0, 4))


class DeepCopies(nn.Module):
    """``copy.deepcopy`` of values of the input (torch copies their memory without an operator)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import copy as copying

        y = self.lin(x)
        held = copying.deepcopy({"a": [y, y], "b": y.t()})
        return held["a"][0] + held["a"][1] * 2 + held["b"].t()


def test_deepcopy_of_a_value_of_the_inputs_is_recorded() -> None:
    """Before, the copy was a constant holding the traced values: the lowered module was wrong on a fresh input."""
    torch.manual_seed(0)
    model = DeepCopies()
    x, fresh = torch.randn(3, 4), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, x)
    lowered = traced.to_torch()
    with torch.no_grad():
        for v in (x, fresh):
            assert torch.allclose(lowered(v), model(v))


class ThroughStorage(nn.Module):
    """A tensor made on the memory of a value of the input, through its storage."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x).detach()
        return torch.empty(0).set_(y.untyped_storage(), 0, y.shape) * 2


def test_a_value_read_through_its_storage_is_refused() -> None:
    """Before, traced as a constant holding the traced values, with no warning (wrong on a fresh input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ncd.TraceError):
            ncd.trace(ThroughStorage(), torch.randn(3, 4))


class PythonMax(nn.Module):
    """``max`` of two entries: a truth value read (a guard), and a copy of a scalar in the diagram."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * max(x[0, 0], x[0, 1])


def test_a_copied_scalar_draws() -> None:
    """Before, to_svg raised IndexError in the copy box's wiring (a scalar has no wires)."""
    from ncd.render import to_svg

    x = torch.tensor([[2.0, 1.0, 0.0], [3.0, 4.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(PythonMax(), x)
    assert torch.allclose(traced.to_torch()(x), PythonMax()(x))
    assert "<svg" in to_svg(traced)


class Averages(nn.Module):
    """Keeps a running average in a parameter (under ``no_grad``) and in a plain tensor attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.ema = nn.Parameter(torch.zeros(4), requires_grad=False)
        self.seen = torch.zeros(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        with torch.no_grad():
            self.ema.mul_(0.5).add_(y.mean(0))
            self.seen.add_(x.sum(0))
        return y * 2


def test_lowering_at_other_sizes_leaves_the_model_as_it_was() -> None:
    """``to_torch(b=3)`` runs the model to check the lowered module; before, the parameter it updates stayed updated."""
    torch.manual_seed(0)
    model = Averages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, torch.randn(5, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = model.seen.clone()
    lowered = traced.to_torch(b=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.seen, seen)
    x = torch.randn(3, 4)
    assert torch.allclose(lowered(x), model(x))


class AveragesThroughAView(nn.Module):
    """Updates a parameter (under ``no_grad``) through a view it makes of it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.w.view(-1).add_(1)
        return x * self.w


def test_lowering_at_other_sizes_puts_back_a_parameter_written_through_a_view_the_run_made() -> None:
    """The check's runs of the model (``to_torch(b=3)``) wrote the parameter through ``w.view(-1)``; the view was made
    by the run, and before, the parameter it writes was not kept: it stayed twice updated (and the lowering was
    accepted, compared with a model whose state the first run had changed)."""
    model = AveragesThroughAView()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, torch.randn(2, 3, 4), axes="b t m")
    before = model.w.detach().clone()
    with warnings.catch_warnings(), pytest.raises(ncd.TraceError, match="differs from the model"):
        warnings.simplefilter("ignore")
        traced.to_torch(b=3)  # (each run of the model updates w: the lowered module is not the model's next call)
    assert torch.equal(model.w.detach(), before)


class FloatFirst(nn.Module):
    """Scales by a float computed first from the batch size (the trace keeps its traced value)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (1.0 / x.shape[0])


def test_a_pickled_trace_lowered_at_other_sizes_says_it_is_unchecked() -> None:
    """Without the model the check cannot run; before, the lowered module (wrong at b=3) came with no word."""
    import pickle

    torch.manual_seed(0)
    model = FloatFirst()
    traced = ncd.trace(model, torch.randn(2, 4))
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        traced.to_torch(b=3)  # with the model at hand: refused
    back = pickle.loads(pickle.dumps(traced))
    with pytest.warns(RuntimeWarning, match="lowered at b=3 unchecked: the traced model is not at hand"):
        lowered = back.to_torch(b=3)
    x = torch.randn(3, 4)
    assert not torch.allclose(lowered(x), model(x))  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back.to_torch()  # at the traced sizes: nothing to say


class _State:
    """An object holding tensors, passed to the model (the check cannot remake it at other sizes)."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a


class TakesState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, state: _State) -> torch.Tensor:
        return self.lin(x) * (1.0 / x.shape[0]) + state.a


def test_a_lowering_the_check_cannot_compare_says_so() -> None:
    """Before, ``to_torch(b=3)`` of a model called with an object of tensors returned a module wrong at b=3, silently."""
    torch.manual_seed(0)
    model = TakesState()
    traced = ncd.trace(model, torch.randn(2, 4), _State(torch.randn(2, 4)))
    with pytest.warns(RuntimeWarning, match="unchecked: the traced call passed an object holding tensors"):
        lowered = traced.to_torch(b=3)
    x, a = torch.randn(3, 4), torch.randn(3, 4)
    assert not torch.allclose(lowered(x, a), model(x, _State(a)))  # what the warning is about


class Centres(nn.Module):
    """Subtracts the mean over the batch (axis 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0)


def test_a_traced_model_s_lowered_module_refuses_a_leading_axis_more() -> None:
    """Before, a (2, 3, 4) input to a model traced on (3, 4) was broadcast as two batches (the model averages over the
    2): a different result, silently.  A diagram made in the DSL still broadcasts over leading axes."""
    model = Centres()
    traced = ncd.trace(model, torch.randn(3, 4))
    lowered = traced.to_torch()
    x = torch.randn(3, 4)
    assert torch.allclose(lowered(x), model(x))
    with pytest.raises(ncd.InputError, match=r"has shape \(2, 3, 4\), 1 axis\(es\) more than the traced model's input"):
        lowered(torch.randn(2, 3, 4))
    dsl = ncd.Einsum("y k, x k -> y x").to_torch(y=2, x=3, k=4)
    a, b = torch.randn(5, 2, 4), torch.randn(5, 3, 4)
    assert torch.allclose(dsl(a, b), torch.einsum("nyk,nxk->nyx", a, b))


class WritesItsInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2


def test_a_model_writing_its_input_says_the_lowered_module_does_not() -> None:
    """Before, no word: the model changes the caller's tensor, the lowered module (equal outputs) does not."""
    x = torch.randn(3, 4)
    given = x.clone()
    with pytest.warns(RuntimeWarning, match=r"writes into its input\(s\) x in place"):
        traced = ncd.trace(WritesItsInput(), x)
    assert torch.equal(x, given)  # the trace ran the model on a copy
    lowered = traced.to_torch()
    assert torch.allclose(lowered(x), WritesItsInput()(x.clone()))
    assert torch.equal(x, given)


class AssignsData(nn.Module):
    """``y.data = v``: the tensor's memory swapped for another's without an operator."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x) if self.how == "clamped" else torch.zeros_like(x)
        y.data = y.data.clamp(min=0) if self.how == "clamped" else x * 2
        self.lin.to(x.dtype)  # a module already there: its parameters assigned to themselves, as before
        return y + x


@pytest.mark.parametrize("capture", ["dispatch", "export"])
@pytest.mark.parametrize("how", ["clamped", "replaced"])
def test_a_model_assigning_a_tensor_s_data_is_refused(how: str, capture: str) -> None:
    # no capture sees the swap: the diagram went on with the old value (clamp dropped, zeros kept), differing from
    # the model on the traced input itself, with no word
    torch.manual_seed(0)
    model, x = AssignsData(how), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ncd.TraceError, match=r"\.data at test_trace_hostile\.py:\d+"):
            ncd.trace(model, x, capture=capture)
    y = torch.zeros(2)
    y.data = torch.ones(2)  # outside a trace, as torch has it
    assert y.tolist() == [1.0, 1.0]


class WritesThroughData(nn.Module):
    """A tensor the model made (of no input's values), read, then written in place through ``.data`` (an alias made
    without an operator), then read again."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        m = torch.ones_like(h) if self.how == "like" else torch.ones(3, 4)
        y = h * m
        if self.how == "indexed":
            m.data[0] = 3.0
        elif self.how == "detached":  # a view of a recorded alias (detach) written: as silently wrong before
            m.detach()[0] = 3.0
        else:
            m.data.mul_(2)
        return y + m


@pytest.mark.parametrize("how", ["like", "made", "indexed", "detached"])
def test_a_write_through_data_into_a_tensor_the_model_made_is_read_after_it_only(how: str) -> None:
    # the write was no recorded call's: the recorded m (held by reference) took its values after the write, so h * m
    # read 2 where the model read 1: wrong on the traced input itself, with no word
    torch.manual_seed(0)
    model, x = WritesThroughData(how), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch()
    for given in (x, torch.randn(3, 4)):
        with torch.no_grad():
            torch.testing.assert_close(lowered(given), model(given))


class HalfGelu(nn.Module):
    """Token ids into half-precision weights, then the tanh GELU written out (``1.0 + ...`` holds a number as a float32
    tensor of no axes beside the float16 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.lin(self.embed(ids))
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608 * (x + 0.044715 * torch.pow(x, 3.0))))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_holding_a_float32_number_lowers_in_half_precision(dtype: torch.dtype) -> None:
    # the float32 number made the traced values' types mixed, so the lowered module kept float32 throughout: its
    # output was float32 (the model's float16) and differed from the model by float16's rounding, with no word
    torch.manual_seed(0)
    model = HalfGelu().to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, torch.randint(0, 10, (2, 5))).to_torch()
    ids = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        got, want = lowered(ids), model(ids)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)


def test_a_lowered_module_run_in_the_other_mode_than_traced_says_so_once() -> None:
    # traced in training mode, the lowered module computes training mode (batch statistics) whatever its flag: set to
    # eval it differed from the model in eval mode, with no word
    import io

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)).train()
    x = torch.randn(5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in the traced mode: no word
        torch.testing.assert_close(lowered(x), model(x))
    lowered.eval()
    model.eval()
    with pytest.warns(RuntimeWarning, match="runs in eval mode, but it was traced in training mode"):
        got = lowered(x)
    assert not torch.allclose(got, model(x))  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        lowered(x)
    buffer = io.BytesIO()
    torch.save(lowered, buffer)  # the hook pickles with the module
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(again(x), got)


class GradScaled(nn.Module):
    """Scales by 2 where gradients are on (a branch on the global grad mode, not on any value)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y * 2 if torch.is_grad_enabled() else y


@pytest.mark.parametrize("grad", [True, False])
def test_a_model_reading_the_grad_mode_is_traced_as_called_and_says_so(grad: bool) -> None:
    # every capture runs under no_grad: the model read False and the diagram dropped the scale, so traced and called
    # as usual (gradients on) the lowered module differed from the model by 2x, with no word
    torch.manual_seed(0)
    model, x = GradScaled(), torch.randn(2, 4)
    with torch.set_grad_enabled(grad):
        with pytest.warns(RuntimeWarning, match=r"reads torch.is_grad_enabled\(\) at test_trace_hostile\.py:\d+"):
            lowered = ncd.trace(model, x).to_torch()
        torch.testing.assert_close(lowered(x), model(x))
    assert torch.is_grad_enabled()  # put back


def test_an_in_place_dropout_of_the_input_in_eval_mode_writes_nothing_and_says_nothing() -> None:
    # aten.dropout_ out of training returns its input untouched; it was taken for a write into the input, and the
    # trace warned that the model changes the caller's tensor (it does not)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Linear(4, 4), nn.Dropout(0.5, inplace=True)).eval()
    x = torch.randn(3, 4)
    given = x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no word: nothing is written
        traced = ncd.trace(model, x)
    assert traced.opaque_count == 0
    with torch.no_grad():
        want = model(x)
    assert torch.equal(x, given)  # the model does not change its input either
    torch.testing.assert_close(traced.to_torch()(x), want)


class ShallowCopies(nn.Module):
    """``copy.copy`` of a tensor: torch's shares its memory (a write through the copy is a write into the original)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        g = copy.copy(h)
        g.mul_(2)  # h too
        part = copy.copy(h[:, 1:])
        out: torch.Tensor = h[:, :3] * part + g[:, :3] + copy.copy(self.lin.weight)[0, :3]
        return out


def test_a_shallow_copy_is_recorded_as_the_tensor_it_shares_memory_with() -> None:
    # before, copy.copy of a recorded tensor was refused with torch's "elem.device.type must be 'meta'" assertion
    torch.manual_seed(0)
    model = ShallowCopies()
    x, fresh = torch.randn(3, 4), torch.randn(3, 4)
    traced = ncd.trace(model, x)  # (the copy is cut from autograd, as torch's is: a detach, drawn as a stop-gradient)
    assert sum(b.prim.op == "detach" for b in traced.boxes()) >= 2
    lowered = traced.to_torch()
    with torch.no_grad():
        for v in (x, fresh):
            torch.testing.assert_close(lowered(v), model(v))


class NeedsGradScaled(nn.Module):
    """Scales by 2 where its activation needs a gradient (a branch on ``.requires_grad`` of a computed value)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        out: torch.Tensor = y * 2 if y.requires_grad else y
        return out


def test_a_model_reading_an_activation_s_requires_grad_says_the_diagram_holds_the_capture_s_answer() -> None:
    # the capture runs under no_grad, so y.requires_grad read False and the diagram dropped the scale: called as usual
    # (gradients on) the model computes 2x the lowered module, and nothing said so
    torch.manual_seed(0)
    model, x = NeedsGradScaled(), torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at test_trace_hostile\.py:\d+"):
        lowered = ncd.trace(model, x).to_torch()
    torch.testing.assert_close(2 * lowered(x), model(x))  # what the warning is about
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        # traced without gradients: the answer is the model's there, but the lowered module called as usual (its
        # parameters need gradients) takes the other branch than the model: warned too (it was not, redteam53)
        with pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at test_trace_hostile\.py:\d+.*"
                                                r" called with gradients on \(as the lowered module's parameters"):
            lowered = ncd.trace(model, x).to_torch()
        torch.testing.assert_close(lowered(x), model(x))
    torch.testing.assert_close(2 * lowered(x), model(x))  # what the warning is about
    assert "requires_grad" not in torch.Tensor.__dict__  # put back


class InputNeedsGradScaled(nn.Module):
    """No parameters; scales by 2 where its input needs a gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x * 2 if x.requires_grad else x
        return out


def test_a_parameterless_model_reading_its_input_s_requires_grad_says_the_diagram_holds_the_capture_s_answer() -> None:
    # traced on an input needing a gradient: the capture's copy of it needs none, so the diagram dropped the scale and
    # the lowered module gave half the model's output on the traced input itself, with no word (only a model with
    # parameters needing gradients was warned about)
    x = torch.randn(2, 4, requires_grad=True)
    model = InputNeedsGradScaled()
    with pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at test_trace_hostile\.py:\d+.*"
                                            r" its parameters or inputs need gradients"):
        lowered = ncd.trace(model, x).to_torch()
    torch.testing.assert_close(2 * lowered(x), model(x))  # what the warning is about
    # an input needing no gradient: the answer is the model's there, but called on one needing a gradient the model
    # scales and the lowered module does not: warned too (it was not, redteam53)
    with pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at test_trace_hostile\.py:\d+.*"
                                            r" or on inputs needing gradients"):
        lowered = ncd.trace(model, x.detach()).to_torch()
    torch.testing.assert_close(lowered(x.detach()), model(x.detach()))
    torch.testing.assert_close(2 * lowered(x), model(x))  # what the warning is about


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_an_input_needing_a_gradient_read_under_no_grad_says_the_diagram_holds_the_capture_s_answer(mode: str) -> None:
    # traced under torch.no_grad (or inference mode) on an input needing a gradient: the model's input (and its views)
    # still answers True there, the capture's copy False; before, the diagram dropped the scale with no word (the
    # warning was given only where ncd.trace was called with gradients on)
    x = torch.randn(2, 4, requires_grad=True)
    model = InputNeedsGradScaled()
    with getattr(torch, mode)():
        with pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at test_trace_hostile\.py:\d+.*"
                                                r" called on inputs needing gradients"):
            lowered = ncd.trace(model, x).to_torch()
        want = model(x)
    torch.testing.assert_close(2 * lowered(x.detach()), want)  # what the warning is about


class ReadsByAddress(nn.Module):
    """Reads an activation's first entry through its memory address (``ctypes``): a read no operator records."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import ctypes

        h: torch.Tensor = self.lin(x).contiguous()
        at = {"tensor": lambda: h.data_ptr(), "storage": lambda: h.untyped_storage().data_ptr(),
              "aligned": lambda: h.data_ptr() - h.data_ptr() % 4}[self.how]()
        if self.how == "aligned":  # an alignment check and comparisons of addresses: no value is read
            assert at % 4 == 0 and at <= h.data_ptr() and at + 4 > h.data_ptr() and h.data_ptr() != x.data_ptr()
            return h * 2
        out: torch.Tensor = h * ctypes.c_float.from_address(at).value
        return out


@pytest.mark.parametrize("how", ["tensor", "storage"])
def test_a_value_read_through_its_address_is_refused_naming_the_line(how: str) -> None:
    # before, the read value was held as the traced one: the lowered module equalled the model on the traced input
    # and differed on any other, with no word
    torch.manual_seed(0)
    with pytest.raises(ncd.TraceError, match=r"Tensor\.data_ptr\(\) at test_trace_hostile\.py:\d+\) is used as a number"):
        ncd.trace(ReadsByAddress(how), torch.randn(3, 4))
    assert "data_ptr" not in torch.Tensor.__dict__ and "data_ptr" not in torch.UntypedStorage.__dict__  # put back


def test_an_alignment_check_of_an_activation_s_address_still_traces() -> None:
    # (transformers' grouped_mm check reads input.data_ptr() % 16 on older torch)
    torch.manual_seed(0)
    model, x, fresh = ReadsByAddress("aligned"), torch.randn(3, 4), torch.randn(3, 4)
    lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        for v in (x, fresh):
            torch.testing.assert_close(lowered(v), model(v))


class MixedHalf(nn.Module):
    """float16 weights with a float32 table, computed in float32 between two casts (as from_pretrained(float16) keeps
    a rotary inv_freq in float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.get_buffer("table")
        h = (torch.nn.functional.gelu(self.a(x)).float() * table).exp().to(x.dtype)
        out: torch.Tensor = self.b(h.softmax(-1) * 3)
        return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_model_of_mixed_float_types_lowers_computing_in_its_types(dtype: torch.dtype) -> None:
    # before, the lowered module held every value in torch's default type, and reading its parameters' order on the
    # traced input failed: RunError "mat1 and mat2 must have the same dtype"
    torch.manual_seed(0)
    model = MixedHalf().to(dtype)
    model.register_buffer("table", torch.rand(8) + 0.5)  # float32
    x, fresh = torch.randn(4, 8, dtype=dtype), torch.randn(4, 8, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        for v in (x, fresh):
            got, want = lowered(v), model(v)
            assert got.dtype == want.dtype == dtype
            assert torch.equal(got, want)


class DrawsInPython(nn.Module):
    """Masks with numbers drawn from numpy's or Python's global generator (SpecAugment-style masks, LayerDrop)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import random

        import numpy as np

        h: torch.Tensor = self.lin(x)
        if self.how == "numpy":
            return h * torch.from_numpy(np.random.rand(*h.shape) > 0.5).to(h.dtype)
        return h * 2 if random.random() < 0.5 else h


@pytest.mark.parametrize("how", ["numpy", "python"])
def test_a_model_drawing_from_python_s_or_numpy_s_generator_says_the_diagram_holds_the_draw(how: str) -> None:
    # no capture records those draws: the diagram holds the traced draw, the model draws anew at every call, and
    # nothing said so (torch's own draws are said)
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    model, x = DrawsInPython(how), torch.randn(8, 4)
    with pytest.warns(RuntimeWarning, match="draws random numbers from (Python's random|numpy.random)"):
        lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        outputs = {tuple(model(x).flatten().tolist()) for _ in range(12)}
        assert len(outputs) > 1  # what the warning is about: the model computes otherwise at other calls
        assert len({tuple(lowered(x).flatten().tolist()) for _ in range(3)}) == 1  # the lowered module: the traced draw
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model drawing nothing: no word
        ncd.trace(nn.Linear(4, 4), x)


class ReadsStrides(nn.Module):
    """Computes with its input's layout (``x.stride(0)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.stride(0) + x.is_contiguous()


def test_a_strided_input_is_run_on_with_its_strides() -> None:
    # the model ran on a contiguous copy of a slice x[::2]: the diagram held the copy's stride (4), the model on the
    # input itself reads 8: the lowered module differed from the model on the traced input itself, with no word
    torch.manual_seed(0)
    model, x = ReadsStrides(), torch.randn(6, 4)[1::2]
    given = x.clone()
    lowered = ncd.trace(model, x).to_torch()
    assert torch.equal(x, given)
    torch.testing.assert_close(lowered(x), model(x))



class ReadsOffset(nn.Module):
    """Computes with where its input starts in its memory (``x.storage_offset()``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.storage_offset() + 1)


def test_an_input_with_a_storage_offset_is_run_on_with_it() -> None:
    # the model ran on a copy of a slice x[1:] starting at offset 0: the diagram held 0 + 1, the model on the input
    # itself reads 4 + 1: the lowered module differed from the model on the traced input itself, with no word
    torch.manual_seed(0)
    model, x = ReadsOffset(), torch.randn(3, 4)[1:]
    given = x.clone()
    lowered = ncd.trace(model, x).to_torch()
    assert torch.equal(x, given)
    torch.testing.assert_close(lowered(x), model(x))
    strided = torch.randn(8, 4)[1::2]  # strides and offset both
    torch.testing.assert_close(ncd.trace(ReadsStrides(), strided).to_torch()(strided), ReadsStrides()(strided))


class ComparesAddresses(nn.Module):
    """Takes a shortcut when its two inputs are one tensor (their addresses compared)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.data_ptr() == b.data_ptr():
            return a * 2
        return a + 3 * b


def test_inputs_sharing_memory_whose_addresses_are_read_are_said() -> None:
    # one tensor passed twice: the model ran on a copy of each, their addresses differed, and the diagram held the
    # other branch (a + 3b where the model computes 2a), wrong on the traced call itself, with no word
    torch.manual_seed(0)
    model, x = ComparesAddresses(), torch.randn(3, 4)
    with pytest.warns(RuntimeWarning, match=r"inputs that share memory \(a and b.*reads the address of a value of its"
                      r" inputs \(Tensor\.data_ptr\(\) at test_trace_hostile\.py:\d+\)"):
        traced = ncd.trace(model, x, x)
    with torch.no_grad():
        assert not torch.allclose(traced.to_torch()(x, x), model(x, x))  # what the warning is about
    y = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two tensors: no word, and equal
        traced = ncd.trace(model, x, y)
    with torch.no_grad():
        torch.testing.assert_close(traced.to_torch()(x, y), model(x, y))


class InferenceScaled(nn.Module):
    """Scales by 2 under ``torch.inference_mode`` (a branch on the global mode, not on any value)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.lin(x)
        return y * 2 if torch.is_inference_mode_enabled() else y


def test_a_model_reading_the_inference_mode_says_the_diagram_holds_the_traced_mode() -> None:
    # traced under inference_mode, the diagram holds the scale; called outside it the model does not scale, and
    # nothing said so
    torch.manual_seed(0)
    model, x = InferenceScaled(), torch.randn(2, 4)
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match=r"reads torch.is_inference_mode_enabled\(\) at test_trace_hostile\.py:\d+"):
            traced = ncd.trace(model, x)
        want = model(x)
    lowered = traced.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), want)  # as traced
        torch.testing.assert_close(lowered(x), 2 * model(x))  # what the warning is about


class CountsCalls(nn.Module):
    """Scales by how many times it was called (a Python attribute it changes while it runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.lin(x) * self.calls
        return out


class HoldsNaN(nn.Module):
    """A number attribute holding NaN (a fill value), never changed."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.fill = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin(x)
        return out


class KeepsWidth(nn.Module):
    """Sets a number attribute from its input's shape at every call (Swin's ``window_size = min(resolution)``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.width = x.shape[-1]
        out: torch.Tensor = self.lin(x) * self.width
        return out


def test_a_model_changing_a_number_attribute_says_its_later_calls_may_differ() -> None:
    # the diagram holds the first call (calls=1) and the model's second call scales by 2: nothing said so (a buffer
    # written in place is said)
    torch.manual_seed(0)
    model, x = CountsCalls(), torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match=r"changes its attributes while it runs \(calls \(0 -> 1\)\)"):
        traced = ncd.trace(model, x)
    lowered = traced.to_torch()
    assert model.calls == 0  # put back
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, by the trace: not again by the check of another size
        traced.to_torch(b=3)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        torch.testing.assert_close(2 * lowered(x), model(x))  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model changing nothing: no word
        ncd.trace(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0)), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN attribute the model never changes (nan != nan): no word
        ncd.trace(HoldsNaN(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set from the input's shape to the number it held (swin, funnel): no word
        ncd.trace(KeepsWidth(4), x)
    with pytest.warns(RuntimeWarning, match=r"width \(3 -> 4\)"):  # set to another number: said
        ncd.trace(KeepsWidth(3), x)


@pytest.mark.parametrize("where", ["module", "parameter"])
def test_a_model_with_backward_hooks_says_the_lowered_module_has_none(where: str) -> None:
    # a hook zeroing a gradient: the lowered module's forward is the model's, its gradients (autograd's through the
    # diagram) are not, and nothing said so
    torch.manual_seed(0)
    last = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(4, 4), last)

    def zeroed(module: nn.Module, given: Any, taken: Any) -> Any:
        return (given[0] * 0,)

    if where == "module":
        last.register_full_backward_hook(zeroed)
    else:
        last.weight.register_hook(lambda grad: grad * 0)  # type: ignore[no-untyped-call]
    x = torch.randn(3, 4)
    with pytest.warns(RuntimeWarning, match=rf"has backward hooks \({where} (1|1.weight)\)"):
        lowered = ncd.trace(model, x).to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    lowered(x).sum().backward()
    model(x).sum().backward()
    got, want = lowered.state_dict(keep_vars=True), dict(model.named_parameters())
    assert [g.grad is not None and bool(g.grad.abs().sum()) for g in got.values() if g.requires_grad] != \
        [w.grad is not None and bool(w.grad.abs().sum()) for w in want.values()]  # what the warning is about


class ReadsThroughDlpack(nn.Module):
    """Reads an activation's entry through numpy's view of its memory (``numpy.from_dlpack``), with no operator."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        h: torch.Tensor = self.lin(x)
        return h * float(np.from_dlpack(h)[0, 0])


def test_a_value_read_through_dlpack_is_refused() -> None:
    # before, the read number was held as the traced one: equal on the traced input, wrong on any other, no word
    torch.manual_seed(0)
    with pytest.raises(ncd.TraceError, match=r"Tensor\.__dlpack__\(\) reads a value that depends on the inputs"):
        ncd.trace(ReadsThroughDlpack(), torch.randn(3, 4))


class LayoutScaled(nn.Module):
    """Scales by 2 where its input is contiguous in memory (``how``: "branch"), or makes it contiguous, the common
    reading that computes the same values ("contiguous"); writes into its input first with ``write``."""

    def __init__(self, how: str, write: bool = False) -> None:
        super().__init__()
        self.how, self.write = how, write
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.write:
            x.add_(1)
        if self.how == "branch":
            return self.lin(x * 2 if x.is_contiguous() else x)
        if not x.is_contiguous():
            x = x.contiguous()
        out: torch.Tensor = self.lin(x.view(-1, 4))
        return out


def test_a_model_branching_on_its_input_s_memory_layout_is_warned_about_and_the_common_reading_is_not() -> None:
    # the diagram computes the branch of the traced (contiguous) input whatever the layout it is given: on a transposed
    # input the lowered module gave twice the model's scaled input, with no word
    torch.manual_seed(0)
    x, strided = torch.randn(3, 4), torch.randn(4, 3).t()
    model = LayoutScaled("branch").eval()
    with pytest.warns(RuntimeWarning, match=r"reads a tensor's memory layout \(\.is_contiguous\(\)\) at"
                                            r" test_trace_hostile\.py:\d+, and computes otherwise"):
        lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        assert not torch.allclose(lowered(strided), model(strided))  # what the warning is about
    for write in (False, True):  # the same values either way: no word; the example input left as it was given
        model, x = LayoutScaled("contiguous", write).eval(), torch.randn(3, 4)
        before = x.clone()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            lowered = ncd.trace(model, x).to_torch()
        assert not [w for w in said if "memory layout" in str(w.message)]
        torch.testing.assert_close(x, before)  # (the runs on copies wrote into none of the inputs)
        with torch.no_grad():
            torch.testing.assert_close(lowered(before.clone()), model(before.clone()))
            torch.testing.assert_close(lowered(strided.clone()), model(strided.clone()))
    assert "is_contiguous" not in torch.Tensor.__dict__  # put back


class LayoutCounted(nn.Module):
    """Makes its input contiguous, and adds a buffer it counts its calls in (written in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous():
            x = x.contiguous()
        self.calls.add_(1)
        return x + self.calls


def test_the_layout_check_runs_leave_the_model_s_buffers_as_one_call_does() -> None:
    # the check's two runs each start from the buffers the capture's run left (else the counter made them differ:
    # a warning about a layout the model does not care about) and put them back
    model = LayoutCounted()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ncd.trace(model, torch.randn(3, 4))
    assert not [w for w in said if "memory layout" in str(w.message)]
    assert model.calls.item() == 1
