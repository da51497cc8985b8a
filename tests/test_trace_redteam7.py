"""Red team, seventh pass: each test fails on the main it was written against and compares with the model itself
(its outputs, torch's autograd)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from tests.trace_checks import one_opaque_and_flops


class _Gated(torch.nn.Module):
    """``b(x) * gate(x)``, the gate computed without gradients in one of the ways a model turns them off."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.gate, self.b, self.how = torch.nn.Linear(5, 5), torch.nn.Linear(5, 5), how

    @torch.no_grad()
    def _decorated(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x).sigmoid()

    @torch.inference_mode()
    def _inferred(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "inference_mode":
            with torch.inference_mode():
                g = self.gate(x).sigmoid()
            g = g.clone()
        elif self.how == "inference_mode decorator":
            g = self._inferred(x).clone()
        elif self.how == "no_grad decorator":
            g = self._decorated(x)
        elif self.how == "set_grad_enabled":
            with torch.set_grad_enabled(False):
                g = self.gate(x).sigmoid()
        else:  # "set_grad_enabled call"
            torch.set_grad_enabled(False)
            g = self.gate(x).sigmoid()
            torch.set_grad_enabled(True)
        return self.b(x) * g


def _warned_as_a_detach(model: torch.nn.Module, **options: str) -> None:
    """``model`` (``b(x) * gate(x)``, the gate cut from autograd) traced: warned as a detach at its line, equal to the
    model, and the lowered module's gradients reach the gate's 2 parameters, the model's never (what the warning says)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5)
    with pytest.warns(RuntimeWarning, match=r"detaches values from autograd \(detach or no_grad at test_trace_redteam7"):
        d = ncd.trace(model, x, **options)
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    grads = torch.autograd.grad(lowered(x).sum(), list(lowered.parameters()), allow_unused=True)
    want = torch.autograd.grad(model(x).sum(), list(model.parameters()), allow_unused=True)
    reached = sum(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert sum(g is not None for g in want) == 2 and reached == 4


def test_gradients_turned_off_by_a_call_are_warned_as_a_detach() -> None:
    """``torch.set_grad_enabled(False)`` as a call (no region a ``with`` closes): the model's gradients do not reach
    ``gate``; the lowered module's do (the diagram draws the gate's values, not the switch), which is said.  (Once it
    computed other gradients than the model's with no word; the contexts and decorators are drawn: below.)"""
    _warned_as_a_detach(_Gated("set_grad_enabled call"))


def _drawn_as_a_detach(model: torch.nn.Module) -> None:
    """``model`` (``b(x) * gate(x)``, the gate cut from autograd) traced: its cut drawn as a stop-gradient box, nothing
    said, equal to the model, and the lowered module's gradients reach the model's 2 parameters only, not the gate's."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ncd.trace(model, x)
    assert any(b.prim.op == "detach" for b in d.boxes())
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    grads = torch.autograd.grad(lowered(x).sum(), list(lowered.parameters()), allow_unused=True)
    want = torch.autograd.grad(model(x).sum(), list(model.parameters()), allow_unused=True)
    reached = sum(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert sum(g is not None for g in want) == 2 and reached == 2  # (4 when not drawn: the gate's too)


@pytest.mark.parametrize("how", ["no_grad decorator", "inference_mode", "inference_mode decorator", "set_grad_enabled"])
def test_gradients_turned_off_by_a_context_or_decorator_are_drawn_as_a_stop_gradient(how: str) -> None:
    """A function decorated ``@torch.no_grad()`` / ``@torch.inference_mode()``, ``with torch.inference_mode():``,
    ``with torch.set_grad_enabled(False):``: the values made there are read through a stop-gradient box (warned, and
    the lowered module's gradients reached the gate, before)."""
    _drawn_as_a_detach(_Gated(how))


class _Cut(torch.nn.Module):
    """``b(x) * gate(x)``, the gate cut from autograd by ``detach()``, ``.data`` or ``no_grad``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.gate, self.b, self.how = torch.nn.Linear(5, 5), torch.nn.Linear(5, 5), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "detach":
            g = self.gate(x).detach()
        elif self.how == ".data":
            g = self.gate(x).data
        else:
            with torch.no_grad():
                g = self.gate(x)
        return self.b(x) * g


@pytest.mark.parametrize(("how", "capture"), [("detach", "export"), ("no_grad", "export"), (".data", "export"),
                                              (".data", "dispatch")])
def test_a_stop_gradient_is_warned_when_torch_export_captures_the_model(how: str, capture: str) -> None:
    """``torch.export``'s graph holds no ``no_grad``: the export path (``capture="export"``, and the fallback a value of
    the inputs read as ``x.data`` takes) drew the gate's values and the lowered module's gradients reached the gate's
    parameters, which the model's never do; on main with no warning (the recording's warning was not given there).
    A ``detach()`` (``.data`` too) is a ``detach`` in its graph, drawn as a stop-gradient box: the model's gradients
    (``.data`` still said: its line is not the graph's)."""
    if how == "no_grad":
        _warned_as_a_detach(_Cut(how), capture=capture)
        return
    torch.manual_seed(0)
    model, x = _Cut(how), torch.randn(2, 3, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x, capture=capture)
    said = [str(w.message) for w in caught if "detaches values from autograd" in str(w.message)]
    assert len(said) == (1 if how == ".data" else 0), said
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    grads = torch.autograd.grad(lowered(x).sum(), list(lowered.parameters()), allow_unused=True)
    want = torch.autograd.grad(model(x).sum(), list(model.parameters()), allow_unused=True)
    reached = sum(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert sum(g is not None for g in want) == 2 and reached == 2  # (4 on main: the gate's too)


class _Stepped(torch.nn.Module):
    """``heaviside`` of a linear map: an opaque box torch has no derivative for."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.heaviside(self.proj(x), torch.tensor(0.5)) * x


def test_the_cost_of_an_opaque_call_whose_backward_torch_has_not_is_measured_forward_only() -> None:
    """torch raises a RuntimeError ("derivative for aten::heaviside is not implemented") when the backward runs, not the
    NotImplementedError ``embedding_renorm`` gives: on main ``ncd.cost`` raised AnalysisError for the model."""
    torch.manual_seed(0)
    model, x = _Stepped(), torch.randn(2, 3, 5)
    d, flops = one_opaque_and_flops(model, x)
    cost = ncd.cost(d)  # the Linear's FLOPs as torch counts them, and the elementwise ones torch does not count
    assert cost.forward_flops == flops + 2 * x.numel()


class _Memory:
    """A cache a model hands its Function: the keys of every call so far."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []


class _Remembering(torch.autograd.Function):
    """Attention of ``x`` over the keys in ``memory`` and its own, which it appends (a backward of its own)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, memory: _Memory) -> torch.Tensor:
        memory.keys.append(x.detach().clone())
        keys = torch.cat(memory.keys, dim=1)
        return torch.softmax(x @ keys.transpose(1, 2), -1) @ keys

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _Cached(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Remembering.apply(self.proj(x), _Memory())


def test_a_custom_function_writing_into_a_cache_it_is_given_is_refused() -> None:
    """A box calling the Function holds the cache object as the trace left it and writes into it again at every call
    (Reformer's ``_ReversibleFunction`` with ``use_cache=True``, its config's default): on main this one's lowered
    module raised a RunError (the cache held a meta tensor), Reformer's was 0.5 off the model on the traced input and
    another value at each call, warned only as a custom Function."""
    torch.manual_seed(0)
    model, x = _Cached(), torch.randn(2, 3, 4)
    with pytest.raises(ncd.TraceError, match=r"_Remembering .*writes into an object it is given \(_Memory"):
        ncd.trace(model, x)
    model(x)  # the model itself runs


class _Frozen(torch.nn.Module):
    """A target network: its ``forward`` decorated ``@torch.no_grad()`` (called by ``nn.Module``, not by the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(5, 5)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).sigmoid()


class _Student(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.target, self.b = _Frozen(), torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(x) * self.target(x)


def test_a_module_s_forward_decorated_no_grad_with_parameters_is_drawn_as_a_detach() -> None:
    """The model's gradients never reach the target's parameters; the lowered module's did (warned since; on main
    before that with no word: the decorator's frames are torch's and nn.Module's), now a stop-gradient box cuts them.
    HF's rotary tables, decorated alike, hold no parameters: no box."""
    torch.manual_seed(0)
    model, x = _Student(), torch.randn(2, 3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    grads = torch.autograd.grad(lowered(x).sum(), list(lowered.parameters()), allow_unused=True)
    want = torch.autograd.grad(model(x).sum(), list(model.parameters()), allow_unused=True)
    assert sum(g is not None for g in want) == 2 and sum(g is not None for g in grads) == 2
