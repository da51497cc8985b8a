"""Red team, sixth pass: each test fails on the main it was written against and compares with the model itself."""

from __future__ import annotations

import warnings

import torch

import ncd
from tests.trace_checks import one_opaque_and_flops


def _lowered(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.nn.Module:
    """``model`` traced on ``inputs`` (its warnings ignored) and lowered."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs).to_torch()


class _Bucketed(torch.nn.Module):
    """Positions bucketed by an integer buffer: ``ids // self.width`` (a relative-position bucket, a window index)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("width", torch.tensor(3))
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids // self.width)


class _Repeated(torch.nn.Module):
    """Rows repeated by a constant count each (``repeat_interleave`` by a tensor: an opaque box holding it)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + x.repeat_interleave(torch.tensor([1, 0, 2, 1]), dim=0)


def test_a_lowered_module_whose_constants_decide_a_division_or_a_shape_loads_its_values() -> None:
    """Loading the traced values first runs the lowered module once to learn the order it reads its tensors in; it ran
    on its initial values (zeros), so an integer buffer dividing positions raised ZeroDivisionError and a count of
    repeats made a shape the next box refused: on main ``to_torch()`` raised RunError for both models, which trace
    without a warning but the opaque box's."""
    torch.manual_seed(0)
    bucketed, ids = _Bucketed(), torch.randint(0, 30, (2, 5))
    lowered = _lowered(bucketed, ids)
    for x in (ids, torch.randint(0, 30, (2, 5))):
        torch.testing.assert_close(lowered(x), bucketed(x))
    repeated, rows = _Repeated(), torch.randn(4, 3)
    lowered = _lowered(repeated, rows)
    for x in (rows, torch.randn(4, 3)):
        torch.testing.assert_close(lowered(x), repeated(x))


def _with_statistics(norm: torch.nn.modules.batchnorm._BatchNorm) -> torch.nn.modules.batchnorm._BatchNorm:
    """``norm`` holding running statistics other than its initial zeros and ones."""
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.3, 3.0)
    return norm


def test_a_batch_norm_without_affine_parameters_in_evaluation_is_a_batch_norm_box() -> None:
    """``BatchNorm*d(affine=False)`` in evaluation (and ``F.batch_norm(x, mean, var)``) reads its running statistics
    only; on main the rule asked for a weight and a bias and declined, leaving an opaque box."""
    torch.manual_seed(0)
    for model, x in [
        (torch.nn.Sequential(torch.nn.Conv1d(3, 4, 1), _with_statistics(torch.nn.BatchNorm1d(4, affine=False))),
         torch.randn(2, 3, 5)),
        (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), _with_statistics(torch.nn.BatchNorm2d(4, affine=False, eps=0.1))),
         torch.randn(2, 3, 5, 6)),
        (torch.nn.Sequential(torch.nn.Linear(3, 4), _with_statistics(torch.nn.BatchNorm1d(4, affine=False))),
         torch.randn(6, 3)),
    ]:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no opaque box to warn of
            d = ncd.trace(model, x)
        assert d.opaque_count == 0
        lowered = d.to_torch()
        for z in (x, torch.randn_like(x)):
            torch.testing.assert_close(lowered(z), model(z))
        wider = torch.randn((5,) + tuple(x.shape[1:]))
        torch.testing.assert_close(d.to_torch(b=5)(wider), model(wider))


def test_the_cost_of_an_opaque_batch_norm_in_training_is_measured() -> None:
    """A model traced in training mode (a new module's default) draws its batch norm as an opaque box, whose cost is
    measured by running the call with a gradient for every float input: torch refuses one for the running statistics,
    so on main ``ncd.cost`` raised AnalysisError for any such model."""
    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train(), torch.randn(2, 3, 6, 5)
    d, flops = one_opaque_and_flops(model, x)
    assert ncd.cost(d).forward_flops >= flops > 0


class _Tangent(torch.nn.Module):
    """The derivative of a layer along a direction, by forward-mode autograd (``torch.func.jvp``)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(lambda z: torch.tanh(self.proj(z)), (x,), (x * 2,))  # type: ignore[no-any-return]


class _Dual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.autograd import forward_ad

        with forward_ad.dual_level():
            y = torch.tanh(self.proj(forward_ad.make_dual(x, torch.ones_like(x))))
            return forward_ad.unpack_dual(y).tangent + 0


class _Linearized(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, derivative = torch.func.linearize(lambda z: torch.tanh(self.proj(z)), x)
        return derivative(torch.ones_like(x))  # type: ignore[no-any-return]


def test_forward_mode_derivatives_of_the_inputs_are_refused_not_frozen() -> None:
    """autograd computes forward-mode tangents in its own kernels, which no capture records, and ``jvp`` returns new
    tensors for its outputs: on main ``torch.func.jvp`` traced with no warning into a diagram holding the traced
    outputs as constants (the lowered module was 1.1 off the model on a fresh input, primal and tangent alike), and
    ``forward_ad.dual_level`` traced into a module that could not run.  ``linearize``, which traces its derivative
    with ``make_fx`` into operators the recording sees, still traces, equal to the model."""
    import pytest

    torch.manual_seed(0)
    x = torch.randn(4, 3)
    for model in (_Tangent(), _Dual()):
        with pytest.raises(ncd.TraceError, match="forward-mode derivatives"):
            ncd.trace(model, x)
    linearized = _Linearized()
    lowered = _lowered(linearized, x)
    fresh = torch.randn(4, 3)
    torch.testing.assert_close(lowered(fresh), linearized(fresh))


class _Penalised(torch.nn.Module):
    """A critic's score and its gradient penalty (WGAN-GP): the derivative of the score by the input, taken in the
    forward with ``create_graph=True``, so training reaches the weights through it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            score = self.net(x)
            (slope,) = torch.autograd.grad(score, x, torch.ones_like(score), create_graph=True)
        return score, (slope.norm(dim=-1) - 1) ** 2


