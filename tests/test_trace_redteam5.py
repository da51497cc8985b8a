"""Red team, fifth pass: each test fails on the main it was written against and compares with the model itself or
with torch's autograd."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import ncd
from ncd.torch.verify import compare_gradients


def _backward_rows(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, Any, Any]]:
    """``model`` traced on ``x`` (its warnings ignored), and its backward diagram's gradients beside autograd's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    return compare_gradients(d, inputs=(x,))


class _Clamped(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x.clamp(0, 1), x.clamp(max=0.5), x.clamp(min=0).sqrt()


def test_the_backward_of_a_clamp_by_numbers_is_torchs_at_the_bounds_and_below_them() -> None:
    """``x.clamp(lo, hi)`` passes the cotangent where ``lo <= x <= hi`` in torch (``clamp_min``/``clamp_max``: the
    bound itself included), and gives exactly 0 elsewhere even where the cotangent is infinite (``sqrt`` of
    ``x.clamp(min=0)`` at ``x < 0``: a squared distance rounded below 0).  On main the backward diagram multiplied the
    cotangent by ``[x > lo]``: 0 at the bound where torch passes it, and ``inf · 0 = NaN`` below it."""
    model, x = _Clamped().eval(), torch.tensor([[-1.0, -1e-7, 0.0, 0.25, 0.5, 1.0, 2.0]])
    rows = _backward_rows(model, x)
    assert rows
    for what, ours, autograd in rows:
        assert not ours.isnan().any(), (what, ours)
        torch.testing.assert_close(ours, autograd, msg=what)


class _Broadcast(torch.nn.Module):
    """Copies along new and size-1 wires (the importer's ``•`` boxes): a row broadcast over the positions, a grouped
    key/value tiled over the query heads."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.kv = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 2).transpose(1, 2)
        k = self.kv(x).view(b, t, 2, 2).transpose(1, 2).repeat(1, 2, 1, 1)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, k).transpose(1, 2).flatten(2)
        return y * x[:, :1].expand(-1, t, -1)


def test_a_traced_broadcast_copy_differentiates_as_autograd_does() -> None:
    """The backward of the importer's broadcast copy (``ExpandOp``) is the sum over the wires it added.  On main
    ``ncd.backward`` refused it as "second derivatives (the backward of a backward diagram)", so any traced model
    holding an ``expand`` (ViT's class token, DeBERTa-v2, a key/value head tiled by ``repeat``) could not be
    differentiated, with a wrong reason."""
    torch.manual_seed(0)
    model, x = _Broadcast().eval(), torch.randn(2, 5, 8)
    rows = _backward_rows(model, x)
    assert len(rows) == 5  # the input and four parameters
    for what, ours, autograd in rows:
        torch.testing.assert_close(ours, autograd, atol=1e-5, rtol=1e-4, msg=what)


class _HardSwish(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.hardswish(x * 3)


def test_the_backward_of_hardswish_at_its_corners_is_torchs() -> None:
    """torch's hardswish gradient is 0 at ``x = -3`` and 1 at ``x = 3`` (the outer pieces); the backward diagram's
    derivative took the middle piece there (-0.5 and 1.5)."""
    model, x = _HardSwish().eval(), torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]])
    rows = _backward_rows(model, x)
    assert rows
    for what, ours, autograd in rows:
        torch.testing.assert_close(ours, autograd, msg=what)


class _ConvNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)).relu()


def test_the_round_trip_through_json_loads_a_traced_batch_norm() -> None:
    """docs/trace.md's round trip (``load_json``, ``to_torch``, ``load_state_dict(d.state_dict(module))``): the module
    read back was lowered in training mode, where a batch norm reads its batch count too, and on main
    ``d.state_dict(module)`` raised "uses 7 of its 7 tensors, the trace recorded 6" for any model with a batch norm.
    Loaded, in the traced mode, it computes the model's values."""
    torch.manual_seed(0)
    model = _ConvNorm().eval()
    with torch.no_grad():
        model.norm.running_mean.normal_()
        model.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    module = ncd.load_json(d.as_block().to_json()).to_torch()
    module.load_state_dict(d.state_dict(module))
    assert module.training == d.training  # the traced mode, as d.to_torch() (redteam10: was training mode)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x))


class _BroadcastTo(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.kv = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 2).transpose(1, 2)
        k = torch.broadcast_to(self.kv(x).view(b, 1, t, 2), q.shape)  # Falcon's keys, broadcast to the query heads
        return torch.nn.functional.scaled_dot_product_attention(q, k, k).transpose(1, 2).flatten(2)


def test_broadcast_to_is_the_broadcast_copy_expand_is() -> None:
    """``torch.broadcast_to`` is ``expand`` by another name; on main it was an opaque box (Falcon with
    ``new_decoder_architecture=True``: 4 of them)."""
    torch.manual_seed(0)
    model = _BroadcastTo().eval()
    x, fresh = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    d = ncd.trace(model, x)
    assert d.opaque_count == 0
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x))
        torch.testing.assert_close(d.to_torch()(fresh), model(fresh))
    for what, ours, autograd in compare_gradients(d, inputs=(x,)):
        torch.testing.assert_close(ours, autograd, atol=1e-5, rtol=1e-4, msg=what)


class _RootOfRectified(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = torch.nn.functional
        return f.relu(x).sqrt(), f.relu6(x * 8).sqrt(), f.hardtanh(x, 0.0, 1.0).sqrt()


def test_the_backward_of_relu_and_its_kin_selects_the_cotangent() -> None:
    """torch's ReLU, ReLU6 and hardtanh gradients select the cotangent (``threshold_backward``,
    ``hardtanh_backward``: 0 outside, whatever it is); the backward diagram multiplied it by ``f′``, so under
    ``sqrt`` (an infinite cotangent where the ReLU gave 0) ncd.backward gave NaN where autograd gives 0, and the NaN
    spread to every weight before it."""
    model, x = _RootOfRectified().eval(), torch.tensor([[-2.0, -0.5, 0.25, 0.5, 0.9, 2.0]])
    rows = _backward_rows(model, x)
    assert rows
    for what, ours, autograd in rows:
        assert not ours.isnan().any(), (what, ours)
        torch.testing.assert_close(ours, autograd, msg=what)


class _PythonPerEntry(torch.nn.Module):
    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        if self.method == "apply_":
            return y.apply_(lambda v: v * 2 if v > 0 else 0.0)
        return torch.zeros_like(x).map_(y, lambda a, b: a + abs(b))


def test_a_python_function_applied_to_each_entry_is_refused_naming_it() -> None:
    """``Tensor.apply_`` and ``map_`` call a Python function on each entry and write the results without an operator:
    on main the trace dropped the call, with no word, and the lowered module returned the entries as they were
    (2.2 off the model on the traced input)."""
    x = torch.tensor([[-1.0, 0.5, 2.0], [1.5, -0.25, 3.0]])
    for method in ("apply_", "map_"):
        model = _PythonPerEntry(method).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ncd.TraceError, match=rf"Tensor\.{method}\(\)"):
                ncd.trace(model, x)


class _Powers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x**i for i in range(3)], -1)  # a polynomial basis: 1, x, x²


def test_the_backward_of_x_to_the_power_zero_is_zero() -> None:
    """``x ** 0`` has a zero gradient in torch; the backward diagram computed ``0 · x⁻¹``, NaN where ``x`` is 0 (a
    polynomial basis over values with zeros), and the NaN spread to every gradient before it."""
    model, x = _Powers().eval(), torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    rows = _backward_rows(model, x)
    assert rows
    for what, ours, autograd in rows:
        torch.testing.assert_close(ours, autograd, msg=what)
