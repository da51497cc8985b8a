"""Custom ``torch.autograd.Function``s under ``ncd.trace``: each call is one opaque box named after the Function whose
lowering calls it, so the lowered module's forward and gradients are the original model's (checked by autograd on the
original), and a warning names the Function and the model's line.  Recorded as their forward's operations, a
straight-through ``round`` would have gradient 0 and a gradient reversal the opposite sign."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from tests.benchmarks import benchmark


class RoundST(torch.autograd.Function):
    """Straight-through round: forward rounds, backward passes the gradient on."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class Reverse(torch.autograd.Function):
    """Gradient reversal: forward identity, backward ``-scale * g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


class ClampPass(torch.autograd.Function):
    """Two results: a clamp whose gradient passes everywhere, and the amount clipped (gradient doubled)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.clamp(lo, hi)
        return y, x - y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor, gr: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return gy + 2 * gr, None, None


class Outer(torch.autograd.Function):
    """A Function whose forward applies another one (only the outer is a box)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return RoundST.apply(x) * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return 3 * grad


class Quantised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = RoundST.apply(self.a(x) * 3)
        h = Reverse.apply(h, 0.5)
        y, r = ClampPass.apply(h, -1.0, 1.0)
        out: torch.Tensor = self.b(torch.tanh(y) + r) + Outer.apply(x).sum(-1, keepdim=True)
        return out


class Reentrant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        out: torch.Tensor = checkpoint(lambda t: self.b(torch.nn.functional.gelu(self.a(t))), x, use_reentrant=True)
        return out + x


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    return d, [str(w.message) for w in caught]


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    x = x.detach().clone().requires_grad_()
    y = model(x)
    model.zero_grad()
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()  # (reentrant checkpoint: no .grad())
    assert x.grad is not None
    return y.detach(), x.grad, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_function_calls_are_boxes_whose_gradients_are_the_functions() -> None:
    torch.manual_seed(0)
    model = Quantised()
    d, messages = _trace(model, torch.randn(2, 5, 6))
    warned = [m for m in messages if "custom autograd.Functions" in m]
    assert len(warned) == 1
    for name in ("RoundST", "Reverse", "ClampPass", "Outer"):
        assert name in warned[0]
    assert "test_trace_functions.py:" in warned[0]
    svg = ncd.render.to_svg(d)
    for name in ("RoundST", "Reverse", "ClampPass", "Outer"):
        assert f"{name}\xa0(" in svg  # its label: the Function's name (non-breaking spaces in SVG text)
    assert d.opaque_count == 4  # the Functions, nothing else (the nested RoundST is inside Outer's box)
    lowered = d.to_torch()
    x = torch.randn(2, 5, 6) * 2  # fresh values
    y, gx, gp = _grads(model, x)
    y2, gx2, gp2 = _grads(lowered, x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)
    assert gx.abs().sum() > 0  # the straight-through gradient: recorded as round's operations it would be 0
    # every parameter's gradient is the original's (found by value: the lowered module names them its own way)
    lowered_params = dict(lowered.named_parameters())
    for name, p in model.named_parameters():
        match = [k for k, q in lowered_params.items() if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
        assert len(match) == 1, name
        torch.testing.assert_close(gp2[match[0]], gp[name])


def test_reentrant_checkpoint_is_recorded_as_its_operations() -> None:
    torch.manual_seed(0)
    model = Reentrant()
    d, messages = _trace(model, torch.randn(2, 5, 6))
    assert not any("custom autograd.Functions" in m for m in messages)
    assert d.opaque_count == 0
    x = torch.randn(2, 5, 6)
    y, gx, _ = _grads(model, x)
    y2, gx2, _ = _grads(d.to_torch(), x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)


def test_function_returning_a_non_tensor_is_refused() -> None:
    class Counted(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> Any:
            return x * 2, 3

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor, _: Any) -> torch.Tensor:
            return g

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = Counted.apply(x)[0]
            return out

    with pytest.raises(ncd.TraceError, match="Counted"):
        ncd.trace(M(), torch.randn(2, 3))


def test_apply_is_restored_after_tracing() -> None:
    before = torch.autograd.function.Function.__dict__["apply"]
    _trace(Quantised(), torch.randn(2, 5, 6))
    assert torch.autograd.function.Function.__dict__["apply"] is before
    x = torch.randn(3, requires_grad=True)
    RoundST.apply(x * 3).sum().backward()  # outside a trace: the Function as it was
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full((3,), 3.0))


def test_export_capture_refuses_a_function_naming_it() -> None:
    with pytest.raises(ncd.TraceError, match="RoundST at test_trace_functions.py:"):
        ncd.trace(Quantised(), torch.randn(2, 5, 6), capture="export")


def test_the_diagrams_backward_is_refused_not_the_forwards_gradient() -> None:
    from ncd.ir.rules import AnalysisError

    d, _ = _trace(Quantised(), torch.randn(2, 5, 6))
    with pytest.raises(AnalysisError, match="opaque"):
        ncd.backward(d)


def test_one_function_with_other_constants_keeps_its_name_and_each_its_gradient() -> None:
    class Twice(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = Reverse.apply(x, 0.5) * Reverse.apply(x * x, 2.0)
            return out

    model = Twice()
    d, _ = _trace(model, torch.randn(3, 4))
    svg = ncd.render.to_svg(d)
    assert svg.count("Reverse\xa0(") == 2 and "Reverse_" not in svg
    x = torch.randn(3, 4)
    y, gx, _ = _grads(model, x)
    y2, gx2, _ = _grads(d.to_torch(), x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)


#: ``x * sigmoid(x)`` with its true gradient written by hand: the Function of the corpus' ``torch.autograd_function``
Swish = benchmark("corpus_torch").Swish


class Tanh2(torch.autograd.Function):
    """``tanh(x) * scale``, new style (``setup_context``), its true gradient."""

    @staticmethod
    def forward(x: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.tanh(x) * scale

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.scale * (1 - torch.tanh(x) ** 2), None


class ClampST(torch.autograd.Function):
    """Straight-through clamp: equal to its forward's gradient inside [-3, 3], not beyond."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-3.0, 3.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class LinearNoWeightGrad(torch.autograd.Function):
    """A layer applied inside a Function whose backward gives the input's gradient but none for the layer's weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        ctx.layer = layer
        out: torch.Tensor = layer(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad @ ctx.layer.weight, None


class Proven(nn.Module):
    def __init__(self, which: str) -> None:
        super().__init__()
        self.which = which
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.which == "exact":
            h = Tanh2.apply(Swish.apply(h), 2.0)
        elif self.which == "clamp":
            h = ClampST.apply(h)
        else:
            h = LinearNoWeightGrad.apply(h, self.a)
        out: torch.Tensor = self.b(h)
        return out


class SetsGrad(torch.autograd.Function):
    """A backward that writes a parameter's ``.grad`` itself (as Reformer's reversible layers do)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, holder: nn.Module) -> torch.Tensor:
        ctx.holder = holder
        return x * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.holder.weight.grad = torch.ones_like(ctx.holder.weight)
        return grad * 2, None