def test_a_derivative_taken_in_the_forward_reaches_the_weights_as_the_models_does() -> None:
    """autograd's backward of a ``linear`` reads the weight through the ``w.t()`` it saved, a view no recorded call
    made: on main the diagram held it as a constant of the weight's values, so the lowered module's forward was the
    model's but its gradients reached neither weight through the penalty (2x off), with no warning."""
    torch.manual_seed(0)
    model, x = _Penalised(), torch.randn(4, 3)
    lowered = _lowered(model, x)
    mine, theirs = list(lowered.parameters()), list(model.parameters())
    assert len(mine) == len(theirs)
    pairs = [(p, next(q for q in theirs if q.shape == p.shape and torch.equal(q, p))) for p in mine]

    def loss(module: torch.nn.Module) -> torch.Tensor:
        score, penalty = module(x)
        return score.sum() + (penalty * torch.arange(1.0, 5.0)).sum()

    got = torch.autograd.grad(loss(lowered), [p for p, _ in pairs])
    want = torch.autograd.grad(loss(model), [q for _, q in pairs])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


class _CopiedWeight(torch.nn.Module):
    """A weight read as it is and as a contiguous copy of its transpose (a hand-written tied projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T.contiguous() + torch.tanh(x @ self.weight)


def test_a_copy_of_a_parameter_read_beside_it_is_the_same_parameter_of_the_lowered_module() -> None:
    """``w.T.contiguous()`` (or ``w.T.clone()``) is folded into the learned box that reads it, holding the copy's
    values: its memory is not the parameter's, so the lowered module held it as a second parameter, trained apart from
    ``w`` (32 entries for the model's 16, each gradient a part of the model's), with no warning."""
    torch.manual_seed(0)
    model, x = _CopiedWeight(), torch.randn(2, 3, 4)
    lowered = _lowered(model, x)
    assert sum(p.numel() for p in lowered.parameters()) == 16
    (mine,), (theirs,) = list(lowered.parameters()), list(model.parameters())
    (got,) = torch.autograd.grad(lowered(x).pow(2).sum(), [mine])
    (want,) = torch.autograd.grad(model(x).pow(2).sum(), [theirs])
    torch.testing.assert_close(got, want)


class _ReadThroughData(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.proj.weight.data) + self.proj(x)


def test_a_parameter_read_through_data_is_drawn_as_a_detach() -> None:
    """``w.data`` cuts the read from autograd as ``w.detach()`` does, but no operator makes it: the diagram read the
    parameter there (tied by memory), so the lowered module's gradient of the weight was twice the model's (warned).
    Now it is recorded as ``w.detach()`` is: the parameter through a stop-gradient box, no warning, and the lowered
    module's gradient is the model's."""
    import warnings

    torch.manual_seed(0)
    model, x = _ReadThroughData(), torch.randn(2, 3, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    assert not [w for w in seen if "detaches values from autograd" in str(w.message)]
    assert "detach" in {b.prim.op for b in d.boxes()}
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), model(x))
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    mine = dict(lowered.named_parameters())
    weight = next(p for p in mine.values() if p.shape == (4, 4))
    (got,) = torch.autograd.grad(lowered(x).sum(), [weight])
    (want,) = torch.autograd.grad(model(x).sum(), [model.proj.weight])
    torch.testing.assert_close(got, want)


def test_the_cost_of_an_opaque_call_without_a_derivative_is_measured_forward_only() -> None:
    """``nn.Embedding(max_norm=...)`` renorms the rows it looks up with ``embedding_renorm``, which torch has no
    derivative for: measuring the opaque box with gradients raised, so on main ``ncd.cost`` raised AnalysisError."""
    import copy

    torch.manual_seed(0)
    model, ids = torch.nn.Embedding(11, 5, max_norm=1.0), torch.randint(0, 11, (2, 7))
    before = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids)
    cost = ncd.cost(d)
    assert cost.forward_flops >= 0
    torch.testing.assert_close(d.to_torch()(ids), before(ids))