def _same_gradients(model: nn.Module, lowered: nn.Module, x: torch.Tensor) -> None:
    y, gx, gp = _grads(model, x)
    y2, gx2, gp2 = _grads(lowered, x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)
    lowered_params = dict(lowered.named_parameters())
    for name, p in model.named_parameters():
        match = [k for k, q in lowered_params.items() if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
        assert len(match) == 1, name
        torch.testing.assert_close(gp2[match[0]], gp[name])


def test_function_whose_backward_is_its_forwards_gradient_is_recorded_as_its_operations() -> None:
    torch.manual_seed(0)
    model = Proven("exact")
    d, messages = _trace(model, torch.randn(2, 5, 6))
    assert not any("custom autograd.Functions" in m for m in messages)
    assert d.opaque_count == 0  # Swish (ctx style) and Tanh2 (setup_context style) drawn as their operations
    assert "Swish" not in ncd.render.to_svg(d)
    _same_gradients(model, d.to_torch(), torch.randn(2, 5, 6) * 3)


def test_function_equal_only_on_the_traced_values_stays_a_box() -> None:
    torch.manual_seed(0)
    model = Proven("clamp")
    x = torch.randn(2, 5, 6)
    assert model.a(x).abs().max() < 3  # the clamp's gradient agrees on the traced values (not on the moved ones)
    d, _ = _trace(model, x)
    assert d.opaque_count == 1
    x = torch.randn(2, 5, 6) * 100  # beyond the clamp: the pass-through gradient is not the clamp's
    _same_gradients(model, d.to_torch(), x)
    _, gx, _ = _grads(model, x)
    assert gx.abs().sum() > 0


def test_function_dropping_a_parameters_gradient_stays_a_box() -> None:
    torch.manual_seed(0)
    model = Proven("weight")
    d, _ = _trace(model, torch.randn(2, 5, 6))
    assert d.opaque_count == 1  # its input gradient agrees with autograd's, its weight's (none) does not
    _same_gradients(model, d.to_torch(), torch.randn(2, 5, 6))


def test_function_proof_is_deterministic_and_leaves_the_random_state() -> None:
    from ncd.trace.functions import proven

    torch.manual_seed(3)
    x = torch.randn(4, 5)
    holder = nn.Linear(5, 5)
    state = torch.get_rng_state()
    assert proven(Swish, (x,), {}, []) and proven(Swish, (x,), {}, [])
    assert not proven(RoundST, (x,), {}, []) and not proven(Reverse, (x, 0.5), {}, [])
    assert not proven(Swish, (x.to("meta"),), {}, [])  # meta values: cannot be told
    assert not proven(Swish, (x.long(),), {}, [])  # nothing differentiable
    assert proven(SetsGrad, (x, holder), {}, list(holder.parameters()))
    assert holder.weight.grad is None  # its backward set it while proving: put back as it was
    assert torch.equal(torch.get_rng_state(), state)



class MaskedSoftmax(torch.autograd.Function):
    """Softmax over unmasked entries, the masked ones zeroed in place (SEW-D's ``XSoftmax``): its backward is its
    forward's gradient, but through its forward autograd's saved softmax result is overwritten, so the plain
    vector-Jacobian product raises: the proof's autograd through the forward keeps a copy of what it saves."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        mask = x < -0.5
        mask[..., 0] = False  # (no row wholly masked)
        out = torch.softmax(x.masked_fill(mask, float("-inf")), -1)
        out.masked_fill_(mask, 0.0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return out * (grad - (grad * out).sum(-1, keepdim=True))


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(MaskedSoftmax.apply(self.a(x)))
        return out


def test_function_writing_into_a_tensor_autograd_saved_is_proven() -> None:
    from ncd.trace.functions_proof import _Context

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="inplace operation"):  # why the retry is needed
        y = x.clone().requires_grad_()
        MaskedSoftmax.forward(_Context((True,)), y).sum().backward()
    model = Masked()
    d, messages = _trace(model, x)
    assert d.opaque_count == 0 and not any("custom autograd.Functions" in m for m in messages)
    _same_gradients(model, d.to_torch(), torch.randn(3, 5, 6))


class GateZeroed(torch.autograd.Function):
    """``x * (x > 0)`` whose gate (a tensor needing no gradient, saved by the product for ``x``'s gradient) is zeroed in
    place afterwards: autograd through the forward must read the gate as it was saved."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        gate = (x > 0).to(x.dtype)
        y = x * gate
        ctx.save_for_backward(x)
        gate.mul_(0)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(GateZeroed.apply(self.a(x)))
        return out


def test_function_writing_into_a_saved_tensor_needing_no_gradient_is_proven() -> None:
    from ncd.trace.functions_proof import _Context

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="inplace operation"):  # autograd's own check
        GateZeroed.forward(_Context((True,)), x.clone().requires_grad_()).sum().backward()
    model = Gated()
    d, messages = _trace(model, x)
    assert d.opaque_count == 0 and not any("custom autograd.Functions" in m for m in messages)
    _same_gradients(model, d.to_torch(), torch.randn(3, 5, 6))


class GateZeroedByData(torch.autograd.Function):
    """``x * gate`` whose gate (ones: a tensor needing no gradient, saved by the product) is zeroed through ``.data``
    afterwards (a write that bumps no version counter), with a backward that is not its forward's gradient (none):
    autograd through the forward must read the gate as it was saved, or the proof takes the zeroed gate's gradient
    (none) for the forward's and draws the Function as its operations."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        gate = torch.ones_like(x)
        y = x * gate
        gate.data.zero_()
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 0


class GatedByData(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(GateZeroedByData.apply(self.a(x)))
        return out


def test_function_writing_into_a_saved_tensor_through_data_is_not_proven() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    model = GatedByData()
    d, _ = _trace(model, x)
    assert d.opaque_count == 1  # its backward (none) is not its forward's gradient: a box calling it
    _same_gradients(model, d.to_torch(), x)
    _same_gradients(model, d.to_torch(), torch.randn(3, 5, 6))


class ScaleThenReset(torch.autograd.Function):
    """``x * w`` that sets ``w`` (a constant the model made) to ones through ``.data`` afterwards: a write that bumps no
    version; its backward is not its forward's gradient wrt ``w`` (none), so it is boxed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = x * w
        w.data.fill_(1.0)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * 2, None


class ResetsItsConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        out: torch.Tensor = ScaleThenReset.apply(h, torch.full_like(h, 2.0))
        return out


def test_a_boxed_function_writing_a_constant_through_data_is_refused() -> None:
    # the box held the constant it was given, which the write had set to ones: the lowered module computed h * 1
    # where the model computes h * 2, on the traced input itself, with no word (the write bumps no version)
    torch.manual_seed(0)
    with pytest.raises(ncd.TraceError, match="writes into its inputs in place"):
        _trace(ResetsItsConstant(), torch.randn(3, 6))


def test_function_proof_does_not_import_dynamo() -> None:
    """A proof that needs no write into saved tensors runs without torch's mutation mode, whose first use imports
    ``torch._dynamo`` (about 0.8 s: most of a small model's first trace)."""
    import os
    import subprocess
    import sys

    code = ("import sys, torch, ncd, warnings\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from test_trace_functions import Masked, Proven\n"
            "warnings.simplefilter('ignore')\n"
            "d = ncd.trace(Proven('exact'), torch.randn(2, 5, 6))\n"
            "assert d.opaque_count == 0\n"
            "d = ncd.trace(Masked(), torch.randn(3, 5, 6))\n"  # (autograd through it keeps copies of what it saves)
            "assert d.opaque_count == 0\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_function_in_a_model_recorded_on_meta_is_proven_on_real_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    record = importlib.import_module("ncd.trace.record")
    monkeypatch.setattr(record, "META_ABOVE", 0)  # every model is recorded on meta first
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # (not on real values within a budget first)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    model = Masked()
    assert record._on_meta(model, (x,), {})
    seen: list[bool] = []
    original = record._record

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["meta"])
        return original(*args, **kwargs)

    monkeypatch.setattr(record, "_record", spy)
    d, _ = _trace(model, x)
    assert seen == [True, False]  # the Function sends the recording back to real values, where it is proven
    assert d.opaque_count == 0
    _same_gradients(model, d.to_torch(), torch.randn(3, 5, 6))


def test_a_function_whose_proof_failed_is_boxed_at_its_later_calls_without_another_proof(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer calls the same Functions: the proof runs once per Function and other arguments (a class whose
    backward is not its forward's gradient on the first call's values is a box at every call), and every call is a
    box whose gradient is the Function's own (autograd on the original model)."""
    import importlib

    functions = importlib.import_module("ncd.trace.functions")
    proofs: list[tuple[str, tuple[Any, ...]]] = []
    real = functions.proven

    def counted(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], params: list[torch.Tensor]) -> bool:
        proofs.append((cls.__name__, tuple(a for a in args if not isinstance(a, torch.Tensor))))
        return bool(real(cls, args, kwargs, params))

    monkeypatch.setattr(functions, "proven", counted)

    class Layers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(6, 6) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i, layer in enumerate(self.layers):
                x = Reverse.apply(RoundST.apply(layer(x) * 3), 2.0 if i == 2 else 0.5) + x
            return x

    torch.manual_seed(0)
    model = Layers()
    d, messages = _trace(model, torch.randn(2, 5, 6))
    assert sorted(proofs) == [("Reverse", (0.5,)), ("Reverse", (2.0,)), ("RoundST", ())]
    assert d.opaque_count == 6 and any("custom autograd.Functions" in m for m in messages)
    x = torch.randn(2, 5, 6) * 2  # fresh values
    y, gx, _ = _grads(model, x)
    y2, gx2, _ = _grads(d.to_torch(), x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)
    assert gx.abs().sum() > 0  # the straight-through, reversed gradient: as round's operations it would be 0


def _local_model() -> nn.Module:
    class LocalRound(RoundST):
        """RoundST under a name pickle cannot find (a class defined inside a function)."""

    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = LocalRound.apply(self.a(x))  # type: ignore[no-untyped-call]
            return out

    return Local()


def test_a_pickled_diagram_lowers_in_another_process_calling_its_functions(tmp_path: Any) -> None:
    """A diagram pickled with Function boxes, read back in a new process: its lowered module's forward and gradients
    are the model's (the Functions' operators are defined again there), and so is its source; one whose Function cannot
    be found there (a class inside a function) is refused with an ncd error naming it, not torch's "no such operator"."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    torch.manual_seed(0)
    model, x = Quantised(), torch.randn(3, 6)
    d, _ = _trace(model, x)
    local, _ = _trace(_local_model(), x)
    (tmp_path / "d.pkl").write_bytes(pickle.dumps(d))
    (tmp_path / "local.pkl").write_bytes(pickle.dumps(local))
    fresh = torch.randn(3, 6)
    want = _grads(model, fresh)
    torch.save({"state": model.state_dict(), "x": fresh, "want": want}, tmp_path / "m.pt")
    script = f"""
import pickle, torch
from ncd.errors import TraceError
from tests.test_trace_functions import _grads
saved = torch.load({str(tmp_path / "m.pt")!r})
d = pickle.loads(open({str(tmp_path / "d.pkl")!r}, "rb").read())
print("source", {d.to_source()!r} == d.to_source())  # before to_torch: bound sizes rebuild its boxes
lowered = d.to_torch()
got = _grads(lowered, saved["x"])
want = saved["want"]
print("forward", torch.allclose(got[0], want[0], atol=1e-6), "input grad", torch.allclose(got[1], want[1], atol=1e-6))
local = pickle.loads(open({str(tmp_path / "local.pkl")!r}, "rb").read())
try:
    local.to_torch()
    print("local lowered")
except TraceError as e:
    print("refused:", e)
"""
    root = Path(__file__).resolve().parent.parent
    src = Path(ncd.__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": f"{src}:{root}"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "forward True input grad True" in run.stdout, run.stdout + run.stderr[-2000:]
    assert "source True" in run.stdout, run.stdout  # as written in the process that traced
    assert "refused:" in run.stdout and "LocalRound" in run.stdout and "cannot be found" in run.stdout, run.stdout


class _SizedReverse(nn.Module):
    """A Function box given numbers read off its input's shape (a size and a size's power)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Reverse.apply(x, x.shape[-1]) + Reverse.apply(x, x.shape[-1] ** -0.5)


def test_a_diagram_holding_sizes_read_off_shapes_is_pickled_and_read_back() -> None:
    """A box's arguments computed from shapes are saved as their numbers: the diagram reads back, draws the same and
    lowers to the model (reformer's reversible layers; before, unpickling raised a TypeError)."""
    import copy
    import pickle

    from ncd.render import to_svg

    model = _SizedReverse()
    x = torch.randn(2, 5, 6)
    d, _ = _trace(model, x)
    assert d.opaque_count == 2
    back = pickle.loads(pickle.dumps(d))
    assert to_svg(back) == to_svg(d)
    torch.testing.assert_close(back.to_torch()(x), model(x))
    _same_gradients(model, back.to_torch(), x)
    assert to_svg(copy.deepcopy(d)) == to_svg(d)



class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + RoundST.apply(self.a(x))  # type: ignore[no-untyped-call]
        return out


class _Layers(nn.Module):
    """Equal layers each calling a Function: the viewer costs one layer apart from the whole (a part bound alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(), _Layer()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _output_md5s(d: Any) -> list[str]:
    """The md5 of every output of ``d``: its page, SVG (two styles), TikZ and source."""
    import hashlib

    from ncd.render import to_svg, to_tikz
    from ncd.viewer import to_html

    texts = [to_html(d), to_svg(d), to_svg(d, labels="ends", depth=1), to_tikz(d), d.to_source()]
    return [hashlib.md5(t.encode()).hexdigest() for t in texts]


def test_a_pickled_diagram_with_function_boxes_draws_the_same_bytes_in_another_process(tmp_path: Any) -> None:
    """Every output of a diagram holding custom Function boxes, read back in a new process, is the tracing process's:
    the viewer's costs bind and run its parts, so its page lost every block's cost rows there (its Functions'
    operators not defined) while SVG, TikZ and source were equal (recurrent_gemma's page differed)."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    from ncd.viewer import to_html

    torch.manual_seed(0)
    d, _ = _trace(_Layers(), torch.randn(3, 6))
    (tmp_path / "d.pkl").write_bytes(pickle.dumps(d))
    script = f"""
import pickle
from tests.test_trace_functions import _output_md5s
print(*_output_md5s(pickle.loads(open({str(tmp_path / "d.pkl")!r}, "rb").read())))
"""
    root = Path(__file__).resolve().parent.parent
    src = Path(ncd.__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": f"{src}:{root}"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert '["forward","' in to_html(d)  # the model's cost rows are drawn here (a Function box does not hide them)
    assert run.stdout.split() == _output_md5s(d)


# -- the proof's tolerance follows the gradients' size: a dropped gradient of 1e-6 is not a rounding residue --------
class TinyNoWeightGrad(torch.autograd.Function):
    """``layer(x) · 1e-7`` whose backward gives the input's gradient and none for the layer's weight (which autograd
    gives, about 1e-6: under a fixed 1e-5 it passed as none)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        ctx.layer = layer
        out: torch.Tensor = layer(x) * 1e-7
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad @ ctx.layer.weight * 1e-7, None


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = TinyNoWeightGrad.apply(x, self.a)
        return out


def test_function_dropping_a_small_gradient_stays_a_box() -> None:
    # before, a missing gradient was accepted when autograd's was at most 1e-5 everywhere: whatever the size of the
    # gradients proven, so this Function was recorded as its operations and the lowered weight got a gradient the
    # model's backward never gives
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(2, 5, 6)
    d, _ = _trace(model, x)
    assert d.opaque_count == 1
    lowered = d.to_torch()
    y, gx, gp = _grads(model, x)
    y2, gx2, gp2 = _grads(lowered, x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(gx2, gx)
    assert gp == {} and gp2 == {}  # no weight gradient from the Function's backward, on either side


def test_close_with_the_largest_magnitudes_found_once() -> None:
    # _proven_at finds each gradient's largest magnitude once and hands a pair's to _close: the decisions are those of
    # torch.allclose at ATOL times the pair's largest finite magnitude, found here independently, for real gradients;
    # a complex pair's tolerance is still found from its double (real) parts, whatever the caller passes
    from ncd.trace.functions_proof import ATOL, RTOL, _close

    gen = torch.Generator().manual_seed(0)
    for scale in (1e-6, 1.0, 1e4):
        a = torch.randn(3, 4, generator=gen) * scale
        for b in (a.clone(), a + 2e-5 * scale * torch.randn(3, 4, generator=gen), a * (1 + 3e-4)):
            b[0, 0] = float("inf") if scale == 1.0 else b[0, 0]
            a2 = a.clone()
            a2[0, 0] = b[0, 0]
            big = max(float(t.abs().nan_to_num(0.0, 0.0, 0.0).max()) for t in (a2, b))
            want = torch.allclose(a2.double(), b.double(), atol=ATOL * big, rtol=RTOL)
            assert _close(a2, b, 0.0, big) == want == _close(a2, b)
    z = torch.complex(torch.full((4,), 1e-3), torch.full((4,), 10.0))
    w = z + 5e-6  # (apart by more than the real parts allow, less than their magnitudes of 10 would)
    with warnings.catch_warnings():  # (torch's own about the real parts)
        warnings.simplefilter("ignore", UserWarning)
        assert _close(z, w, 0.0, 100.0) is _close(z, w) is False  # (the magnitude passed: not the double's)
